"""Where the app keeps its files.

Everything lives under one home folder: platformdirs' user data folder for
"mlx-lora-studio" (``~/Library/Application Support/mlx-lora-studio`` on macOS,
``~/.local/share/mlx-lora-studio`` on Linux), or ``$MLX_LORA_HOME`` when set
(tests point it at a temporary folder). Downloaded Hub models stay in the
standard Hugging Face cache (``$HF_HOME``), shared with other tools.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "mlx-lora-studio"


def home() -> Path:
    root = os.environ.get("MLX_LORA_HOME")
    path = Path(root) if root else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Imported models (GGUF conversions, the demo model)."""
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    path = home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    return repo_root() / "resources"


def sample_datasets_dir() -> Path:
    return resources_dir() / "datasets"
