"""A fused model as one GGUF file (f32, f16, bf16, q8_0 or q4_0), for llama.cpp, Ollama,
LM Studio. The K-quants (q6_k, q5_k_m, q4_k_m) are llama.cpp's own quantisation of an f32
file written here (:func:`mlx_lora.export.llama_cpp_check.quantize_gguf`).

Written with the ``gguf`` package (llama.cpp's own writer) rather than mlx-lm's
``convert_to_gguf``, which needs transformers' slow tokenizer classes and writes a
SentencePiece ("llama") vocabulary even for byte-level BPE models such as SmolLM
and Llama 3 — a file llama.cpp would tokenise wrongly.

- Names: the inverse of :mod:`mlx_lora.models.gguf`'s import table.
- llama-family ``attn_q`` / ``attn_k`` rows are permuted to llama.cpp's rotary
  layout (``convert_hf_to_gguf.py``: ``w.reshape(n_head, 2, d/2, …).swapaxes(1, 2)``),
  the exact inverse of what the importer undoes — a round trip gives back every
  float16 bit. Qwen2 files are not permuted (llama.cpp does not permute them).
- 2-D weights in the chosen type, 1-D tensors (norms, biases) in float32, as
  llama.cpp's converter does; ``mx.load`` reads F16, Q8_0 and Q4_0 back.
- The vocabulary: tokens by id (padded to the embedding's rows), token types
  (control for special added tokens), BPE merges, the pre-tokenizer's llama.cpp
  name, BOS/EOS/EOT/PAD ids, ``add_bos_token`` and the chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError

GGUF_ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
# --quantize value → the GGUF type (its name in the file name, lower case as llama.cpp's tools
# print it). 8 and 4 are the spellings --quantize had before the K-quants.
GGUF_TYPES: dict[int | str | None, str] = {None: "f16", "bf16": "bf16", 8: "q8_0", "q6_k": "q6_k",
                                           "q5_k_m": "q5_k_m", "q4_k_m": "q4_k_m", 4: "q4_0"}
WRITTEN_HERE = ("f32", "f16", "bf16", "q8_0", "q4_0")  # by gguf-py below; the others by llama.cpp
LLAMA_CPP_TYPES = tuple(t for t in GGUF_TYPES.values() if t not in WRITTEN_HERE)


def gguf_type(quantize: int | str | None) -> str:
    """The GGUF type name of a --quantize value (``None`` → f16, ``8`` → q8_0, "q4_k_m" …)."""
    if quantize in GGUF_TYPES:
        return GGUF_TYPES[quantize]
    if isinstance(quantize, str) and quantize.lower() in WRITTEN_HERE + LLAMA_CPP_TYPES:
        return quantize.lower()
    raise UserError(f"GGUF exports are {', '.join(GGUF_TYPES.values())}, not {quantize!r}")

_LAYER = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}
_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(name: str) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` → ``blk.3.attn_q.weight``."""
    stem, _, suffix = name.rpartition(".")
    if stem in _TOP:
        return f"{_TOP[stem]}.{suffix}"
    parts = stem.split(".")
    if parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in _LAYER:
        return f"blk.{parts[2]}.{_LAYER['.'.join(parts[3:])]}.{suffix}"
    raise UserError(f"{name}: no GGUF name for this tensor (only llama-family layouts are exported)")


def permute(x, n_head: int):
    """llama.cpp's rotary row order. ``x``: (rows, …) numpy, rows = n_head × head_dim."""
    rows, rest = x.shape[0], x.shape[1:]
    return x.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def _pre_tokenizer_name(tokenizer_json: dict) -> str | None:
    from mlx_lora.models.gguf import _PRE_TOKENIZERS  # the importer's table, read backwards

    pre = tokenizer_json.get("pre_tokenizer")
    for name, value in _PRE_TOKENIZERS.items():
        if value == pre:
            return name
    return None


def vocabulary(base_dir: Path, n_vocab: int) -> dict[str, Any]:
    """Tokens, types, merges and the pre-tokenizer of a byte-level BPE tokenizer.json."""
    path = base_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{base_dir}: no tokenizer.json: only byte-level BPE tokenizers can be written to GGUF")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise UserError("GGUF export supports byte-level BPE vocabularies (Llama 3, SmolLM, Qwen2…) only; "
                        "this tokenizer is a different kind — export --format mlx or hf instead")
    by_id: dict[int, tuple[str, int]] = {i: (tok, 1) for tok, i in model["vocab"].items()}  # 1 = normal
    for added in data.get("added_tokens") or []:
        by_id[added["id"]] = (added["content"], 3 if added.get("special") else 4)  # control / user-defined
    size = max(n_vocab, max(by_id) + 1)
    tokens = [by_id.get(i, (f"[PAD{i}]", 5))[0] for i in range(size)]  # 5 = unused
    types = [by_id.get(i, ("", 5))[1] for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": _pre_tokenizer_name(data)}


def _chat_template(base_dir: Path) -> str | None:
    config_path = base_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template and (base_dir / "chat_template.jinja").is_file():
        template = (base_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return template or None


def write_gguf(model, config: dict, tokenizer, base_dir: Path, path: Path, *, quantize: int | str | None,
               eos_ids: set[int], name: str) -> list[str]:
    """Write ``model`` (fused, float) to ``path`` as ``quantize`` (a --quantize value or one of
    :data:`WRITTEN_HERE`). Returns notes for the model card."""
    import gguf
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    model_type = config.get("model_type")
    if model_type not in GGUF_ARCHS:
        raise UserError(f"GGUF export supports the llama family ({', '.join(sorted(GGUF_ARCHS))}), "
                        f"not {model_type!r}: export --format mlx or hf instead")
    type_name = gguf_type(quantize)
    if type_name not in WRITTEN_HERE:
        raise UserError(f"{type_name} is written by llama.cpp's quantiser from an f32 GGUF, not here")
    arch = GGUF_ARCHS[model_type]
    kind = getattr(gguf.GGMLQuantizationType, type_name.upper())
    file_type = gguf.LlamaFileType.ALL_F32 if type_name == "f32" else \
        getattr(gguf.LlamaFileType, f"MOSTLY_{type_name.upper()}")
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    weights = dict(tree_flatten(model.parameters()))
    n_vocab = int(weights["model.embed_tokens.weight"].shape[0])
    vocab = vocabulary(base_dir, n_vocab)
    notes = []

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_vocab_size(len(vocab["tokens"]))
    writer.add_file_type(file_type)
    if type_name.startswith("q"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    if vocab["pre"] is None:
        notes.append("the tokenizer's pre-tokenizer has no llama.cpp name here: written as 'default' (GPT-2's)")
    writer.add_tokenizer_pre(vocab["pre"] or "default")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    eos = sorted(eos_ids)
    if hf.bos_token_id is not None:
        writer.add_bos_token_id(int(hf.bos_token_id))
    if eos:
        # the chat's end-of-turn token is what must stop generation
        end_of_turn = [i for i in eos if i != hf.eos_token_id] or eos
        writer.add_eos_token_id(int(hf.eos_token_id if hf.eos_token_id in eos else end_of_turn[0]))
        writer.add_eot_token_id(int(end_of_turn[0]))
    if hf.pad_token_id is not None:
        writer.add_pad_token_id(int(hf.pad_token_id))
    if hf.unk_token_id is not None:
        writer.add_unk_token_id(int(hf.unk_token_id))
    writer.add_add_bos_token(bool(getattr(hf, "add_bos_token", False)))
    template = _chat_template(base_dir)
    if template:
        writer.add_chat_template(template)
    else:
        notes.append("the base has no chat template: the GGUF has none either")

    permuted = arch == "llama"
    for key, tensor in weights.items():
        if key == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        data = np.array(tensor.astype(mx.float32))
        if permuted and key.endswith("self_attn.q_proj.weight"):
            data = permute(data, n_head)
        elif permuted and key.endswith("self_attn.k_proj.weight"):
            data = permute(data, n_kv)
        if data.ndim == 1:
            writer.add_tensor(gguf_name(key), data.astype(np.float32))
        elif type_name == "f32":
            writer.add_tensor(gguf_name(key), data)
        elif type_name == "f16" or data.shape[-1] % 32:
            writer.add_tensor(gguf_name(key), data.astype(np.float16))
        elif type_name == "bf16":
            writer.add_tensor(gguf_name(key), gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            # the embeddings / output head stay q8_0 in a q4_0 file (see fused._quantize)
            tensor_kind = gguf.GGMLQuantizationType.Q8_0 if key.startswith(("model.embed_tokens", "lm_head")) \
                else kind
            writer.add_tensor(gguf_name(key), gguf.quants.quantize(data, tensor_kind), raw_dtype=tensor_kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return notes
