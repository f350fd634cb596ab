"""Export a run's adapter — fused into its base (mlx, hf, gguf) or as an adapter (peft,
mlx-lm) — with every export checked against base+adapter before it is written.

    from mlx_lora.export import export_run

    result = export_run("runs/my-run", "exports/my-model", format="gguf", quantize=8)
    result.checks  # ExportVerified: top-1 agreement, logit differences, adapter effect

The formats, one module each, are in :mod:`mlx_lora.export.formats` (``FORMATS``);
the driver that runs one is :mod:`mlx_lora.export.exporter`.
"""

from mlx_lora.export.exporter import (
    ExportFailed,
    ExportFinished,
    ExportWriteFailed,
    ExportResult,
    ExportVerificationFailed,
    StaleTemporariesRemoved,
    clean_stale_temporaries,
    export_run,
)
from mlx_lora.export.formats import FORMATS, format_for
from mlx_lora.export.verify import PROMPTS, ExportVerified

__all__ = ["FORMATS", "PROMPTS", "ExportFailed", "ExportFinished", "ExportResult", "ExportVerificationFailed",
           "ExportVerified", "ExportWriteFailed", "StaleTemporariesRemoved", "clean_stale_temporaries", "export_run",
           "format_for"]
