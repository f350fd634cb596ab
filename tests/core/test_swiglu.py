"""The trainer's SwiGLU (mlx_lora/methods/tensors/swiglu.py): mlx-lm's forward bit for bit, the
gradients of silu(g) · u, under mx.compile too (the GPU's compiled step), swapped into the
model's mlx-lm module by training and counted by the memory estimate."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.models import activations

from mlx_lora.methods.tensors.swiglu import lean_swiglu, use_lean_swiglu


def _inputs(dtype=mx.float32):
    mx.random.seed(3)
    gate, up = mx.random.normal((3, 5, 64)) * 3, mx.random.normal((3, 5, 64))
    return gate.astype(dtype), up.astype(dtype), mx.random.normal((3, 5, 64)).astype(dtype)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_the_forward_is_mlx_lms_and_the_gradients_are_silus(dtype):
    gate, up, cotangent = _inputs(dtype)
    assert mx.array_equal(lean_swiglu(gate, up), activations.swiglu(gate, up)).item()

    def reference(g, u):  # autodiff of the plain formula, in float32
        return nn.silu(g) * u

    _, expected = mx.vjp(reference, [gate.astype(mx.float32), up.astype(mx.float32)], [cotangent.astype(mx.float32)])
    for compiled in (False, True):
        fn = mx.compile(lambda g, u, c: mx.vjp(lean_swiglu, [g, u], [c])[1]) if compiled else \
            (lambda g, u, c: mx.vjp(lean_swiglu, [g, u], [c])[1])
        got = fn(gate, up, cotangent)
        tolerance = 1e-5 if dtype == mx.float32 else 3e-2
        for a, b in zip(got, expected):
            assert a.dtype == dtype
            np.testing.assert_allclose(np.array(a.astype(mx.float32)), np.array(b), rtol=tolerance, atol=tolerance)


def test_training_swaps_it_into_the_models_module_and_the_model_computes_the_same(tiny_model):
    from mlx_lm.models import llama
    from mlx_lm.utils import load

    model, _ = load(str(tiny_model))
    tokens = mx.array([[1, 5, 9, 200, 33, 7]])
    saved = llama.swiglu
    try:
        llama.swiglu = activations.swiglu
        before = model(tokens)
        assert use_lean_swiglu(model) == ["mlx_lm.models.llama"] and llama.swiglu is lean_swiglu
        assert use_lean_swiglu(model) == ["mlx_lm.models.llama"]  # idempotent
        assert mx.array_equal(model(tokens), before).item()
    finally:
        llama.swiglu = saved


def test_the_memory_estimate_counts_three_intermediate_arrays_for_swiglu_models_and_five_for_others(monkeypatch):
    from mlx_lora.config import TrainConfig
    from mlx_lora.train import memory, prepare

    config = TrainConfig().replace(model="demo", batch_size=2, max_seq_length=256)
    shape = memory.read_model_shape("demo")
    assert shape.swiglu  # the demo is a llama
    lean = memory.estimate_training_memory(config, shape=shape, device="cpu").parts["activations"]
    monkeypatch.setattr(prepare, "LEAN_SWIGLU", False)
    plain = memory.estimate_training_memory(config, shape=shape, device="cpu").parts["activations"]
    per_token = memory.HIDDEN_PER_TOKEN * shape.hidden_size + memory.QKV_PER_TOKEN * \
        (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim
    i = shape.intermediate_size
    assert lean / plain == pytest.approx((per_token + 3 * i) / (per_token + 5 * i), rel=0.02)
    gemma = memory.shape_from_config({"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128,
                                      "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 256})
    assert not gemma.swiglu
