"""MLX LoRA Studio's engine: models, data, LoRA training, chat and export — no Qt.

Importing the package first runs the BLAS fix in :mod:`mlx_lora.backend` so that
MLX's CPU matmuls on Linux use OpenBLAS; that has to happen before anything
imports ``mlx.core``.
"""

__version__ = "0.1.0"

from mlx_lora import backend as _backend

_backend.preload_blas()
