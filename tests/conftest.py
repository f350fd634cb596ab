"""Shared fixtures. Every test runs with the app's home, the Hugging Face cache
and Qt pointed at private/offscreen places: no test touches the user's files or
the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="mlx-lora-tests-"))
os.environ["MLX_LORA_HOME"] = str(_SESSION_HOME / "home")
os.environ["HF_HOME"] = str(_SESSION_HOME / "hf")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# tokenizers' Rust thread pool, started from a worker thread, can abort the
# interpreter at exit ("terminate called without an active exception").
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402

import mlx_lora  # noqa: E402,F401  (BLAS preload before mlx.core)
from tests.hubfixtures import hub  # noqa: E402,F401  (fixture: the stand-in Hub, for any test)


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The embedded demo model, imported once for the whole session."""
    from mlx_lora.models.demo import demo_model_path

    return demo_model_path()


@pytest.fixture(scope="session")
def tiny_model(demo_model, tmp_path_factory) -> Path:
    """A tiny random llama (2 layers, hidden 64) with the demo model's tokenizer."""
    from tests.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama", demo_model)
