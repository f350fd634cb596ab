"""MLX LoRA Studio's engine: models, data, LoRA training, chat and export — no Qt.

Importing the package first runs the BLAS fix in :mod:`mlx_lora.backend` so that
MLX's CPU matmuls on Linux use OpenBLAS; that has to happen before anything
imports ``mlx.core``.
"""

__version__ = "0.1.0"

import os as _os

# transformers (used by mlx-lm for tokenizers only) advises installing PyTorch on
# import; we never need it, and the line lands in the CLI's output.
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from mlx_lora import backend as _backend

_backend.preload_blas()
