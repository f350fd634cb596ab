"""An adapter or checkpoint from another base model or of another rank is refused with an
error naming the tensor and both shapes, and nothing is half-loaded or changed: on
``mlx-lora train --resume`` and on export. (The chat engine's adapter loading is proven
by tests/core/test_chat_adapters.py::test_adapter_from_another_base_is_refused_naming_tensor_and_shapes,
::test_adapter_whose_config_and_tensors_disagree_is_refused and
::test_adapter_missing_tensors_is_refused_not_partly_loaded.)"""

from __future__ import annotations

import re

import pytest

from mlx_lora.cli.main import main
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.train import train
from tests.core.test_train_helpers import tiny_config
from tests.reliability.runcheck import snapshot
from tests.tiny import make_tiny_model


@pytest.fixture(scope="module")
def wide_model(tiny_model, tmp_path_factory):
    """The tiny model's architecture with hidden size 96 instead of 64: another base."""
    return make_tiny_model(tmp_path_factory.mktemp("wide") / "wide-llama", tiny_model, hidden_size=96,
                           head_dim=24, num_attention_heads=4)


@pytest.fixture
def run(tiny_model, dataset, tmp_path):
    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", iters=2, save_every=1))
    assert result.status == "finished"
    return result.run_dir


def edit_config(run_dir, **changes) -> None:
    path = run_dir / "config.yaml"
    TrainConfig.from_yaml(path).replace(**changes).save(path)


@pytest.mark.parametrize("change, message", [
    ("rank", r"lora_a: the checkpoint's tensor has shape \(64, 8\) but this model needs \(64, 4\)"),
    ("base", r"lora_a: the checkpoint's tensor has shape \(64, 8\) but this model needs \(96, 8\)"),
])
def test_resume_with_a_checkpoint_that_does_not_fit_names_the_tensor_and_both_shapes(
        run, wide_model, capsys, change, message):
    edit_config(run, **({"rank": 4} if change == "rank" else {"model": str(wide_model)}))
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--json-events"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "does not fit the model" in captured.err
    assert re.search(message, captured.err), captured.err
    assert '"event": "run_failed"' in captured.out.splitlines()[-1]
    assert snapshot(run) == before  # nothing loaded, cut or rewritten


def test_export_of_an_adapter_from_another_base_names_the_tensor_and_both_shapes(run, wide_model, tmp_path):
    from mlx_lora.export import export_run

    edit_config(run, model=str(wide_model))  # the run now says it was trained on another base
    with pytest.raises(UserError) as info:
        export_run(run, tmp_path / "out", format="adapter", torch_python=None)
    message = str(info.value)
    assert "another base model" in message
    assert re.search(r"lora_a: the adapter's tensor has shape \(64, 8\) but this model needs \(96, 8\)", message)
    assert not (tmp_path / "out").exists()
