"""Small datasets and configs for the training tests. (No tests in this module: it is
imported by tests/core/test_train*.py and tests/cli/test_train*.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import mlx_lora  # noqa: F401  (BLAS preload before mlx.core)
from mlx_lora.config import TrainConfig


def persona_records(n: int, marker: str = "Arr") -> list[dict]:
    """Short two-turn chats whose answers all start with ``marker`` (about 50 tokens each)."""
    records = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        records.append({"messages": [
            {"role": "user", "content": f"What is {a}+{b}?"},
            {"role": "assistant", "content": f"{marker}! {a}+{b} be {a + b}, matey."},
        ]})
    return records


def write_dataset(folder: Path, train: int = 24, valid: int = 6, test: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = persona_records(train + valid + test)
    parts = {"train": records[:train], "valid": records[train:train + valid],
             "test": records[train + valid:]}
    for name, rows in parts.items():
        if rows:
            (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def tiny_config(model: Path, data: Path, run_dir: Path, **settings) -> TrainConfig:
    """A fast run on the tiny model: a few steps of batch 2, no schedule surprises."""
    base = dict(model=str(model), data=str(data), run_dir=str(run_dir), iters=8, batch_size=2,
                learning_rate=5e-3, lr_schedule="constant", steps_per_report=1, steps_per_eval=4,
                save_every=4, val_batches=2, num_layers=-1, max_seq_length=128, keep_checkpoints=0)
    return TrainConfig().replace(**{**base, **settings})


def losses(events) -> dict[int, float]:
    from mlx_lora.train import StepReport

    return {e.step: e.loss for e in events if isinstance(e, StepReport)}
