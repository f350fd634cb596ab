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

from typing import Mapping

from mlx_lora.errors import UserError
from mlx_lora.export.formats.base import ExportContext, ExportFormat
from mlx_lora.registry import discover

FORMATS: Mapping[str, ExportFormat] = discover(__name__, __path__, "FORMAT", ExportFormat)
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
