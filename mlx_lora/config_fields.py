"""How one setting is declared and checked: :func:`setting` makes a dataclass field
whose metadata (help, choices, bounds, form hints) the YAML reader, the CLI and
the app's form all read; :class:`Section` coerces and checks every field of a
section against it; :func:`format_number` is how a float setting is written for
people (the CLI flags, the app's form). The sections themselves live in
:mod:`mlx_lora.config`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError


def setting(default: Any, help: str, *, choices: tuple | None = None, presets: tuple | None = None,
            min: float | None = None, max: float | None = None, min_exclusive: bool = False,
            label: str | None = None, advanced: bool = False, hidden: bool = False,
            choice_labels: dict | None = None) -> Any:
    """A dataclass field with the metadata the CLI, the YAML reader and the app's form use.

    Metadata keys (absent when not set): ``help``; ``choices`` (the only values
    allowed); ``presets`` (named values a list setting suggests, besides free
    names); ``min``/``max`` (inclusive unless ``min_exclusive``); ``label`` (the form's name for
    it, lower case); ``choice_labels`` (how the form shows some choices, e.g. 0 as "off");
    ``advanced`` (the form folds it away); ``hidden`` (not in the form).
    """
    metadata = {"help": help, "choices": choices, "presets": presets, "min": min, "max": max,
                "min_exclusive": min_exclusive or None, "label": label, "advanced": advanced or None,
                "hidden": hidden or None, "choice_labels": choice_labels}
    metadata = {k: v for k, v in metadata.items() if v is not None}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return dataclasses.field(default_factory=lambda: value, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_type(field: dataclasses.Field) -> type:
    """The scalar type of a field: str, int, float, bool or tuple (of str)."""
    annotation = field.type if isinstance(field.type, str) else field.type.__name__
    return {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": tuple}[annotation]


def format_number(value: float) -> str:
    """16.0 -> "16", 0.0001 -> "0.0001", 2e-05 -> "2e-05": the shortest text that reads back
    as the same number (a spin box's fixed decimals would show "16.000000")."""
    text = f"{value:.6g}"
    return text if float(text) == value else repr(float(value))


class Section:
    """Validation shared by every section: types, choices and bounds from the metadata."""

    section_name = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _coerce(self, field, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
            _check_bounds(self, field, value)
        self.check()

    def check(self) -> None:
        """Checks that involve more than one field of the section."""

    def fail(self, name: str, message: str) -> None:
        raise UserError(f"{name} ({self.section_name}.{name}, --{name.replace('_', '-')}): {message}")


def _coerce(section: Section, field: dataclasses.Field, value: Any) -> Any:
    kind = field_type(field)
    name = field.name
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        section.fail(name, f"must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            section.fail(name, f"must be a whole number, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        if not isinstance(value, int):
            section.fail(name, f"must be a whole number, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool):
            section.fail(name, f"must be a number, got {value!r}")
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value.strip())
            except ValueError:
                section.fail(name, f"must be a number, got {value!r}")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            section.fail(name, f"must be a finite number, got {value!r}")
        return float(value)
    if kind is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
            section.fail(name, f"must be a list of names, got {value!r}")
        return tuple(value)
    if value is None:
        value = ""
    if not isinstance(value, str):
        if isinstance(value, Path):
            return str(value)
        section.fail(name, f"must be text, got {value!r}")
    return value


def _check_bounds(section: Section, field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    choices = meta.get("choices")
    if choices and value not in choices:
        section.fail(field.name, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
    low, high = meta.get("min"), meta.get("max")
    if low is not None:
        if meta.get("min_exclusive") and not value > low:
            section.fail(field.name, f"must be greater than {low}, got {value}")
        if not meta.get("min_exclusive") and value < low:
            section.fail(field.name, f"must be at least {low}, got {value}")
    if high is not None and value > high:
        section.fail(field.name, f"must be at most {high}, got {value}")
