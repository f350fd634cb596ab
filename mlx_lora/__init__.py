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
# float32 means float32: MLX runs float32 matmuls as TF32 on CUDA (and M5) GPUs unless told
# otherwise, and on the H200 that put our float32 export checks 0.003-0.005 off base+adapter
# (tolerance 0.001) and broke every float32 equality test (tests/core on CUDA, 2026-12-03).
# Training on a GPU runs in the model's bf16, whose matmuls this does not touch. Set
# MLX_ENABLE_TF32=1 yourself to trade float32 precision for speed.
_os.environ.setdefault("MLX_ENABLE_TF32", "0")

from mlx_lora import backend as _backend

_backend.preload_blas()
