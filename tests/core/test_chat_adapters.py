"""Adapters on one base in memory: resolve run folders and checkpoints, attach (LoRA,
DoRA, full) exactly as mlx-lm's own loader does, switch off, switch over without
reloading the base, combine with weights, and refuse adapters that do not fit."""

from __future__ import annotations

import json
import shutil

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.adapters import (
    adapter_disabled, adapter_layers, apply_adapter, combine_adapters, installed_adapter, resolve_adapter,
)
from mlx_lora.chat import load_chat_model
from mlx_lora.errors import UserError
from tests.core.test_chat_helpers import ALL_LINEAR, make_adapter, tiny_run  # noqa: F401
from tests.tiny import make_tiny_model

TOKENS = [[1, 504, 3458, 314, 2722, 28, 6341, 30, 2, 198, 33, 44]]


def logits(model):
    import mlx.core as mx

    out = model(mx.array(TOKENS)).astype(mx.float32)
    mx.eval(out)
    return out


def reference_logits(base, adapter_dir):
    """mlx-lm's own load(base, adapter_path=…), in float32: the ground truth."""
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(base), adapter_path=str(adapter_dir))
    model.set_dtype(mx.float32)
    return logits(model)


def assert_close(a, b, atol=1e-4):
    import mlx.core as mx

    assert a.shape == b.shape
    diff = mx.abs(a - b).max().item()
    assert diff <= atol, diff


# ---- finding adapters ----------------------------------------------------------


def test_resolve_run_best_and_checkpoint(tiny_run, tmp_path):
    top = resolve_adapter(tiny_run)
    assert top.weights == tiny_run / "adapters.safetensors" and top.run_dir == tiny_run
    best = resolve_adapter(tiny_run / "best")
    assert best.weights == tiny_run / "best" / "adapters.safetensors"
    assert best.config_path == tiny_run / "adapter_config.json"  # one config, at the top of the run
    assert best.label == "tiny-run/best"
    step = resolve_adapter(tiny_run / "checkpoints" / "step-10")
    assert step.run_dir == tiny_run and step.label == "tiny-run/step-10"
    assert resolve_adapter(tiny_run / "best" / "adapters.safetensors").weights == best.weights
    assert top.base_model() == json.loads((tiny_run / "adapter_config.json").read_text())["model"]

    # a run still training (no final adapter) falls back to best/
    running = tmp_path / "running"
    shutil.copytree(tiny_run, running)
    (running / "adapters.safetensors").unlink()
    assert resolve_adapter(running).weights == running / "best" / "adapters.safetensors"


@pytest.mark.parametrize("what, message", [
    ("missing", "no such adapter"),
    ("empty", "no adapters.safetensors"),
    ("pickle", "expected a folder or an .safetensors"),
    ("no-config", "no adapter_config.json"),
    ("bad-type", "unknown fine_tune_type"),
])
def test_resolve_refuses_what_is_not_an_adapter(tmp_path, tiny_run, what, message):
    target = tmp_path / what
    if what == "empty":
        target.mkdir()
    elif what == "pickle":
        target = tmp_path / "adapters.bin"
        target.write_bytes(b"\x80\x04pickle")
    elif what == "no-config":
        target.mkdir()
        shutil.copy(tiny_run / "adapters.safetensors", target)
    elif what == "bad-type":
        shutil.copytree(tiny_run, target)
        config = json.loads((target / "adapter_config.json").read_text())
        (target / "adapter_config.json").write_text(json.dumps({**config, "fine_tune_type": "magic"}))
    with pytest.raises(UserError, match=message):
        resolve_adapter(target)


# ---- attaching: same numbers as mlx-lm's loader --------------------------------------


@pytest.mark.parametrize("kind", ["lora", "dora", "full"])
def test_apply_matches_mlx_lm_load_and_disabled_is_the_base(tiny_model, tmp_path, kind):
    adapter = make_adapter(tiny_model, tmp_path / kind, fine_tune_type=kind, keys=ALL_LINEAR, num_layers=1)
    chat = load_chat_model(tiny_model)
    base = logits(chat.model)

    installed = chat.use_adapter(adapter)
    tuned = logits(chat.model)
    assert installed.fine_tune_type == kind
    assert_close(tuned, reference_logits(tiny_model, adapter))
    assert not bool((abs(tuned - base) < 1e-3).all())  # the adapter does something

    with adapter_disabled(chat.model):
        assert_close(logits(chat.model), base, atol=0)
    assert_close(logits(chat.model), tuned, atol=0)
    chat.remove_adapter()
    assert_close(logits(chat.model), base, atol=0)
    assert not adapter_layers(chat.model)


def test_switching_checkpoints_reuses_the_base_and_the_lora_layers(tiny_run, tiny_model):
    chat = load_chat_model(adapter=tiny_run)
    q_proj = chat.model.layers[0].self_attn.q_proj
    base_linear = q_proj.linear

    chat.use_adapter(tiny_run / "checkpoints" / "step-10")
    assert chat.model.layers[0].self_attn.q_proj is q_proj  # same LoRA layer, new weights
    assert_close(logits(chat.model), reference_logits(tiny_model, _with_config(tiny_run, "checkpoints/step-10")))
    assert installed_adapter(chat.model).label == "tiny-run/step-10"

    chat.use_adapter(tiny_run / "best")
    assert_close(logits(chat.model), reference_logits(tiny_model, _with_config(tiny_run, "best")))
    assert chat.model.layers[0].self_attn.q_proj.linear is base_linear


def _with_config(run, sub):
    """mlx-lm's loader wants adapter_config.json beside the weights: give it a copy."""
    folder = run.parent / f"{run.name}-{sub.replace('/', '-')}"
    if not folder.exists():
        shutil.copytree(run / sub, folder)
        shutil.copy(run / "adapter_config.json", folder)
    return folder


def test_switching_to_another_rank_and_targets_rebuilds_on_the_same_base(tiny_run, tiny_model, tmp_path):
    chat = load_chat_model(adapter=tiny_run)
    base_q = chat.model.layers[1].self_attn.q_proj.linear
    other = make_adapter(tiny_model, tmp_path / "r4", rank=4, keys=["self_attn.q_proj", "mlp.down_proj"],
                         num_layers=1)

    chat.use_adapter(other)

    assert_close(logits(chat.model), reference_logits(tiny_model, other))
    assert chat.model.layers[1].self_attn.q_proj.linear is base_q  # the base layer object survived
    assert chat.model.layers[1].self_attn.q_proj.lora_a.shape == (64, 4)
    assert not hasattr(chat.model.layers[0].self_attn.q_proj, "lora_a")  # layer 0 no longer adapted
    assert not hasattr(chat.model.layers[1].self_attn.v_proj, "lora_a")


def test_adapter_from_another_base_is_refused_naming_tensor_and_shapes(tiny_model, tmp_path, tiny_run):
    wide = make_tiny_model(tmp_path / "wide", tiny_model, hidden_size=96, head_dim=24, num_attention_heads=4)
    foreign = make_adapter(wide, tmp_path / "foreign")
    chat = load_chat_model(adapter=tiny_run)
    before = logits(chat.model)

    with pytest.raises(UserError) as info:
        chat.use_adapter(foreign)

    message = str(info.value)
    assert "another base model" in message
    assert "model.layers.0.self_attn.q_proj.lora_a: the adapter's tensor has shape (96, 8)" in message
    assert "this model needs (64, 8)" in message
    # nothing half-loaded: the model is back to its base, not a mix
    assert chat.adapter is None and not adapter_layers(chat.model)
    with pytest.raises(AssertionError):
        assert_close(logits(chat.model), before)


def test_adapter_whose_config_and_tensors_disagree_is_refused(tiny_model, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "r8", rank=8)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["lora_parameters"]["rank"] = 16
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    chat = load_chat_model(tiny_model)
    with pytest.raises(UserError, match=r"lora_a: the adapter's tensor has shape \(64, 8\) but this model needs "
                                        r"\(64, 16\)"):
        chat.use_adapter(adapter)


def test_adapter_missing_tensors_is_refused_not_partly_loaded(tiny_model, tmp_path):
    import mlx.core as mx

    adapter = make_adapter(tiny_model, tmp_path / "partial")
    weights = dict(mx.load(str(adapter / "adapters.safetensors")))
    del weights["model.layers.1.self_attn.v_proj.lora_b"]
    mx.save_safetensors(str(adapter / "adapters.safetensors"), weights)
    chat = load_chat_model(tiny_model)
    with pytest.raises(UserError, match="model.layers.1.self_attn.v_proj.lora_b: missing from the adapter file"):
        chat.use_adapter(adapter)


def test_combining_adapters_is_the_weighted_sum_of_their_deltas(tiny_model, tmp_path):
    import mlx.core as mx

    a = make_adapter(tiny_model, tmp_path / "a", seed=11)
    b = make_adapter(tiny_model, tmp_path / "b", seed=12, rank=4, scale=10.0,
                     keys=["self_attn.q_proj", "mlp.up_proj"], num_layers=1)
    chat = load_chat_model(tiny_model)
    combined = combine_adapters(chat.model, [(a, 0.7), (b, 0.3)])
    got = logits(chat.model)
    assert combined.label == "0.7×a + 0.3×b"

    # the same sum done by hand on dense weights
    dense = load_chat_model(tiny_model).model
    for folder, weight in ((a, 0.7), (b, 0.3)):
        config = json.loads((folder / "adapter_config.json").read_text())
        scale = config["lora_parameters"]["scale"]
        tensors = mx.load(str(folder / "adapters.safetensors"))
        for name, lora_a in tensors.items():
            if name.endswith("lora_a"):
                module = name[: -len(".lora_a")]
                lora_b = tensors[module + ".lora_b"]
                layer = dict(dense.named_modules())[module]
                layer.weight = layer.weight + weight * scale * (lora_b.T @ lora_a.T)  # (out, in)
    assert_close(got, logits(dense), atol=1e-4)

    # one adapter at weight 1 is that adapter; a weight of 0 removes its effect
    combine_adapters(chat.model, [(a, 1.0)])
    alone = reference_logits(tiny_model, a)
    assert_close(logits(chat.model), alone)
    combine_adapters(chat.model, [(a, 1.0), (b, 0.0)])
    assert_close(logits(chat.model), alone)
    with adapter_disabled(chat.model):
        assert_close(logits(chat.model), logits(load_chat_model(tiny_model).model), atol=0)


def test_only_lora_adapters_combine(tiny_model, tmp_path):
    dora = make_adapter(tiny_model, tmp_path / "dora", fine_tune_type="dora")
    chat = load_chat_model(tiny_model)
    with pytest.raises(UserError, match="only LoRA adapters can be combined"):
        chat.combine_adapters([(dora, 0.5)])


def test_apply_adapter_on_a_quantised_base_keeps_it_quantised_on_request(tiny_model, tmp_path):
    import mlx.nn as nn

    adapter = make_adapter(tiny_model, tmp_path / "q", quantize_bits=4)
    chat = load_chat_model(tiny_model, compute_dtype="float32")
    assert not isinstance(chat.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    from mlx_lm.utils import load_model

    quantised, _ = load_model(tiny_model)
    nn.quantize(quantised, 32, 4, class_predicate=lambda _, m: hasattr(m, "to_quantized"))
    apply_adapter(quantised, adapter)
    assert isinstance(quantised.layers[0].self_attn.q_proj.linear, nn.QuantizedLinear)
    with adapter_disabled(quantised):
        assert isinstance(quantised.layers[0].self_attn.q_proj, nn.QuantizedLinear)
