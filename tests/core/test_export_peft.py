"""PEFT export: PEFT's names and shapes (A: r×in, B: out×r, from mlx-lm's in×r / r×out),
alpha/r == mlx-lm's scale, the adapted layers only; checked by PEFT's convention in
numpy always, and by peft itself on torch when a Python with torch+peft is configured."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlx_lora  # noqa: F401
from mlx_lora.adapters import resolve_adapter
from mlx_lora.errors import UserError
from mlx_lora.export import export_run
from mlx_lora.export.peft_export import check_peft_numpy, dense_deltas, peft_state_dict, write_peft
from mlx_lora.export.torch_check import ENV_PYTHON, torch_python
from tests.core.test_chat_helpers import make_adapter, tiny_run  # noqa: F401


@pytest.fixture(scope="module")
def peft_export(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("peft") / "adapter"
    return out, export_run(tiny_run, out, "peft")


def test_names_shapes_and_config_follow_peft(peft_export, tiny_run, tiny_model):
    import mlx.core as mx
    from safetensors.numpy import load_file

    out, _ = peft_export
    tensors = load_file(str(out / "adapter_model.safetensors"))
    expected = {f"base_model.model.model.layers.{i}.self_attn.{m}_proj.lora_{ab}.weight"
                for i in (0, 1) for m in ("q", "v") for ab in ("A", "B")}
    assert set(tensors) == expected
    mlx_weights = mx.load(str(tiny_run / "adapters.safetensors"))
    a = tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    assert a.shape == (8, 64) and b.shape == (32, 8)  # r×in, out×r (v: 2 kv heads × 16)
    assert np.array_equal(a, np.array(mlx_weights["model.layers.1.self_attn.v_proj.lora_a"]).T)
    assert np.array_equal(b, np.array(mlx_weights["model.layers.1.self_attn.v_proj.lora_b"]).T)

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 8 and config["lora_alpha"] / config["r"] == 20.0  # mlx-lm's scale
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["layers_to_transform"] == [0, 1]
    assert config["base_model_name_or_path"] == str(tiny_model)
    assert config["use_dora"] is False and config["bias"] == "none"


def test_the_numpy_check_passes_and_real_peft_runs_when_available(peft_export):
    _, result = peft_export
    numpy_check, torch_check_result = result.checks
    assert numpy_check.passed and numpy_check.max_abs_logit_diff < 1e-4 and numpy_check.top1_agreement == 1.0
    if torch_python() is None:
        # no torch here: recorded as not run, with how to turn it on — never counted as a pass of its own
        assert torch_check_result.status == "not run" and ENV_PYTHON in torch_check_result.problems[0]
    else:
        assert torch_check_result.status == "checked" and torch_check_result.passed
        assert torch_check_result.top1_agreement >= 0.99 and torch_check_result.max_abs_logit_diff < 1e-3


def _check(folder, tiny_model, files):
    results = []

    def compare(check, export_fn, thresholds, batch_size=4):
        from mlx_lora.chat import ChatSession, load_chat_model
        from mlx_lora.export import verify

        reference = load_chat_model(adapter=files.weights.parent, compute_dtype="float32")
        prompts = verify.prompt_token_ids(ChatSession(reference.model, reference.tokenizer), verify.PROMPTS[:4])
        results.append(verify.compare_logits(verify.reference_from_model(reference.model), export_fn, prompts,
                                             check, thresholds))

    check_peft_numpy(folder, tiny_model, files, compare)
    return results[0]


def test_the_numpy_check_catches_a_wrong_alpha_or_a_missing_transpose(tiny_run, tiny_model, tmp_path):
    from safetensors.numpy import load_file, save_file

    files = resolve_adapter(tiny_run)
    folder = tmp_path / "peft"
    folder.mkdir()
    write_peft(files, folder, "base")
    assert _check(folder, tiny_model, files).passed

    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": config["r"]}))  # alpha = r
    wrong_alpha = _check(folder, tiny_model, files)
    assert not wrong_alpha.passed and wrong_alpha.top1_agreement < 0.99

    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    save_file({**tensors, key: np.ascontiguousarray(tensors[key].T)}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(UserError, match=r"layers.0.self_attn.q_proj: lora_A \(64, 8\)"):
        _check(folder, tiny_model, files)


def test_dora_goes_out_with_its_magnitude_and_passes(tiny_model, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "dora", fine_tune_type="dora", num_layers=1)
    tensors, config = peft_state_dict(resolve_adapter(adapter))
    assert config["use_dora"] is True and config["layers_to_transform"] == [1]
    assert tensors["base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector"].shape == (64,)
    folder = tmp_path / "out"
    folder.mkdir()
    write_peft(resolve_adapter(adapter), folder, "base")
    assert _check(folder, tiny_model, resolve_adapter(adapter)).passed


def test_dense_deltas_follow_peft_forward_convention(tiny_run, tiny_model, tmp_path):
    """y = x Wᵀ + (alpha/r)·(x Aᵀ) Bᵀ, for random x, against mlx-lm's LoRA layer itself."""
    import mlx.core as mx

    from mlx_lora.chat import load_chat_model

    files = resolve_adapter(tiny_run)
    folder = tmp_path / "peft"
    folder.mkdir()
    write_peft(files, folder, "base")
    from mlx_lora.adapters import adapter_layers

    chat = load_chat_model(adapter=tiny_run, compute_dtype="float32")
    base = {f"{name}.weight": np.array(lora.linear.weight) for name, lora in adapter_layers(chat.model)}
    merged = dense_deltas(folder, base)
    layer = chat.model.layers[0].self_attn.q_proj
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    expected = np.array(layer(mx.array(x)))
    assert np.allclose(x @ merged["model.layers.0.self_attn.q_proj.weight"].T, expected, atol=1e-4)


def test_a_full_fine_tune_is_not_a_peft_adapter(tiny_model, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "full", fine_tune_type="full", num_layers=1)
    with pytest.raises(UserError, match="not an adapter"):
        peft_state_dict(resolve_adapter(adapter))
