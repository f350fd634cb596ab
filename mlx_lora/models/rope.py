"""Llama 3's frequency-dependent rotary scaling as llama.cpp stores it: one factor per rotary
frequency (the ``rope_freqs`` tensor, ``LlamaModel.generate_extra_tensors`` in llama.cpp's
converter). Written by the GGUF export and read back by the GGUF import, which has only the
factors and finds the Hugging Face ``rope_scaling`` that makes them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# what every Llama 3.1 / 3.2 / 3.3 uses besides its factor (8 or 32)
LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def llama3_rope_factors(rope: dict[str, Any], dim: int) -> np.ndarray:
    """``rope``: rope_theta, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings."""
    freqs = 1.0 / (float(rope["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def llama3_scaling(factors: np.ndarray, rope_theta: float, dim: int) -> dict[str, Any] | None:
    """The ``rope_scaling`` whose factors these are (Llama 3's own low/high/context settings,
    the largest factor as its ``factor``), or None when no such setting makes them."""
    params = {"factor": float(np.max(factors)), **LLAMA3_DEFAULTS}
    expected = llama3_rope_factors({"rope_theta": rope_theta, **params}, dim)
    if expected.shape != factors.shape or not np.allclose(expected, factors, rtol=1e-5, atol=1e-6):
        return None
    return {"rope_type": "llama3", **params}
