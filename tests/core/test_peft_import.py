"""A PEFT adapter folder is accepted where an adapter is named: our own PEFT export read back
is the same adapter (weights and scale), and what mlx-lm cannot hold is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlx_lora.adapters import load_adapter_weights, resolve_adapter
from mlx_lora.errors import UserError
from mlx_lora.export.peft_export import write_peft
from tests.core.test_chat_helpers import make_run, tiny_run  # noqa: F401


@pytest.fixture
def peft_folder(tiny_run, tiny_model, tmp_path):
    out = tmp_path / "peft"
    out.mkdir()
    write_peft(resolve_adapter(tiny_run), out, str(tiny_model))
    return out


def test_a_peft_folder_reads_back_as_the_adapter_it_was_exported_from(peft_folder, tiny_run, tiny_model):
    ours, imported = resolve_adapter(tiny_run), resolve_adapter(peft_folder)
    assert imported.base_model() == str(tiny_model)
    assert imported.lora_parameters["rank"] == ours.lora_parameters["rank"]
    assert imported.lora_parameters["scale"] == pytest.approx(ours.lora_parameters["scale"])
    assert sorted(imported.lora_parameters["keys"]) == sorted(ours.lora_parameters["keys"])
    a, b = load_adapter_weights(ours), load_adapter_weights(imported)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.array(a[key]), np.array(b[key]))
    assert resolve_adapter(peft_folder).weights == imported.weights  # converted once
    assert sorted(p.name for p in peft_folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("change, message", [
    ({"modules_to_save": ["lm_head"]}, "modules_to_save=.* is not supported"),
    ({"peft_type": "IA3"}, "peft_type 'IA3' is not supported"),
    ({"rank_pattern": {"q_proj": 4}}, "rank_pattern is not supported"),
    ({"r": 0}, "r must be at least 1"),
])
def test_what_mlx_lm_cannot_hold_is_refused_by_name(peft_folder, change, message):
    config = json.loads((peft_folder / "adapter_config.json").read_text())
    (peft_folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UserError, match=message):
        resolve_adapter(peft_folder)
