"""The command-line view of the training config: one flag per setting, generated from
the dataclasses of :mod:`mlx_lora.config` (the flag is the setting's name with dashes:
``learning_rate`` ↔ ``--learning-rate``), and :func:`config_from_args`, which turns
the flags into a :class:`~mlx_lora.config.TrainConfig` (and :func:`config_flags` back): defaults, then ``--config
FILE``, then the flags; with ``--resume RUN_DIR`` the run's own config is the base
(:meth:`mlx_lora.run_folder.RunFolder.resume_config`).

It lives here, beside ``mlx-lora train``, rather than in mlx_lora.config because a
resume reads the run folder, which sits above the config (run_folder imports config).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

from mlx_lora.config import FIELD_SECTION, SECTIONS, TrainConfig, field_info, flatten_settings, read_yaml
from mlx_lora.config_fields import field_type, format_number
from mlx_lora.run_folder import RunFolder


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, generated from the dataclasses; unset flags are absent from the
    parsed namespace, so they never override the YAML."""
    parser.add_argument("--config", metavar="FILE", help="a YAML file of settings (flags override it)")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings")
        for field in dataclasses.fields(cls):
            info = field_info(field.name)
            kind = field_type(field)
            # argparse %-formats help: a "%" in the text ("85% of …") broke `train --help`
            help_text = (info["help"] + f" (default: {_show(info['default'])})").replace("%", "%%")
            kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
            if kind is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif kind is tuple:
                kwargs.update(nargs="+", metavar="NAME")
            else:
                kwargs["type"] = kind
                if info["choices"]:
                    kwargs["choices"] = info["choices"]
                else:
                    kwargs["metavar"] = "RUN_DIR" if field.name == "resume" else field.name.upper()
            group.add_argument(info["flag"], **kwargs)


def config_flags(config: TrainConfig, changed_only: bool = False) -> list[str]:
    """``config`` as ``mlx-lora train`` flags, which :func:`add_config_arguments` reads back into the
    same config: every setting (a rank of a multi-machine run rebuilds the config from argv alone), or
    with ``changed_only`` those that differ from the defaults (the app's "Copy command": the CLI fills
    in the rest with the same defaults). A bool is ``--name`` / ``--no-name``, a list its items after
    the flag, a float its shortest exact text (:func:`format_number`)."""
    defaults = TrainConfig().flat() if changed_only else {}
    flags = []
    for name, value in config.flat().items():
        if changed_only and value == defaults[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        else:
            text = format_number(value) if isinstance(value, float) else str(value)
            # argparse would take "-x" for a flag (but not a negative number): join it with "="
            flags += [f"{flag}={text}"] if text.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(text) \
                else [flag, text]
    return flags


_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")  # argparse's own test for "a value, not a flag"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(value)
    return repr(value) if value == "" else str(value)


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (only those the user typed)."""
    settings = {k: v for k, v in vars(args).items() if k in FIELD_SECTION}
    if "targets" in settings:  # --targets q_proj,v_proj and --targets q_proj v_proj both work
        settings["targets"] = tuple(p.strip() for item in settings["targets"] for p in item.split(",") if p.strip())
    return settings


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the YAML (``--config``), then the flags. With ``--resume RUN_DIR`` the run's
    own config.yaml is the base, and only :data:`~mlx_lora.config.RESUMABLE_CHANGES` may differ from it."""
    flags = flag_settings(args)
    yaml_settings = flatten_settings(read_yaml(args.config), source=args.config) if getattr(args, "config", None) else {}
    resume = flags.get("resume") or yaml_settings.get("resume")
    if resume:
        return RunFolder(resume).resume_config({**yaml_settings, **flags})
    # absolute local paths: the run's config.yaml must work from any folder (eval --run, --resume)
    return TrainConfig().replace(**{**yaml_settings, **flags}).with_absolute_paths()
