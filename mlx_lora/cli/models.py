"""``mlx-lora models …``: search and download from the Hub, list and remove cached
models, import a GGUF file, and print the demo model's path."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="find, download, import and list models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    d = msub.add_parser("demo", help="print the path of the embedded demo model (importing it on first use)")
    d.set_defaults(func=_demo)

    g = msub.add_parser("import-gguf", help="convert a GGUF file into an MLX model folder")
    g.add_argument("file", help="the .gguf file")
    g.add_argument("--out", help="output folder (default: the app's models folder)")
    g.add_argument("--dequantize", choices=["float16", "bfloat16", "float32"],
                   help="write full-precision weights instead of keeping the GGUF's quantisation")
    g.set_defaults(func=_import_gguf)

    from mlx_lora.cli import hub_commands

    hub_commands.register(msub)


def _demo(args) -> int:
    from mlx_lora.models.demo import demo_model_path

    print(demo_model_path())
    return 0


def _import_gguf(args) -> int:
    from pathlib import Path

    import sys

    from mlx_lora.errors import UserError
    from mlx_lora.models.gguf import import_gguf, import_plan
    from mlx_lora.models.local import imported_gguf_path

    src = Path(args.file)
    out = Path(args.out) if args.out else imported_gguf_path(src)
    if args.dequantize and not args.out:
        out = out.with_name(out.name + f"-{args.dequantize}")
    if not src.is_file():
        raise UserError(f"{src}: no such GGUF file")
    # said before anything is loaded: a K-quant file is dequantised, at 2-4 bytes a weight
    print(import_plan(src, args.dequantize).summary, file=sys.stderr, flush=True)
    import_gguf(src, out, dequantize=args.dequantize)
    print(out)
    return 0

