"""The rest of tests/core/test_memory_vs_peaks.py's settings (a larger batch and rank, a
truncating max length, a token cap): "Will it fit?" within 25% of the trainer's measured
peak. Here, not in make test, for the time they take (~3 min together on 2 cores)."""

from __future__ import annotations

import pytest

from tests.core.test_memory_vs_peaks import SETTINGS, check_the_estimate_against_the_peak, longest_pirate  # noqa: F401

pytestmark = pytest.mark.models


@pytest.mark.parametrize("settings", SETTINGS[1:])
def test_the_estimate_is_within_25_percent_of_the_trainers_peak(longest_pirate, tmp_path, settings):
    check_the_estimate_against_the_peak(longest_pirate, tmp_path, settings)
