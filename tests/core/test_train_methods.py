"""The fine-tuning methods on the tiny model (2 layers, hidden 64, 4 heads of 16, 2 KV heads,
MLP 128): which weights train, how many, their scale and their learning rate."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_lora import backend
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.train.batches import Example, make_batch
from mlx_lora.train.evaluate import MaskedLoss
from mlx_lora.train.prepare import prepare_model, resolve_targets
from mlx_lora.train.optim import Optimizer, learning_rate_at

# (in, out) of each linear layer of one tiny layer
LINEARS = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (64, 32), "self_attn.v_proj": (64, 32),
           "self_attn.o_proj": (64, 64), "mlp.gate_proj": (64, 128), "mlp.up_proj": (64, 128),
           "mlp.down_proj": (128, 64)}
ATTENTION = [k for k in LINEARS if k.startswith("self_attn")]


def lora_count(keys, rank, layers):
    return layers * sum(rank * (LINEARS[k][0] + LINEARS[k][1]) for k in keys)


def prepared(tiny_model, **settings):
    return prepare_model(TrainConfig().replace(model=str(tiny_model), **settings))


def test_lora_trains_rank_r_matrices_on_the_chosen_layers_only(tiny_model):
    p = prepared(tiny_model, rank=4, num_layers=1, targets=("attention",))
    assert p.trainable_parameters == lora_count(ATTENTION, 4, 1) == 1792
    names = [k for k, _ in tree_flatten(p.model.trainable_parameters())]
    assert all(n.startswith("model.layers.1.self_attn.") and n.rsplit(".", 1)[1] in ("lora_a", "lora_b")
               for n in names)
    assert p.adapter_config["lora_parameters"]["keys"] == sorted(ATTENTION)
    assert p.adapter_config["num_layers"] == 1


def test_all_linear_on_all_layers(tiny_model):
    p = prepared(tiny_model, rank=8, num_layers=-1)
    assert p.trainable_parameters == lora_count(LINEARS, 8, 2) == 16384
    assert p.total_parameters > 3_000_000  # the base (mostly the 49152 × 64 embedding) plus the adapter


def test_dora_adds_a_magnitude_per_output(tiny_model):
    p = prepared(tiny_model, fine_tune_type="dora", rank=8, num_layers=-1)
    magnitudes = 2 * sum(out for _, out in LINEARS.values())
    assert p.trainable_parameters == lora_count(LINEARS, 8, 2) + magnitudes
    assert type(p.model.layers[0].self_attn.q_proj).__name__ == "DoRALinear"


def test_full_fine_tuning_trains_every_weight_of_the_last_layers(tiny_model):
    p = prepared(tiny_model, fine_tune_type="full", num_layers=1)
    per_layer = sum(i * o for i, o in LINEARS.values()) + 2 * 64  # linears + two RMSNorm weights
    assert p.trainable_parameters == per_layer == 36992
    assert p.adapter_config["fine_tune_type"] == "full" and p.adapter_config["lora_parameters"] is None


def test_qlora_quantises_the_base_and_trains_the_same_adapter(tiny_model):
    import mlx_lm

    p = prepared(tiny_model, quantize_bits=4, quantize_group_size=32, rank=8, num_layers=-1)
    assert p.trainable_parameters == lora_count(LINEARS, 8, 2)
    assert any("quantised the base to 4-bit" in n for n in p.notes)
    # On CPU the quantised base is dequantised for the run, but its values are the 4-bit ones;
    # on a GPU it stays packed (the quantised matmul), holding the same 4-bit values.
    base, _ = mlx_lm.load(str(tiny_model))
    original = base.layers[0].self_attn.q_proj.weight
    layer = p.model.layers[0].self_attn.q_proj.linear
    if backend.device_kind() == "cpu":
        assert isinstance(layer, nn.Linear) and layer.weight.dtype == mx.float32
        trained_base = layer.weight
    else:
        assert isinstance(layer, nn.QuantizedLinear) and (layer.bits, layer.group_size) == (4, 32)
        trained_base = mx.dequantize(layer.weight, layer.scales, layer.biases, group_size=32, bits=4)
    assert not mx.allclose(trained_base, original.astype(trained_base.dtype)).item()
    expected = mx.dequantize(*mx.quantize(original, group_size=32, bits=4), group_size=32, bits=4)
    assert mx.allclose(trained_base, expected.astype(trained_base.dtype), atol=1e-6).item()


@pytest.mark.demo
def test_an_already_quantised_model_is_dequantised_for_cpu_only(demo_model):
    p = prepare_model(TrainConfig().replace(model=str(demo_model), num_layers=1, targets=("q",)))
    dequantised = any("dequantised the 4/8-bit base to float32" in n for n in p.notes)
    layer = p.model.layers[-1].self_attn.q_proj.linear
    if backend.device_kind() == "cpu":  # quantised matmuls on CPU do not go through BLAS
        assert dequantised and isinstance(layer, nn.Linear)
    else:  # on a GPU the 4-bit base is what saves the memory (QLoRA)
        assert not dequantised and isinstance(layer, nn.QuantizedLinear)
    assert p.trainable_parameters == 8 * (576 + 576)


def test_rslora_scales_by_alpha_over_sqrt_rank(tiny_model):
    plain = prepared(tiny_model, rank=4, alpha=16, targets=("q",))
    rs = prepared(tiny_model, rank=4, alpha=16, rslora=True, targets=("q",))
    assert plain.model.layers[0].self_attn.q_proj.scale == 16 / 4
    assert rs.model.layers[0].self_attn.q_proj.scale == 16 / math.sqrt(4)
    assert rs.adapter_config["lora_parameters"]["scale"] == 8.0


def test_targets_resolve_presets_and_names_and_refuse_unknown_ones(tiny_model):
    import mlx_lm

    layers = mlx_lm.load(str(tiny_model))[0].layers
    assert resolve_targets(layers, ("mlp",)) == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    assert resolve_targets(layers, ("all-linear",)) == sorted(LINEARS)
    assert resolve_targets(layers, ("v", "down_proj", "self_attn.k_proj")) == \
        ["mlp.down_proj", "self_attn.k_proj", "self_attn.v_proj"]
    with pytest.raises(UserError, match="'wobble' matches no linear layer.*q_proj"):
        resolve_targets(layers, ("wobble",))


def one_step_deltas(tiny_model, ratio):
    """|Δ| of lora_a and lora_b after one optimiser step at learning rate 1e-3."""
    config = TrainConfig().replace(model=str(tiny_model), targets=("q",), lora_plus_ratio=ratio,
                                   learning_rate=1e-3, lr_schedule="constant")
    p = prepare_model(config)
    model = p.model
    before = {k: mx.array(v) for k, v in tree_flatten(model.trainable_parameters())}
    optimizer = Optimizer(config)
    loss = MaskedLoss()
    example = Example(tuple(range(5, 25)), (False,) * 5 + (True,) * 15)
    _, grads = nn.value_and_grad(model, loss)(model, *map(mx.array, make_batch([example], [0])))
    optimizer.set_learning_rate(learning_rate_at(1, config, 10))
    optimizer.inner.update(model, grads)
    after = dict(tree_flatten(model.trainable_parameters()))
    delta = {k: mx.abs(after[k] - before[k]).max().item() for k in before}
    return ({k: v for k, v in delta.items() if k.endswith("lora_a")},
            {k: v for k, v in delta.items() if k.endswith("lora_b")})


def test_lora_plus_gives_the_b_matrices_a_higher_learning_rate(tiny_model):
    a_plain, b_plain = one_step_deltas(tiny_model, 1.0)
    a_plus, b_plus = one_step_deltas(tiny_model, 16.0)
    # B starts at zero, so A gets no gradient on the first step; Adam's first (bias-corrected)
    # step moves each weight by about the learning rate.
    assert max(a_plain.values()) == max(a_plus.values()) == 0.0
    for name in b_plain:
        assert b_plain[name] == pytest.approx(1e-3, rel=0.05)
        assert b_plus[name] == pytest.approx(16e-3, rel=0.05)


def test_grad_checkpoint_gives_the_same_loss_and_gradients(tiny_model):
    example = Example(tuple(range(5, 37)), (False,) * 8 + (True,) * 24)
    batch = list(map(mx.array, make_batch([example], [0])))
    results = []
    for checkpoint in (False, True):
        p = prepared(tiny_model, seed=3, grad_checkpoint=checkpoint)
        # make B non-zero so every adapter matrix has a gradient
        for layer in p.model.layers:
            layer.self_attn.q_proj.lora_b = mx.full(layer.self_attn.q_proj.lora_b.shape, 0.01)
        loss = MaskedLoss()
        (value, _), grads = nn.value_and_grad(p.model, loss)(p.model, *batch)
        results.append((value.item(), {k: np.array(v) for k, v in tree_flatten(grads)}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for name, grad in results[0][1].items():
        np.testing.assert_allclose(grad, results[1][1][name], rtol=1e-4, atol=1e-7)


def test_lora_products_run_in_the_compute_dtype_with_float32_weights(tiny_model):
    """bf16: A and B are cast inside the product (no float32 copy of each input kept for the
    backward), while the weights, their gradients and the saved adapter stay float32."""
    from mlx_lm.tuner.lora import LoRALinear

    from mlx_lora.methods.tensors.layers import CastLoRALinear

    p = prepared(tiny_model, seed=3, compute_dtype="bfloat16", num_layers=-1)
    q = p.model.layers[0].self_attn.q_proj
    assert type(q) is CastLoRALinear and isinstance(q, LoRALinear)
    assert q.lora_a.dtype == mx.float32 and q.linear.weight.dtype == mx.bfloat16
    example = Example(tuple(range(5, 37)), (False,) * 8 + (True,) * 24)
    batch = list(map(mx.array, make_batch([example], [0])))
    for layer in p.model.layers:
        layer.self_attn.q_proj.lora_b = mx.full(layer.self_attn.q_proj.lora_b.shape, 0.05)
    results = []
    for cls in (CastLoRALinear, LoRALinear):
        for layer in p.model.layers:
            layer.self_attn.q_proj.__class__ = cls
        (value, _), grads = nn.value_and_grad(p.model, MaskedLoss())(p.model, *batch)
        results.append((value.item(), dict(tree_flatten(grads))))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-2)
    for name, grad in results[0][1].items():
        assert grad.dtype == mx.float32
        assert float(mx.abs(grad - results[1][1][name]).max()) <= 0.05 * float(mx.abs(results[1][1][name]).max()) + 1e-6

    # the memory the backward keeps: one bf16 linear of 256, 4096 rows
    base = nn.Linear(256, 256)
    base.set_dtype(mx.bfloat16)
    layer = LoRALinear.from_base(base, r=16, scale=2.0)
    layer.freeze()
    layer.unfreeze(keys=["lora_a", "lora_b"])
    x = mx.random.normal((4096, 256)).astype(mx.bfloat16)
    mx.eval(layer.parameters(), x)
    peaks = []
    for cls in (LoRALinear, CastLoRALinear):
        layer.__class__ = cls
        mx.synchronize()
        held = mx.get_active_memory()
        mx.reset_peak_memory()
        mx.eval(nn.value_and_grad(layer, lambda m, h: m(h).astype(mx.float32).square().sum())(layer, x))
        peaks.append(mx.get_peak_memory() - held)
    assert peaks[1] < 0.75 * peaks[0], peaks


def test_the_learning_rate_schedule_warms_up_then_decays():
    config = TrainConfig().replace(learning_rate=1e-3, warmup_steps=4, lr_schedule="cosine", min_lr_ratio=0.1)
    at = [learning_rate_at(step, config, total_steps=14) for step in range(1, 15)]
    assert at[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # no update is wasted at 0
    assert at[4] == pytest.approx(1e-3)  # decay starts at the peak
    assert at[9] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert all(a >= b for a, b in zip(at[4:], at[5:])) and at[-1] > 1e-4
    linear = config.replace(lr_schedule="linear")
    assert learning_rate_at(10, linear, 14) == pytest.approx(1e-3 - 0.9e-3 * 5 / 10)
    assert learning_rate_at(9, config.replace(lr_schedule="constant"), 14) == 1e-3
