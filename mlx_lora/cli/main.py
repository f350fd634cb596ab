"""``mlx-lora``: the entry point. Each command group lives in its own module
with a ``register(subparsers)`` function; a :class:`UserError` becomes one
``error: …`` line and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import mlx_lora
from mlx_lora.errors import UserError

# command-group modules, each with register(subparsers)
GROUPS = ("doctor", "models", "data", "train", "chat", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-lora",
        description="Fine-tune open LLMs with LoRA on your own computer (MLX).",
    )
    parser.add_argument("--version", action="version", version=f"mlx-lora {mlx_lora.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        try:
            module = importlib.import_module(f"mlx_lora.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mlx_lora.cli.{name}":
                continue  # a command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
