"""The memory guard (train/memory_guard.py): a step that passes the limit is dropped, the run
stops with a checkpoint of the step before and how far to lower max_batch_tokens, and it
resumes with the lower setting. The limit is the device's own figure unless set."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx
import pytest

from mlx_lora import backend
from mlx_lora.config import TrainConfig
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import resume_config
from mlx_lora.train import RunFailed, RunFinished, RunStopped, StepReport, train
from mlx_lora.train.memory_guard import DEFAULT_SHARE, MemoryGuard, device_memory
from tests.core.test_train_helpers import tiny_config, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "persona", train=24, valid=4)


def test_the_default_limit_is_85_percent_of_the_devices_own_figure():
    total, what = device_memory()
    if backend.device_kind() == "cpu":
        assert (total, what) == (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM")
    guard = MemoryGuard.for_config(TrainConfig())
    assert guard.limit == int(total * DEFAULT_SHARE) and what in guard.source
    assert MemoryGuard.for_config(TrainConfig().replace(memory_limit_gb=2.5)).limit == 2_500_000_000


def test_a_step_over_the_limit_stops_the_run_with_a_checkpoint_and_resumes_with_a_lower_cap(
        tiny_model, dataset, tmp_path, monkeypatch):
    # The third step "needs" more than the 1 GB limit (the tiny model's steps need a few MB): the
    # guard reads MLX's peak, so that is where it is raised.
    real_peak = mx.get_peak_memory
    recorder = RecordingReporter()
    monkeypatch.setattr(mx, "get_peak_memory",
                        lambda: 10**9 + 1 if len(recorder.of(StepReport)) == 2 else real_peak())
    config = tiny_config(tiny_model, dataset, tmp_path / "run", iters=6, save_every=10,
                         max_batch_tokens=256, memory_limit_gb=1.0)
    result = train(config, recorder)

    assert (result.status, result.step) == ("stopped", 2)  # step 3 was dropped, not half-applied
    stopped = recorder.of(RunStopped)[-1]
    assert stopped.checkpoint and stopped.checkpoint.endswith("step-2")
    assert stopped.reason.startswith("out of memory at step 3: the step needed ")
    assert "lower max batch tokens to " in stopped.reason and "(now 256;" in stopped.reason
    assert f"mlx-lora train --resume {result.run_dir}" in stopped.reason
    assert not recorder.of(RunFailed)
    suggested = int(stopped.reason.split("lower max batch tokens to ")[1].split()[0])
    assert 64 <= suggested < 256 and suggested % 64 == 0

    monkeypatch.setattr(mx, "get_peak_memory", real_peak)
    second = RecordingReporter()
    resumed = train(resume_config(result.run_dir, {"max_batch_tokens": suggested}), second)
    assert (resumed.status, resumed.step) == ("finished", 6)
    assert [e.step for e in second.of(StepReport)] == [3, 4, 5, 6]
    assert second.of(RunFinished)


def test_a_first_step_over_the_limit_says_nothing_was_trained(tiny_model, dataset, tmp_path):
    recorder = RecordingReporter()
    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", memory_limit_gb=1e-6), recorder)
    assert (result.status, result.step) == ("stopped", 0)
    stopped = recorder.of(RunStopped)[-1]
    assert stopped.checkpoint is None and "out of memory at step 1" in stopped.reason
    assert "nothing was trained yet" in stopped.reason and not recorder.of(StepReport)
    limit = mx.set_memory_limit(10**12)  # the run gave MLX back the limit it had before
    assert limit > 10**6
    mx.set_memory_limit(limit)
