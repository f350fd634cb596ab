"""Loading and splitting datasets: deterministic, seeded, never silently empty."""

from __future__ import annotations

import json

import pytest

from mlx_lora.data.dataset import load_splits, split_records, split_sizes
from mlx_lora.errors import UserError


def write_jsonl(path, records, blank_every: int = 0):
    lines = []
    for i, r in enumerate(records):
        lines.append(json.dumps(r))
        if blank_every and i % blank_every == 0:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def texts(n: int, tag: str = "t") -> list[dict]:
    return [{"text": f"{tag} {i}"} for i in range(n)]


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    records = texts(100)
    a = split_records(records, 0.1, 0.1, seed=3)
    b = split_records(records, 0.1, 0.1, seed=3)
    c = split_records(records, 0.1, 0.1, seed=4)
    assert a == b
    assert a[1] != c[1]
    train, valid, test = a
    assert (len(train), len(valid), len(test)) == (80, 10, 10)
    # a partition of the records, each part in file order
    assert sorted(r["text"] for r in train + valid + test) == sorted(r["text"] for r in records)
    for part in a:
        assert part == sorted(part, key=lambda r: int(r["text"].split()[1]))


def test_split_sizes_keep_a_validation_record_and_a_training_record():
    assert split_sizes(1000, 0.1, 0.0) == (900, 100, 0)
    assert split_sizes(5, 0.1, 0.0) == (4, 1, 0)  # 0.5 rounds up
    assert split_sizes(3, 0.1, 0.0) == (2, 1, 0)  # 0.3 would round to 0: at least one
    assert split_sizes(2, 0.1, 0.0) == (1, 1, 0)
    assert split_sizes(1, 0.1, 0.0) == (1, 0, 0)  # one record: it trains
    assert split_sizes(2, 0.5, 0.4) == (1, 1, 0)  # train keeps one, test gives way first
    assert split_sizes(10, 0.0, 0.0) == (10, 0, 0)


@pytest.mark.parametrize("valid, test", [(-0.1, 0.0), (1.0, 0.0), (0.6, 0.5)])
def test_bad_ratios_are_a_user_error(tmp_path, valid, test):
    path = write_jsonl(tmp_path / "d.jsonl", texts(10))
    with pytest.raises(UserError, match="ratios"):
        load_splits(path, valid_ratio=valid, test_ratio=test)


def test_a_single_file_is_validated_then_split(tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", texts(20), blank_every=5)
    splits = load_splits(path, valid_ratio=0.25, seed=1)
    assert splits.format == "text"
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (15, 5, 0)
    assert load_splits(path, valid_ratio=0.25, seed=1) == splits


def test_a_folder_uses_its_files_as_they_are(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", texts(8, "train"))
    write_jsonl(tmp_path / "valid.jsonl", texts(2, "valid"))
    write_jsonl(tmp_path / "test.jsonl", texts(3, "test"))
    splits = load_splits(tmp_path, valid_ratio=0.5, test_ratio=0.2)
    assert splits.train == texts(8, "train")
    assert splits.valid == texts(2, "valid")
    assert splits.test == texts(3, "test")


def test_a_folder_without_valid_jsonl_splits_validation_off_train(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", texts(10, "train"))
    splits = load_splits(tmp_path, valid_ratio=0.2)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (8, 2, 0)
    assert all(r["text"].startswith("train") for r in splits.valid)


def test_invalid_data_raises_before_anything_is_loaded(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    with pytest.raises(UserError) as info:
        load_splits(path)
    assert f"{path}:2: invalid JSON" in str(info.value)
