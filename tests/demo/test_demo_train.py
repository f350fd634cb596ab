"""The demo model fine-tuned on the pirate sample dataset (``mlx-lora demo``): about 30
steps on CPU, after which a held-out question is answered in the persona's voice."""

from __future__ import annotations

import pytest

from mlx_lora.events import RecordingReporter
from mlx_lora.train import StepReport

pytestmark = pytest.mark.demo


def test_the_demo_fine_tune_moves_the_answer_toward_the_data(demo_model, tmp_path):
    from mlx_lora.demo_training import DEFAULT_STEPS, first_valid_prompt, run_demo

    recorder = RecordingReporter()
    result = run_demo(recorder, run_dir=tmp_path / "demo-run")
    assert result.run.status == "finished" and result.run.step == DEFAULT_STEPS == 30
    curve = [e.loss for e in recorder.of(StepReport)]
    assert curve[-1] < curve[0] - 0.5
    # The held-out reference answers became far likelier (validation loss in nats per token)…
    assert result.final_val_loss < result.baseline_val_loss - 1.0
    # …and the greedy answer to a held-out question now speaks like the data ("Arr! …").
    assert result.prompt == first_valid_prompt()
    assert "Arr" not in result.before
    assert "Arr" in result.after
    # `make demo` ends by exporting the tuned model; the export reproduces base+adapter.
    assert result.export.passed
    assert (result.export.out_dir / "config.json").is_file()
    assert result.export.checks[0].top1_agreement >= 0.99
