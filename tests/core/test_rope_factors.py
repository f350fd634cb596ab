"""Llama 3's rope_freqs as llama.cpp stores them, and the rope_scaling the GGUF import finds
from them (mlx_lora/models/rope.py)."""

from __future__ import annotations

import numpy as np

from mlx_lora.models.rope import LLAMA3_DEFAULTS, llama3_rope_factors, llama3_scaling


def test_the_import_finds_the_scaling_that_made_the_factors():
    for factor, theta, dim in ((8.0, 500000.0, 128), (32.0, 500000.0, 64)):  # Llama 3.1 / 3.3, Llama 3.2
        factors = llama3_rope_factors({"rope_theta": theta, "factor": factor, **LLAMA3_DEFAULTS}, dim)
        assert factors.shape == (dim // 2,) and factors.min() == 1.0 and factors.max() == factor
        assert llama3_scaling(factors, theta, dim) == {"rope_type": "llama3", "factor": factor, **LLAMA3_DEFAULTS}


def test_factors_no_llama_3_setting_makes_are_not_taken_for_one():
    factors = llama3_rope_factors({"rope_theta": 500000.0, "factor": 8.0, **LLAMA3_DEFAULTS}, 128)
    assert llama3_scaling(factors, 10000.0, 128) is None  # another base frequency
    other = llama3_rope_factors({"rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 2.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, 128)
    assert llama3_scaling(other, 500000.0, 128) is None
    assert llama3_scaling(np.linspace(1, 8, 64, dtype=np.float32), 500000.0, 128) is None
