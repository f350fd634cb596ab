"""``--format gguf-adapter``: the LoRA adapter in llama.cpp's GGUF adapter format — its
metadata and tensor layout read back with gguf-py, and llama.cpp itself loading base GGUF +
adapter GGUF and matching the fused GGUF's logits (the gguf extra; without it these FAIL,
saying how to install it, as in test_export_gguf_llama.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlx_lora  # noqa: F401
from mlx_lora.errors import UserError
from mlx_lora.export import export_run, llama_cpp_check
from mlx_lora.export.formats.gguf_adapter import ADAPTER_FILE, CHECK, FUSED_CHECK
from mlx_lora.export.gguf_export import permute
from tests.core.test_chat_helpers import make_adapter, tiny_run  # noqa: F401


@pytest.fixture(scope="module")
def adapter_export(tiny_run, tmp_path_factory):
    if not llama_cpp_check.available():
        pytest.fail("llama-cpp-python is not importable: run `make setup-gguf` (the gguf extra)")
    out = tmp_path_factory.mktemp("gguf-adapter") / "out"
    return out, export_run(tiny_run, out, "gguf-adapter")


def test_adapter_gguf_has_llama_cpps_metadata_names_and_orientation(tiny_run, tiny_model, tmp_path):
    import gguf
    from safetensors.numpy import load_file

    from mlx_lora.adapters import resolve_adapter
    from mlx_lora.export.formats.gguf_adapter import adapter_tensors, write_adapter_gguf

    base = json.loads((tiny_model / "config.json").read_text())
    tensors, alpha = adapter_tensors(resolve_adapter(tiny_run), base)
    write_adapter_gguf(tmp_path / ADAPTER_FILE, tensors, alpha, base, "tuned", "org/base")
    reader = gguf.GGUFReader(str(tmp_path / ADAPTER_FILE))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("general.type") == "adapter" and field("adapter.type") == "lora"
    assert field("general.architecture") == "llama"
    config = json.loads((tiny_run / "adapter_config.json").read_text())
    rank, scale = config["lora_parameters"]["rank"], config["lora_parameters"]["scale"]
    assert field("adapter.lora.alpha") == pytest.approx(scale * rank)
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert sorted(tensors) == [f"blk.{i}.{m}.weight.lora_{ab}" for i in (0, 1) for m in ("attn_q", "attn_v")
                               for ab in "ab"]
    mlx = load_file(str(tiny_run / "adapters.safetensors"))
    a, b = mlx["model.layers.1.self_attn.q_proj.lora_a"], mlx["model.layers.1.self_attn.q_proj.lora_b"]  # (in, r), (r, out)
    assert tensors["blk.1.attn_q.weight.lora_a"].shape == (rank, a.shape[0])  # numpy (r, in): ne [in, r]
    assert tensors["blk.1.attn_q.weight.lora_b"].shape == (b.shape[1], rank)  # numpy (out, r): ne [r, out]
    # llama.cpp's delta, (alpha / r) · B A, is mlx-lm's scale · (a b)ᵀ in the base GGUF's rotary row order
    delta = field("adapter.lora.alpha") / rank * tensors["blk.1.attn_q.weight.lora_b"] @ tensors["blk.1.attn_q.weight.lora_a"]
    expected = permute((scale * a.astype(np.float32) @ b.astype(np.float32)).T, base["num_attention_heads"])
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-6)
    v = mlx["model.layers.1.self_attn.v_proj.lora_b"].astype(np.float32)  # v is not rotated: no permutation
    np.testing.assert_array_equal(tensors["blk.1.attn_v.weight.lora_b"], v.T)


@pytest.mark.llama_cpp
def test_llama_cpp_runs_base_plus_adapter_gguf_as_the_fused_gguf(adapter_export):
    out, result = adapter_export
    assert result.passed and [c.check for c in result.checks] == [CHECK, FUSED_CHECK]
    on_base, against_fused = result.checks
    assert on_base.top1_agreement >= 0.99 and on_base.mean_abs_logit_diff < 0.05 * on_base.adapter_effect
    assert against_fused.top1_agreement >= 0.99 and against_fused.max_abs_logit_diff <= 0.25
    assert against_fused.mean_abs_logit_diff < 0.05 * against_fused.adapter_effect  # not the base: the adapter acts
    assert sorted(p.name for p in out.iterdir()) == ["README.md", ADAPTER_FILE, "verification.json"]
    card = (out / "README.md").read_text()
    assert f"--lora {ADAPTER_FILE}" in card and FUSED_CHECK in card


def test_dora_cannot_be_a_gguf_adapter(tiny_model, tmp_path):
    from mlx_lora.adapters import resolve_adapter
    from mlx_lora.export.formats.gguf_adapter import adapter_tensors

    folder = make_adapter(tiny_model, tmp_path / "dora", fine_tune_type="dora", num_layers=1)
    config = json.loads((tiny_model / "config.json").read_text())
    with pytest.raises(UserError, match="llama.cpp's adapters are LoRA only"):
        adapter_tensors(resolve_adapter(folder), config)
