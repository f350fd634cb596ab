"""GRPO on the demo model and the plus-one sample (resources/datasets/plus-one): the mean
sampled reward rises from its start within 10 steps (78 s on the 2-core build machine at light
load; 9 minutes for 15 steps with three other jobs running). The rewards are bench/grpo_toy.py's:
exact_match and "the answer starts with a number" (the demo model rarely gives a bare number
or a right one; that it learns to lead with a number is the rise). The full 40-step curve and
the comparison with SFT and DPO are in bench/RESULTS.md."""

from __future__ import annotations

import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.events import RecordingReporter
from mlx_lora.paths import sample_datasets_dir
from mlx_lora.run_events import RewardReport, RunFinished
from mlx_lora.train import train

pytestmark = pytest.mark.demo


@pytest.mark.timeout(600)
def test_the_mean_reward_rises_on_the_toy_task(demo_model, tmp_path):
    from bench.grpo_toy import COMMON, GRPO

    config = TrainConfig().replace(**{**COMMON, **GRPO, "data": str(sample_datasets_dir() / "plus-one"),
                                      "iters": 10, "run_dir": str(tmp_path / "run")})
    recorder = RecordingReporter()
    result = train(config, recorder)
    assert result.status == "finished" and isinstance(recorder.events[-1], RunFinished)
    curve = [e.mean_reward for e in recorder.of(RewardReport)]
    assert len(curve) == 2  # steps 1-5 and 6-10, 40 sampled answers each
    assert curve[1] >= curve[0] + 0.1, curve  # measured: 0.85 → 1.0
