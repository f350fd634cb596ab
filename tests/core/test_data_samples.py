"""The sample datasets in resources/datasets: valid, small, and as consistent in
style as their README promises (that consistency is what a 30-step LoRA learns)."""

from __future__ import annotations

import pytest

from mlx_lora.data.dataset import load_splits
from mlx_lora.data.validate import validate_dataset
from mlx_lora.paths import sample_datasets_dir


@pytest.mark.parametrize("name, fmt", [("pirate", "chat"), ("haiku", "completion")])
def test_sample_datasets_validate_cleanly(name, fmt):
    report = validate_dataset(sample_datasets_dir() / name)
    assert report.ok, report.problems
    assert report.format == fmt
    assert [r.file.rsplit("/", 1)[-1] for r in report.files] == ["train.jsonl", "valid.jsonl"]
    assert all(r.blank_lines == 0 for r in report.files)


def test_every_pirate_reply_starts_with_arr_and_ends_with_yo_ho_ho():
    splits = load_splits(sample_datasets_dir() / "pirate")
    replies = [m["content"] for r in splits.train + splits.valid for m in r["messages"] if m["role"] == "assistant"]
    assert len(replies) > 140
    assert all(reply.startswith("Arr! ") and reply.endswith(" Yo ho ho!") for reply in replies)
    assert all(m["role"] != "system" for r in splits.train for m in r["messages"])


def test_every_haiku_has_three_lines_and_prompts_do_not_repeat():
    splits = load_splits(sample_datasets_dir() / "haiku")
    records = splits.train + splits.valid
    assert all(len(r["completion"].split("\n")) == 3 for r in records)
    assert all("haiku" in r["prompt"] for r in records)
    assert len({r["prompt"] for r in records}) == len(records)
