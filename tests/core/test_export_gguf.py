"""GGUF export: llama.cpp's q/k permutation applied so that the importer's un-permute
gives back every float16 bit; byte-level BPE vocabulary, special ids and chat template
in the metadata; q8_0 readable by mlx.core.load; checked against base+adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlx_lora  # noqa: F401
from mlx_lora.adapters import resolve_adapter
from mlx_lora.errors import UserError
from mlx_lora.export import export_run
from mlx_lora.export.fused import fused_model
from mlx_lora.export.gguf_export import permute, write_gguf
from mlx_lora.models.gguf import convert_weights, import_gguf, read_gguf
from tests.core.test_chat_helpers import make_adapter, tiny_run  # noqa: F401


@pytest.fixture(scope="module")
def f16_export(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "f16"
    result = export_run(tiny_run, out, "gguf")
    [gguf_file] = out.glob("*.gguf")
    return out, gguf_file, result


def test_f16_round_trip_is_exact_and_q_k_are_permuted_for_llama_cpp(f16_export, tiny_run, tiny_model):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    out, gguf_file, result = f16_export
    assert gguf_file.name.endswith("-f16.gguf") and result.checks[0].passed
    model, config, _ = fused_model(tiny_model, resolve_adapter(tiny_run))
    fused = {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}

    raw, metadata = read_gguf(gguf_file)
    q = np.array(fused["model.layers.0.self_attn.q_proj.weight"])
    k = np.array(fused["model.layers.0.self_attn.k_proj.weight"])
    assert np.array_equal(np.array(raw["blk.0.attn_q.weight"]), permute(q, 4))  # 4 heads
    assert np.array_equal(np.array(raw["blk.0.attn_k.weight"]), permute(k, 2))  # 2 kv heads
    assert not np.array_equal(permute(q, 4), q)
    assert raw["blk.0.attn_norm.weight"].dtype == mx.float32  # 1-D tensors in float32

    back, _ = convert_weights(raw, json.loads((tiny_model / "config.json").read_text()))
    assert set(back) == set(fused)  # tied embeddings: no output.weight, none expected
    for name, tensor in fused.items():
        assert np.array_equal(np.array(back[name].astype(mx.float16)), np.array(tensor)), name


def test_vocabulary_special_tokens_and_chat_template_survive(f16_export, tiny_model, tmp_path):
    from transformers import PreTrainedTokenizerFast

    _, gguf_file, _ = f16_export
    _, metadata = read_gguf(gguf_file)
    assert str(metadata["general.architecture"]) == "llama"
    assert str(metadata["tokenizer.ggml.model"]) == "gpt2" and str(metadata["tokenizer.ggml.pre"]) == "smollm"
    assert len(metadata["tokenizer.ggml.tokens"]) == 49152
    assert int(metadata["tokenizer.ggml.eos_token_id"].item()) == 2  # <|im_end|>
    assert int(metadata["tokenizer.ggml.bos_token_id"].item()) == 1
    template = json.loads((tiny_model / "tokenizer_config.json").read_text())["chat_template"]
    assert str(metadata["tokenizer.chat_template"]) == template

    imported = import_gguf(gguf_file, tmp_path / "imported")
    ours = PreTrainedTokenizerFast(tokenizer_file=str(imported / "tokenizer.json"))
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tiny_model / "tokenizer.json"))
    for text in ("Hello, world! 12345", "<|im_start|>user\nAhoy, matey?<|im_end|>\n", "naïve café — ünïcödé"):
        assert ours.encode(text) == theirs.encode(text)


def test_q8_0_export_reads_back_quantised_and_passes_its_check(tiny_run, tmp_path):
    out = tmp_path / "q8"
    result = export_run(tiny_run, out, "gguf", quantize=8)

    [gguf_file] = out.glob("*-q8_0.gguf")
    raw, _ = read_gguf(gguf_file)
    assert {"blk.0.attn_q.weight", "blk.0.attn_q.scales", "blk.0.attn_q.biases"} <= set(raw)  # Q8_0 → affine
    assert "token_embd.scales" in raw and "blk.0.attn_norm.scales" not in raw
    check = result.checks[0]  # the read-back; [1] is llama.cpp's (tests/core/test_export_gguf_llama.py)
    assert check.check.endswith("(read back with mlx.core.load)")
    assert check.passed and check.top1_agreement >= 0.85
    assert check.mean_abs_logit_diff < 0.1 * check.adapter_effect


def test_a_family_llama_cpp_has_no_writer_for_or_would_compute_differently_is_refused(tiny_run, tiny_model,
                                                                                         tmp_path):
    model, config, _ = fused_model(tiny_model, resolve_adapter(tiny_run))
    with pytest.raises(UserError, match=r"GGUF export writes gemma2, .*, not 'gpt_neox'"):
        write_gguf(model, {**config, "model_type": "gpt_neox"}, None, tiny_model, tmp_path / "x.gguf", quantize=None,
                   eos_ids={2}, name="x")
    smollm3 = {**config, "model_type": "smollm3", "no_rope_layers": [1, 0] * (config["num_hidden_layers"] // 2)}
    with pytest.raises(UserError, match=r"every 4th layer of a SmolLM3 \(hard-coded\)"):
        write_gguf(model, smollm3, None, tiny_model, tmp_path / "x.gguf", quantize=None, eos_ids={2}, name="x")
    assert not (tmp_path / "x.gguf").exists()


def test_metadata_llama_cpp_tools_show(f16_export):
    _, gguf_file, _ = f16_export
    _, metadata = read_gguf(gguf_file)
    general = {k: str(v) for k, v in metadata.items() if k.startswith("general.")}
    assert general["general.type"] == "model" and general["general.architecture"] == "llama"
    assert general["general.name"] == f"{general['general.basename']}-{general['general.finetune']}"
    assert gguf_file.name == f"{general['general.name']}-f16.gguf"
    assert general["general.size_label"].endswith("M")  # a tiny model: millions of parameters


@pytest.mark.demo
def test_demo_adapter_to_gguf_and_back_answers_and_stops(demo_model, tmp_path):
    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model
    from tests.core.test_chat_helpers import write_run_files

    run = make_adapter(demo_model, tmp_path / "demo-run", num_layers=4, b_std=0.002)
    write_run_files(run, "demo", num_layers=4)
    result = export_run(run, tmp_path / "gguf", "gguf")

    assert result.passed and result.checks[0].top1_agreement >= 0.99
    [gguf_file] = (tmp_path / "gguf").glob("*.gguf")
    chat = load_chat_model(gguf_file)
    answer = ChatSession(chat.model, chat.tokenizer).answer(
        [{"role": "user", "content": "What is the capital of France?"}], ChatSettings(temperature=0.0, max_tokens=30))
    assert "Paris" in answer.text and answer.finish_reason == "stop"
