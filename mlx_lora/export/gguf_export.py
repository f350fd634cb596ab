"""A fused model as one GGUF file (f32, f16, bf16, q8_0 or q4_0), for llama.cpp, Ollama,
LM Studio. The K-quants (q6_k, q5_k_m, q4_k_m) are llama.cpp's own quantisation of an f32
file written here (:func:`mlx_lora.export.llama_cpp_check.quantize_gguf`).

Written with the ``gguf`` package (llama.cpp's own writer) rather than mlx-lm's
``convert_to_gguf``, which needs transformers' slow tokenizer classes and writes a
SentencePiece ("llama") vocabulary even for byte-level BPE models such as SmolLM
and Llama 3 — a file llama.cpp would tokenise wrongly.

- Families: llama (Llama 2/3, Mistral), qwen2, qwen3, qwen3moe, gemma2, gemma3, phi3,
  smollm3; what differs between them (rotary permutation, Gemma's +1 on norms, their
  own keys, what llama.cpp hard-codes) is one row of :data:`~mlx_lora.export.gguf_families.FAMILIES`.
- Names: gguf-py's own map of Hugging Face names (``gguf.get_tensor_name_map``), so a
  name is what llama.cpp's converter would write.
- The permuted families' ``attn_q`` / ``attn_k`` rows are in llama.cpp's rotary layout
  (``w.reshape(n_head, 2, d/2, …).swapaxes(1, 2)``), the exact inverse of what the
  importer undoes — a round trip gives back every float16 bit.
- 2-D and 3-D weights in the chosen type, 1-D tensors (norms, biases) in float32, as
  llama.cpp's converter does; ``mx.load`` reads F16, Q8_0 and Q4_0 back.
- The vocabulary (:mod:`mlx_lora.export.gguf_vocab`): byte-level BPE or SentencePiece.
- ``general.*``: name, basename, finetune, size label, license, type — what llama.cpp's
  tools, LM Studio and Ollama show.
"""

from __future__ import annotations

from pathlib import Path

from mlx_lora.errors import UserError
from mlx_lora.export.gguf_families import FAMILIES, Family, head_dim, problems, rope_parameters
from mlx_lora.export.gguf_vocab import chat_template as _chat_template  # noqa: F401  (formats/gguf.py)
from mlx_lora.export.gguf_vocab import read_vocabulary, vocabulary, write_vocabulary  # noqa: F401

GGUF_ARCHS = {model_type: family.arch for model_type, family in FAMILIES.items()}  # mlx-lm → llama.cpp
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


def permute(x, n_head: int):
    """llama.cpp's rotary row order. ``x``: (rows, …) numpy, rows = n_head × head_dim."""
    rows, rest = x.shape[0], x.shape[1:]
    return x.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def family_of(config: dict) -> Family:
    """The model's :class:`~mlx_lora.export.gguf_families.Family`; a UserError naming
    what llama.cpp could not run."""
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise UserError(f"GGUF export writes {', '.join(sorted(FAMILIES))}, not {model_type!r}: "
                        "export --format mlx or hf instead")
    found = problems(model_type, config)
    if found:
        raise UserError(f"a {model_type} GGUF of this model would not compute it in llama.cpp: "
                        + "; ".join(found) + " — export --format mlx or hf instead")
    return FAMILIES[model_type]


def tensor_names(arch: str, n_layers: int):
    """``model.layers.3.self_attn.q_proj.weight`` → ``blk.3.attn_q.weight``, by gguf-py's
    own map of Hugging Face names (mlx-lm's stacked experts are ``mlp.switch_mlp.*``,
    transformers' ``mlp.experts.*``)."""
    import gguf

    arch_id = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)
    table = gguf.get_tensor_name_map(arch_id, n_layers)

    def name(key: str) -> str:
        found = table.get_name(key.replace(".switch_mlp.", ".experts."), try_suffixes=(".weight", ".bias"))
        if found is None:
            raise UserError(f"{key}: llama.cpp's {arch} has no tensor for this weight")
        return found
    return name


def gguf_name(name: str, arch: str = "llama", n_layers: int = 1000) -> str:
    """``model.layers.3.self_attn.q_proj.weight`` → ``blk.3.attn_q.weight``."""
    return tensor_names(arch, n_layers)(name)


def _common_keys(writer, config: dict, n_vocab: int) -> None:
    """What every family's file says (convert_hf_to_gguf.py's ``TextModel.set_gguf_parameters``)."""
    import gguf

    n_head = int(config["num_attention_heads"])
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    dim = head_dim(config)
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    rope = rope_parameters(config)
    writer.add_rope_dimension_count(int(dim * float(rope.get("partial_rotary_factor")
                                                     or config.get("partial_rotary_factor") or 1.0)))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = str(rope.get("rope_type") or "default").lower()
    if kind == "linear" and rope.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn" and rope.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif kind in ("longrope", "su"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(n_vocab)


def _general(writer, base_dir: Path, name: str, basename: str | None, finetune: str | None) -> None:
    """``general.*``: what llama.cpp, LM Studio and Ollama show — name, basename, finetune,
    size label, license (from the base's model card, read by gguf-py's ``Metadata``), type."""
    import gguf

    total, shared, experts, n_experts = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, base_dir, name, total)
    meta.name, meta.size_label = name, gguf.size_label(total, shared, experts, n_experts)
    meta.basename = basename or meta.basename
    meta.finetune = finetune or meta.finetune
    meta.set_gguf_meta_model(writer)
    writer.add_type(gguf.GGUFType.MODEL)


def write_gguf(model, config: dict, tokenizer, base_dir: Path, path: Path, *, quantize: int | str | None,
               eos_ids: set[int], name: str, basename: str | None = None, finetune: str | None = None) -> list[str]:
    """Write ``model`` (fused, float) to ``path`` as ``quantize`` (a --quantize value or one of
    :data:`WRITTEN_HERE`). ``name``/``basename``/``finetune``: ``general.*``. Returns notes
    for the model card."""
    import gguf
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    family = family_of(config)
    type_name = gguf_type(quantize)
    if type_name not in WRITTEN_HERE:
        raise UserError(f"{type_name} is written by llama.cpp's quantiser from an f32 GGUF, not here")
    kind = getattr(gguf.GGMLQuantizationType, type_name.upper())
    file_type = gguf.LlamaFileType.ALL_F32 if type_name == "f32" else \
        getattr(gguf.LlamaFileType, f"MOSTLY_{type_name.upper()}")
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    weights = dict(tree_flatten(model.parameters()))
    vocab = read_vocabulary(base_dir, int(weights["model.embed_tokens.weight"].shape[0]))
    if "add_space_prefix" in vocab and family.space_prefix is not None:
        vocab["add_space_prefix"] = family.space_prefix

    writer = gguf.GGUFWriter(str(path), family.arch)
    _common_keys(writer, config, len(vocab["tokens"]))
    for keys in family.keys:
        keys(writer, config)
    writer.add_file_type(file_type)
    if type_name.startswith("q"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    notes = write_vocabulary(writer, vocab, tokenizer, base_dir, eos_ids)

    names = tensor_names(family.arch, int(config["num_hidden_layers"]))
    for key, tensor in weights.items():
        if key == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        data = np.array(tensor.astype(mx.float32))
        if family.permute_qk and key.endswith("self_attn.q_proj.weight"):
            data = permute(data, n_head)
        elif family.permute_qk and key.endswith("self_attn.k_proj.weight"):
            data = permute(data, n_kv)
        if family.norm_shift and key.endswith("norm.weight"):
            data = data + family.norm_shift
        _add_tensor(writer, names(key), data, type_name, kind, key.startswith(("model.embed_tokens", "lm_head")))
    for tensor_name, data in family.tensors(config).items():
        writer.add_tensor(tensor_name, data)
    _general(writer, base_dir, name, basename, finetune)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return notes


def _add_tensor(writer, name: str, data, type_name: str, kind, embedding: bool) -> None:
    """1-D tensors (norms, biases) in float32, as llama.cpp's converter writes them; 2-D and
    3-D (stacked experts) in the file's type; rows not a multiple of 32 in float16."""
    import gguf
    import numpy as np

    if data.ndim == 1:
        writer.add_tensor(name, data.astype(np.float32))
    elif type_name == "f32":
        writer.add_tensor(name, data)
    elif type_name == "f16" or data.shape[-1] % 32:
        writer.add_tensor(name, data.astype(np.float16))
    elif type_name == "bf16":
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    else:
        # the embeddings / output head stay q8_0 in a q4_0 file (see fused._quantize)
        tensor_kind = gguf.GGMLQuantizationType.Q8_0 if embedding else kind
        writer.add_tensor(name, gguf.quants.quantize(data, tensor_kind), raw_dtype=tensor_kind)
