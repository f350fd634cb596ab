"""Presets are valid config overrides that change only how the run trains."""

from __future__ import annotations

import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.presets import PRESETS, preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_is_a_valid_config_and_keeps_model_and_data(name):
    base = TrainConfig().replace(model="some/model", data="my.jsonl")
    config = base.replace(**preset(name))
    assert config.model.model == "some/model" and config.data.data == "my.jsonl"
    assert config.differences(base)  # it changes something
    assert TrainConfig.from_dict(config.to_dict()) == config  # survives YAML's shape


def test_presets_grow_from_quick_to_quality():
    steps = [preset(name)["iters"] for name in ("Quick test", "Balanced", "Quality")]
    assert steps == sorted(steps) and steps[0] < steps[-1]


def test_unknown_preset_names_the_choices():
    with pytest.raises(UserError, match="Quick test"):
        preset("Turbo")
