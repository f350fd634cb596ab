"""The reliability suite: tests that try to break the guarantees in docs/RELIABILITY.md
(kill -9 at random moments and inside checkpoint writes, injected faults, bad and hostile
inputs, fuzzing). Runs with the rest of ``make test``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.test_train_helpers import write_dataset


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: a reliability test that takes a minute or more (still run by make test)")


@pytest.fixture(scope="package")
def dataset(tmp_path_factory) -> Path:
    """24 train, 4 valid, 2 test chats of about 50 tokens."""
    return write_dataset(tmp_path_factory.mktemp("reliability-data") / "persona", train=24, valid=4, test=2)
