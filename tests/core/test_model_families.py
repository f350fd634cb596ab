"""Models of families mlx-lm lacks are refused before loading; transformers-5 config keys are read
as mlx-lm 0.32 expects them; the memory estimate's shape knows each family's quirks."""

from __future__ import annotations

import json
import shutil

import pytest

from mlx_lora.errors import UserError
from mlx_lora.models.local import check_model_folder, config_compat
from mlx_lora.train.memory import shape_from_config


def test_an_architecture_mlx_lm_lacks_is_refused_before_loading(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama_9000"}))
    with pytest.raises(UserError, match=r"config.json: model_type 'llama_9000' is not supported: mlx-lm has no "
                                        r"model of this architecture; pick a model"):
        check_model_folder(folder)
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "../../os"}))
    with pytest.raises(UserError, match="is not supported"):
        check_model_folder(folder)
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="no model_type"):
        check_model_folder(folder)


def test_transformers_5_rope_parameters_become_mlx_lm_keys():
    llama = config_compat({"model_type": "llama", "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0}})
    assert llama["rope_theta"] == 500000.0
    assert llama["rope_scaling"] == {"rope_type": "llama3", "type": "llama3", "factor": 32.0}
    plain = config_compat({"model_type": "qwen2", "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert plain["rope_theta"] == 1e6 and "rope_scaling" not in plain
    gemma = config_compat({"model_type": "gemma3_text", "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}})
    assert (gemma["rope_theta"], gemma["rope_local_base_freq"]) == (1e6, 1e4)
    moe = config_compat({"model_type": "qwen3_moe", "num_local_experts": 8, "dtype": "float32"})
    assert moe["num_experts"] == 8 and moe["torch_dtype"] == "float32"
    kept = config_compat({"model_type": "llama", "rope_theta": 7.0, "rope_parameters": {"rope_theta": 9.0}})
    assert kept["rope_theta"] == 7.0  # what the file says at the top level wins


def test_a_rope_base_in_rope_parameters_is_bounded_like_rope_theta(tmp_path):
    from mlx_lora.models.local import check_config

    check_config({"rope_parameters": {"full_attention": {"rope_theta": 1e6}}}, "c.json")
    for bad in ({"rope_theta": 0}, {"sliding_attention": {"rope_theta": float("nan")}}):
        with pytest.raises(UserError, match="c.json: rope_parameters.rope_theta must be a number above 0"):
            check_config({"rope_parameters": bad}, "c.json")


BASE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000}


def test_the_shape_counts_each_familys_extra_weights():
    llama = shape_from_config({**BASE, "model_type": "llama"})
    qwen2 = shape_from_config({**BASE, "model_type": "qwen2"})
    qwen3 = shape_from_config({**BASE, "model_type": "qwen3"})
    assert qwen2.parameters - llama.parameters == 2 * (64 + 2 * 32)  # q, k, v biases per layer
    assert qwen3.parameters - llama.parameters == 2 * 2 * 16  # q and k norms per layer
    phi3 = shape_from_config({**BASE, "model_type": "phi3"})
    assert phi3.parameters == llama.parameters and set(phi3.linear_shapes()) == {
        "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"}
    moe = shape_from_config({**BASE, "model_type": "qwen3_moe", "num_local_experts": 8, "num_experts_per_tok": 2,
                             "moe_intermediate_size": 32})
    assert moe.expert_parameters == 8 * 3 * 64 * 32  # every stored expert is held
    assert moe.active_intermediate_size == 2 * 32  # a token passes through two
    gemma2 = shape_from_config({**BASE, "model_type": "gemma2", "final_logit_softcapping": 30.0})
    assert gemma2.full_logits and gemma2.logit_softcapping and gemma2.norms_per_layer == 4
    assert shape_from_config({**BASE, "model_type": "llama", "dtype": "float32"}).stored_dtype_bytes == 4
