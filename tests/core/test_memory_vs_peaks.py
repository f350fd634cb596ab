""""Will it fit?" against the trainer's own measured peaks (``mx.get_peak_memory``, as each
StepReport carries it): the demo model trains 2 steps on the pirate sample's 8 longest
examples — so every batch is the widest pass the estimate is for — at several batch sizes,
max lengths, ranks and token caps, on this machine's device; the estimate made from the
data's token lengths (:func:`largest_pass`) is within 25% of the peak. (The Models page's
9.8 GB for 4 × 2048, with the pirate examples ≤ 120 tokens, was 9× the 1.1 GB measured.)"""

from __future__ import annotations

import json

import pytest

from mlx_lora import backend, paths
from mlx_lora.config import TrainConfig
from mlx_lora.models.demo import DEMO_NAME
from mlx_lora.events import RecordingReporter
from mlx_lora.train import StepReport, train
from mlx_lora.train.memory import estimate_training_memory, largest_pass, read_model_shape

SETTINGS = [  # each on top of FEW_STEPS; ids say what changes
    pytest.param(dict(batch_size=4, max_seq_length=2048, rank=8), id="4x2048-r8"),
    pytest.param(dict(batch_size=8, max_seq_length=2048, rank=16), id="8x2048-r16"),
    pytest.param(dict(batch_size=4, max_seq_length=64, rank=8), id="4x64-truncated"),
    pytest.param(dict(batch_size=8, max_seq_length=2048, rank=8, max_batch_tokens=256), id="8-cap256"),
]
FEW_STEPS = dict(iters=2, num_layers=16, steps_per_report=1, steps_per_eval=1000, val_batches=1, save_every=1000,
                 learning_rate=1e-4)


@pytest.fixture(scope="module")
def longest_pirate(demo_model, tmp_path_factory):
    """A dataset folder of the pirate sample's 8 longest training examples (and 2 validation
    ones), with their token lengths and trained tokens under the demo tokenizer."""
    from mlx_lm.tokenizer_utils import load
    from mlx_lm.utils import load_config

    from mlx_lora.data.stats import dataset_stats

    tokenizer = load(demo_model, eos_token_ids=load_config(demo_model).get("eos_token_id"))
    sample = paths.sample_datasets_dir() / "pirate"
    lines = (sample / "train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    lengths = dataset_stats(tokenizer, records, 4096).lengths
    chosen = sorted(range(len(records)), key=lambda k: -lengths[k])[:8]
    folder = tmp_path_factory.mktemp("longest-pirate")
    (folder / "train.jsonl").write_text("".join(lines[k] + "\n" for k in chosen))
    (folder / "valid.jsonl").write_text("".join(line + "\n" for line in (sample / "valid.jsonl").read_text().splitlines()[:2]))
    stats = dataset_stats(tokenizer, [records[k] for k in chosen], 4096)
    return folder, stats


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_estimate_is_within_25_percent_of_the_trainers_peak(longest_pirate, tmp_path, settings):
    folder, stats = longest_pirate
    config = TrainConfig().replace(model="demo", data=str(folder), run_dir=str(tmp_path / "run"),
                                   **FEW_STEPS, **settings)
    recorder = RecordingReporter()
    assert train(config, recorder).status == "finished"
    peak = max(report.peak_memory_gb for report in recorder.of(StepReport)) * 1e9
    batch, share = largest_pass(stats.lengths, config, stats.trained_tokens)
    estimate = estimate_training_memory(config, shape=read_model_shape(str(paths.models_dir() / DEMO_NAME)),
                                        device=backend.device_kind(), batch_tokens=batch, trained_share=share)
    ratio = estimate.total_bytes / peak
    assert 0.75 <= ratio <= 1.25, (settings, batch, f"{ratio:.2f}", estimate.describe(), f"peak {peak / 1e9:.2f} GB")
