"""QLoRA's dequantise-then-matmul layers (mlx_lora/methods/tensors/qmatmul.py) and quantising
the base while it loads (mlx_lora/train/prepare.py)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_lora.config import TrainConfig
from mlx_lora import backend
from mlx_lora.methods.tensors.qmatmul import DequantizedBackwardLinear, DequantizedMatmulLinear, dequantized_matmul_layers
from mlx_lora.train import prepare


FORWARDS = {"dequantize": DequantizedMatmulLinear, "kernel": DequantizedBackwardLinear}


@pytest.mark.parametrize("forward", list(FORWARDS))
@pytest.mark.parametrize("bits", [4, 8])
def test_dequantised_matmul_gives_the_quantised_layers_output_and_input_gradient(bits, forward):
    mx.random.seed(0)
    layer = nn.QuantizedLinear.from_linear(nn.Linear(128, 64, bias=True), group_size=64, bits=bits)
    layer.bias = mx.random.normal((64,))
    x = mx.random.normal((5, 7, 128))
    cotangent = mx.random.normal((5, 7, 64))

    def output_and_input_gradient():
        out, vjp = mx.vjp(lambda inputs: layer(inputs), [x], [cotangent])
        return np.array(out[0]), np.array(vjp[0])

    expected_out, expected_dx = output_and_input_gradient()
    assert dequantized_matmul_layers(layer, forward=forward) == 1 and type(layer) is FORWARDS[forward]
    out, dx = output_and_input_gradient()
    np.testing.assert_allclose(out, expected_out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-4, atol=1e-4)
    # the swap keeps mlx-lm's layer as far as saving and fusing see it
    assert isinstance(layer, nn.QuantizedLinear)
    assert sorted(k for k, _ in tree_flatten(layer.parameters())) == ["bias", "biases", "scales", "weight"]


@pytest.mark.parametrize("forward", list(FORWARDS))
def test_a_lora_step_on_a_quantised_base_is_the_same_through_dequantised_matmuls(tiny_model, forward):
    """One LoRA gradient on a 4-bit base through dequantised matmuls equals the same step on
    the dense dequantised weights (the reference: on CUDA MLX's quantised kernels round
    differently, so they are not the reference; the "kernel" forward is theirs, so on the GPU
    it gets their rounding as its tolerance). The base is quantised by the engine's
    `quantize_base`: the tiny model's 64-wide layers are one group wide, which MLX's CUDA
    kernels get wrong (the 11.07 against 11.63 and 10.80 that this test measured on the H200)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import dequantize_model, load

    def lora_model(dense: bool):
        model, _, config = load(str(tiny_model), return_config=True)
        model = prepare.quantize_base(model, config, 64, 4, [])
        if dense:
            model = dequantize_model(model)
        model.freeze()
        mx.random.seed(1)
        linear_to_lora_layers(model, 2, {"rank": 4, "scale": 2.0, "dropout": 0.0})
        model.update(_random_lora_b(model))  # B starts at 0, which would hide a wrong path through it
        if not dense:
            assert dequantized_matmul_layers(model, forward=forward) > 0
        return model

    tokens = mx.array([[1, 5, 9, 200, 33, 7, 2, 8]])

    def loss(m):
        logits = m(tokens[:, :-1]).astype(mx.float32)
        return nn.losses.cross_entropy(logits, tokens[:, 1:]).mean()

    dense, swapped = lora_model(dense=True), lora_model(dense=False)
    value_a, grads_a = nn.value_and_grad(dense, loss)(dense)
    value_b, grads_b = nn.value_and_grad(swapped, loss)(swapped)
    kernels_round = forward == "kernel" and backend.device_kind() == "gpu"
    assert value_a.item() == pytest.approx(value_b.item(), rel=5e-3 if kernels_round else 1e-5)
    for (name, a), (_, b) in zip(tree_flatten(grads_a), tree_flatten(grads_b)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=5e-2 if kernels_round else 1e-3,
                                   atol=1e-3 if kernels_round else 1e-5, err_msg=name)


def _random_lora_b(model):
    from mlx.utils import tree_unflatten

    return tree_unflatten([(name, mx.random.normal(value.shape) * 0.1)
                           for name, value in tree_flatten(model.trainable_parameters()) if name.endswith("lora_b")])


def test_quantising_at_load_keeps_the_full_precision_base_out_of_memory(demo_model, tmp_path, monkeypatch):
    """quantize_bits loads the weights lazily and quantises them layer by layer: the same
    quantised base as quantising an eagerly loaded one, with a lower peak while loading."""
    from mlx_lm.utils import load, quantize_model

    from tests.tiny import make_tiny_model

    # layers big enough (16 MB in float32 against the 50 MB embedding) for their copy to show
    tiny_model = make_tiny_model(tmp_path / "wider", demo_model, hidden_size=256, intermediate_size=1024,
                                 num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    monkeypatch.setattr(prepare.backend, "device_kind", lambda: "gpu")  # keep it quantised to compare
    config = TrainConfig().replace(model=str(tiny_model), quantize_bits=4, compute_dtype="float32")
    mx.clear_cache()
    mx.reset_peak_memory()
    model, *_ = prepare.load_base(config)
    lazy_peak = mx.get_peak_memory()
    eager, _, model_config = load(str(tiny_model), return_config=True)
    eager, _ = quantize_model(eager, model_config, 64, 4)
    ours = dict(tree_flatten(model.parameters()))
    theirs = dict(tree_flatten(eager.parameters()))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(np.array(ours[name]), np.array(theirs[name]), err_msg=name)
    del eager, theirs
    mx.clear_cache()
    mx.reset_peak_memory()
    eager, _, model_config = load(str(tiny_model), return_config=True)
    eager, _ = quantize_model(eager, model_config, 64, 4)
    mx.eval(eager.parameters())
    assert lazy_peak < mx.get_peak_memory()


def test_single_group_layers_get_a_smaller_group_on_cuda_only(tiny_model, monkeypatch):
    """MLX 0.32.4's CUDA quantised matmul is wrong when a weight row is one group (64 inputs at
    group size 64; bench/results/h200-2026-12-04-s2/qmm-check.log): quantize_base gives those
    layers group size 32 on CUDA and leaves every other backend, and wider layers, as mlx-lm has them."""
    from mlx_lm.utils import load

    assert prepare.single_group_fix(64, 64) == 32
    assert prepare.single_group_fix(128, 128) == 64
    assert prepare.single_group_fix(128, 64) == 64 and prepare.single_group_fix(2048, 64) == 64
    assert prepare.single_group_fix(32, 32) is None  # no valid smaller group: left unquantised

    def group_sizes(backend_name):
        monkeypatch.setattr(prepare.backend, "backend_name", lambda: backend_name)
        model, _, config = load(str(tiny_model), return_config=True)
        notes = []
        model = prepare.quantize_base(model, config, 64, 4, notes)
        sizes = {name: module.group_size for name, module in model.named_modules() if hasattr(module, "group_size")}
        return sizes, notes

    cpu, cpu_notes = group_sizes("cpu")
    cuda, cuda_notes = group_sizes("cuda")
    assert cpu.keys() == cuda.keys() and set(cpu.values()) == {64} and not cpu_notes
    # q_proj (64 -> 64), the MLP's gate/up (64 -> 128) and the tied embedding (64 wide) are one
    # group wide; down_proj (128 -> 64) takes two groups and keeps 64
    assert cuda["model.layers.0.self_attn.q_proj"] == 32 and cuda["model.embed_tokens"] == 32
    assert cuda["model.layers.0.mlp.down_proj"] == 64
    assert len(cuda_notes) == 1 and "smaller group" in cuda_notes[0]
