"""Load a validated dataset into train/valid/test records.

A folder's ``train.jsonl``, ``valid.jsonl`` and ``test.jsonl`` are used as they
are. What a folder lacks is split off ``train.jsonl`` (``valid.jsonl`` by
``valid_ratio``, ``test.jsonl`` by ``test_ratio``), and a single JSONL file is
split the same way. Splitting is a seeded shuffle of the record indices, so the
same file, ratios and seed always give the same splits; each split keeps the
file's order. Everything is validated first: an invalid dataset raises a
:class:`~mlx_lora.errors.UserError` listing its problems, before any model is
loaded.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any

from mlx_lora.data.validate import raise_if_invalid, scan_dataset
from mlx_lora.errors import UserError

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Splits:
    """The records of each split, and the format they are written in."""

    train: list[Record]
    valid: list[Record]
    test: list[Record]
    format: str  # "chat" | "completion" | "text"


def split_sizes(n: int, valid_ratio: float, test_ratio: float) -> tuple[int, int, int]:
    """(train, valid, test) sizes for ``n`` records.

    Sizes round to the nearest record; a dataset of two or more records with
    ``valid_ratio > 0`` gets at least one validation record (validation loss is
    the only sign of overfitting), and train always keeps at least one.
    """
    if not (0 <= valid_ratio < 1 and 0 <= test_ratio < 1 and valid_ratio + test_ratio < 1):
        raise UserError(f"split ratios must be ≥ 0 and add up to less than 1 "
                        f"(valid {valid_ratio}, test {test_ratio})")
    n_valid = math.floor(n * valid_ratio + 0.5)
    n_test = math.floor(n * test_ratio + 0.5)
    if valid_ratio > 0 and n >= 2:
        n_valid = max(n_valid, 1)
    if test_ratio > 0 and n >= 3:
        n_test = max(n_test, 1)
    while n_valid + n_test > max(n - 1, 0):  # leave train at least one record
        if n_test > 0:
            n_test -= 1
        else:
            n_valid -= 1
    return n - n_valid - n_test, n_valid, n_test


def split_records(records: list[Record], valid_ratio: float = 0.1, test_ratio: float = 0.0,
                  seed: int = 0) -> tuple[list[Record], list[Record], list[Record]]:
    """(train, valid, test): a seeded, deterministic split, each part in the input's order."""
    n_train, n_valid, n_test = split_sizes(len(records), valid_ratio, test_ratio)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    valid_idx = sorted(order[:n_valid])
    test_idx = sorted(order[n_valid:n_valid + n_test])
    train_idx = sorted(order[n_valid + n_test:])
    return ([records[i] for i in train_idx], [records[i] for i in valid_idx], [records[i] for i in test_idx])


def load_splits(path: str | Path, valid_ratio: float = 0.1, test_ratio: float = 0.0, seed: int = 0) -> Splits:
    """Validate a dataset folder or JSONL file and return its splits (see the module docstring)."""
    split_sizes(2, valid_ratio, test_ratio)  # bad ratios fail before the file is read
    report, records = scan_dataset(path)
    raise_if_invalid(report)
    return splits_of(report, records, valid_ratio, test_ratio, seed)


def splits_of(report, records: dict[str, list[Record]], valid_ratio: float = 0.1, test_ratio: float = 0.0,
              seed: int = 0) -> Splits:
    """The splits of an already scanned dataset (``scan_dataset``'s report and records): what
    training will use, so the app's Data page shows the same split the engine makes."""
    path = report.path
    if not report.is_folder:
        train, valid, test = split_records(records[Path(path).name], valid_ratio, test_ratio, seed)
        return Splits(train, valid, test, report.format)
    train = records["train.jsonl"]
    valid = records.get("valid.jsonl")
    test = records.get("test.jsonl")
    # split off what the folder lacks; ratios of splits the folder has do not apply
    train, split_valid, split_test = split_records(
        train, valid_ratio if valid is None else 0.0, test_ratio if test is None else 0.0, seed)
    return Splits(train, split_valid if valid is None else valid, split_test if test is None else test,
                  report.format)
