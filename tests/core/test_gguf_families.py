"""The per-family GGUF table (mlx_lora/export/gguf_families.py): what llama.cpp hard-codes is
refused by name, and the keys it reads are computed from config.json as llama.cpp's converter
computes them. Pure Python, no model: the files themselves are judged by llama.cpp in
tests/models (test_gguf) and tests/core/test_export_gguf_llama.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlx_lora.export import gguf_families
from mlx_lora.export.gguf_export import GGUF_ARCHS, family_of
from mlx_lora.errors import UserError

BASE = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_hidden_layers=4,
            max_position_embeddings=2048)


def test_every_family_names_llama_cpps_architecture():
    assert GGUF_ARCHS == {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                          "qwen3_moe": "qwen3moe", "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3",
                          "smollm3": "smollm3"}
    permuted = {t for t, f in gguf_families.FAMILIES.items() if f.permute_qk}
    assert permuted == {"llama", "mistral", "smollm3"}  # llama.cpp's "normal" rotary; the rest are NEOX
    assert {t for t, f in gguf_families.FAMILIES.items() if f.norm_shift} == {"gemma2", "gemma3_text"}


@pytest.mark.parametrize("config, match", [
    ({"model_type": "smollm3", "no_rope_layers": [1, 0, 1, 0]}, r"every 4th layer of a SmolLM3"),
    ({"model_type": "qwen3_moe", "mlp_only_layers": [1]}, r"experts in every layer"),
    ({"model_type": "gemma2", "query_pre_attn_scalar": 32}, r"1/sqrt\(16\), this model by 1/sqrt\(32\)"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, r"rope scaling 'dynamic'"),
    ({"model_type": "gpt_neox"}, r"not 'gpt_neox'"),
])
def test_what_llama_cpp_would_compute_differently_is_refused(config, match):
    with pytest.raises(UserError, match=match):
        family_of({**BASE, **config})


def test_the_layouts_llama_cpp_runs_pass():
    assert family_of({**BASE, "model_type": "smollm3", "no_rope_layers": [1, 1, 1, 0]}).arch == "smollm3"
    assert family_of({**BASE, "model_type": "gemma3_text", "query_pre_attn_scalar": 16}).arch == "gemma3"


def test_gemma3_per_layer_pattern_and_local_rope_base():
    config = {**BASE, "layer_types": ["sliding_attention", "full_attention"] * 2,
              "rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}}
    assert gguf_families.gemma3_sliding_layers(config) == [True, False, True, False]
    assert gguf_families.gemma3_sliding_layers({**BASE, "sliding_window_pattern": 6}) == [True] * 4  # 4 < 6
    assert gguf_families.rope_parameters(config)["rope_theta"] == 1e6
    assert gguf_families.rope_parameters(config, "sliding_attention")["rope_theta"] == 1e4


def test_llama3_rope_freqs_are_convert_hf_to_gguf_s():
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}
    [(name, freqs)] = gguf_families.FAMILIES["llama"].tensors(
        {**BASE, "rope_theta": 500000.0, "rope_scaling": rope}).items()
    assert name == "rope_freqs.weight" and freqs.shape == (8,) and freqs.dtype == np.float32
    # short wavelengths unscaled, long ones scaled by the factor, smooth in between
    wavelengths = 2 * math.pi * 500000.0 ** (np.arange(0, 16, 2) / 16)
    assert np.all(freqs[wavelengths < 8192 / 4] == 1.0) and np.all(freqs[wavelengths > 8192] == 32.0)
    assert gguf_families.FAMILIES["llama"].tensors({**BASE, "rope_theta": 1e4}) == {}
