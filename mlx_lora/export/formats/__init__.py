"""The export formats, one module each, found by looking: every module of this
package that sets ``FORMAT`` (an :class:`~mlx_lora.export.formats.base.ExportFormat`)
is a format, in the order of its ``order``. Adding a format is adding a module here;
the exporter, the model card, the CLI's ``--format``/``--quantize`` and the app's
Export page all read :data:`FORMATS`.

    from mlx_lora.export.formats import FORMATS, format_for

    list(FORMATS)            # ['mlx', 'hf', 'gguf', 'peft', 'adapter']
    format_for("gguf").quantize_label(8)   # 'q8_0 (8-bit)'
"""

from __future__ import annotations

import importlib
import pkgutil
from types import MappingProxyType
from typing import Mapping

from mlx_lora.errors import UserError
from mlx_lora.export.formats.base import ExportContext, ExportFormat


def _discover() -> Mapping[str, ExportFormat]:
    found: list[ExportFormat] = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        fmt = getattr(module, "FORMAT", None)
        if fmt is None:
            continue  # a helper module (base), not a format
        if not isinstance(fmt, ExportFormat):
            raise TypeError(f"{module.__name__}.FORMAT is {type(fmt).__name__}, not an ExportFormat")
        found.append(fmt)
    names = [fmt.name for fmt in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two export formats share a name: {sorted(names)}")
    return MappingProxyType({fmt.name: fmt for fmt in sorted(found, key=lambda f: (f.order, f.name))})


FORMATS: Mapping[str, ExportFormat] = _discover()
DEFAULT_FORMAT = "mlx"  # export_run's and the CLI's; the app offers FORMATS in order


def format_for(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UserError(f"unknown export format {name!r}: choose one of {', '.join(FORMATS)}") from None


def quantizable() -> list[str]:
    """The formats that take a --quantize."""
    return [name for name, fmt in FORMATS.items() if any(fmt.quantize)]


__all__ = ["DEFAULT_FORMAT", "FORMATS", "ExportContext", "ExportFormat", "format_for", "quantizable"]
