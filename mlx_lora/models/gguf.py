"""GGUF file → MLX model folder (config.json, model.safetensors, tokenizer).

``mlx.core.load(path, return_metadata=True)`` reads the tensors and metadata:
Q4_0/Q4_1/Q8_0 tensors arrive as MLX affine-quantised weight/scales/biases
(group 32), F16/F32 as they are. We keep that quantisation (the folder is a
QLoRA-ready base that ``mlx_lm.load`` opens) or dequantise it on request
(float16/bfloat16/float32, for LoRA on a full-precision base and for CPU).

Two llama.cpp conventions are undone here:
- llama-family attn_q / attn_k rows are permuted for llama.cpp's rotary layout
  (``convert_hf_to_gguf.py``: ``w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2)``);
  the inverse is ``reshape(n_head, d/2, 2, ...).swapaxes(1, 2)``. Quantisation
  runs along each row, so weight, scales and biases rows move together.
  Measured on the demo model: loss on an English sentence 1.38 un-permuted,
  2.55 left as stored, 4.88 permuted twice (the test checks the answer, Paris).
- the tokenizer is stored as vocabulary + merges + a pre-tokenizer name; we
  build a Hugging Face ``tokenizer.json`` with the ``tokenizers`` library.

Before ``mx.load`` sees a file, :mod:`mlx_lora.models.gguf_header` walks its
header (MLX's C reader trusts every length in it) and checks that it describes
a model this importer can build (head counts, token list, shapes).

Supported: the llama architecture family with byte-level BPE vocabularies
(llama 3, SmolLM, SmolLM3, Qwen2, Qwen3, Qwen3-MoE, Phi-3, Gemma 2/3, Mistral-Nemo-style) and SentencePiece ("llama" model:
Llama 2, Mistral) vocabularies, rebuilt to tokenise as llama.cpp does
(:mod:`mlx_lora.models.gguf_spm`).

Tensors: see :mod:`mlx_lora.models.gguf_tensors`. Q4_0/Q4_1/Q8_0 stay quantised (or
are dequantised exactly, in float32: :mod:`mlx_lora.models.dequant`); a file with
types MLX cannot hold (K-quants, Q5_*, BF16) is read by gguf-py and dequantised whole,
with the memory it will take said first (:func:`import_plan`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from mlx_lora import atomic
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import NullReporter, Progress, Reporter, never_stop
from mlx_lora.models.dequant import dequantize_exact
from mlx_lora.models.gguf_header import GGUFHeader, check_gguf, check_gguf_model, read_gguf_header
from mlx_lora.models.gguf_tensors import import_plan, read_dequantized

__all__ = ["SUPPORTED_ARCHS", "GGUFHeader", "build_tokenizer_files", "check_gguf", "check_gguf_model", "convert_weights",
           "dequantize_weights", "gguf_to_hf_config", "import_gguf", "import_plan", "read_gguf", "read_gguf_header"]

log = logging.getLogger(__name__)

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # qwen3
    "attn_k_norm": "self_attn.k_norm",
}
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# llama.cpp pre-tokenizer name -> the Hugging Face pre-tokenizer that matches it
# (regexes from llama.cpp's llama-vocab.cpp).
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


_PRE_TOKENIZERS = {
    "gpt2": _byte_level(True),
    "default": _byte_level(True),
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _byte_level(True)]},
    "starcoder": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _byte_level(True)]},
    "llama-bpe": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]},
    "llama3": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]},
    "qwen2": {"type": "Sequence", "pretokenizers": [_split(_QWEN2_REGEX), _byte_level(False)]},
}

SUPPORTED_ARCHS = frozenset({"llama", "mistral", "qwen2", "qwen3", "qwen3moe", "smollm3", "phi3", "gemma2", "gemma3"})
# llama.cpp architecture → (mlx-lm model_type, transformers class); others are the llama family
_MODEL_TYPES = {"qwen2": ("qwen2", "Qwen2ForCausalLM"), "qwen3": ("qwen3", "Qwen3ForCausalLM"),
                "smollm3": ("smollm3", "SmolLM3ForCausalLM"), "phi3": ("phi3", "Phi3ForCausalLM"),
                "gemma2": ("gemma2", "Gemma2ForCausalLM"), "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
                "qwen3moe": ("qwen3_moe", "Qwen3MoeForCausalLM")}
# Qwen3-MoE's router and stacked experts (mlx-lm's SwitchGLU holds them stacked too)
_MOE_NAMES = {"ffn_gate_inp": "mlp.gate", "ffn_gate_exps": "mlp.switch_mlp.gate_proj",
              "ffn_up_exps": "mlp.switch_mlp.up_proj", "ffn_down_exps": "mlp.switch_mlp.down_proj"}
# Gemma's four norms a block (llama.cpp's names for the two it adds)
_GEMMA_NAMES = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
                "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
_GEMMA_TYPES = ("gemma2", "gemma3_text")
# Phi-3 keeps q/k/v and gate/up fused, in llama.cpp's file and in mlx-lm's model alike
_PHI3_NAMES = {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}
# mlx-lm model_type → its layer names beyond the llama family's (_LAYER_NAMES)
_FAMILY_NAMES = {"phi3": _PHI3_NAMES, "gemma2": _GEMMA_NAMES, "gemma3_text": _GEMMA_NAMES, "qwen3_moe": _MOE_NAMES}
# llama.cpp's converter permutes q/k rows for these (the interleaved rotary layout)
_PERMUTED = ("llama", "smollm3")


def _scalar(value: Any) -> Any:
    """GGUF metadata scalars arrive as 0-d mx.arrays (arrays, such as Gemma 3's per-layer
    sliding-window pattern, as lists)."""
    if hasattr(value, "item"):
        return value.item() if getattr(value, "size", 1) == 1 else value.tolist()
    return value


def _checked_header(path: Path, check_model: bool) -> GGUFHeader:
    if not path.is_file():
        raise UserError(f"{path}: no such GGUF file")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise UserError(f"{path}: not a GGUF file (bad magic number)")
    # mx.load segfaults on some corrupt files (28 of 60 random corruptions here)
    header = read_gguf_header(path)
    if check_model:
        check_gguf_model(header, path, SUPPORTED_ARCHS)
    return header


def read_gguf(path: str | Path, check_model: bool = False) -> tuple[dict, dict]:
    """Load a GGUF file's tensors and metadata with ``mx.load``, with a clear error for a bad
    file; with ``check_model``, also for a header that describes no model the importer
    can build (:func:`~mlx_lora.models.gguf_header.check_gguf_model`). Tensors of types
    MLX cannot hold come back as float16 (see :mod:`mlx_lora.models.gguf_tensors`)."""
    import mlx.core as mx

    path = Path(path)
    _checked_header(path, check_model)
    try:
        weights, metadata = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises RuntimeError/ValueError for corrupt files
        raise UserError(f"{path}: cannot read this GGUF file: {exc}") from exc
    return weights, metadata


def gguf_to_hf_config(metadata: dict, has_output: bool) -> dict:
    arch = str(metadata.get("general.architecture", ""))
    if arch not in SUPPORTED_ARCHS:
        raise UserError(
            f"GGUF architecture {arch!r} is not supported yet (supported: {', '.join(sorted(SUPPORTED_ARCHS))})"
        )

    def meta(key: str, default=None):
        value = metadata.get(f"{arch}.{key}", default)
        return _scalar(value) if value is not None else None

    n_heads = int(meta("attention.head_count"))
    hidden = int(meta("embedding_length"))
    vocab = meta("vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    head_dim = meta("attention.key_length") or meta("rope.dimension_count") or hidden // n_heads
    model_type, architecture = _MODEL_TYPES.get(arch, ("llama", "LlamaForCausalLM"))
    config = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(meta("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(meta("attention.head_count_kv", n_heads)),
        "num_hidden_layers": int(meta("block_count")),
        "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta("context_length", 4096)),
        "vocab_size": int(vocab),
        "head_dim": int(head_dim),
        "tie_word_embeddings": not has_output,
        "hidden_act": "silu",
        "attention_bias": arch == "qwen2",
        "mlp_bias": False,
    }
    if arch == "smollm3":  # llama.cpp skips the rotary embedding on every 4th layer, with no key to say so
        config["no_rope_layer_interval"] = 4
    if arch in ("gemma2", "gemma3"):
        config.update(_gemma_config(arch, meta, config))
    if arch == "qwen3moe":  # experts in every layer, the chosen ones' weights renormalised: llama.cpp's qwen3moe
        config.update(num_experts=int(meta("expert_count")), num_experts_per_tok=int(meta("expert_used_count")),
                      moe_intermediate_size=int(meta("expert_feed_forward_length")), decoder_sparse_step=1,
                      mlp_only_layers=[], norm_topk_prob=True)
    if arch == "phi3":
        rotary = meta("rope.dimension_count")
        if rotary and int(rotary) != int(head_dim):
            config["partial_rotary_factor"] = int(rotary) / int(head_dim)
        original = meta("rope.scaling.original_context_length")
        config["original_max_position_embeddings"] = int(original or config["max_position_embeddings"])
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        value = metadata.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            config[key] = int(_scalar(value))
    return config


def _gemma_config(arch: str, meta: Callable[..., Any], config: dict) -> dict:
    """Gemma 2/3's keys, read as llama.cpp reads them (src/models/gemma2.cpp, gemma3.cpp): the
    attention scale is 1/sqrt(head_dim) except for the 27B (46 or 62 layers: 1/sqrt(hidden/heads))."""
    layers, hidden, heads = config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"]
    out: dict[str, Any] = {"hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
                           "query_pre_attn_scalar": hidden // heads if layers in (46, 62) else config["head_dim"],
                           "sliding_window": int(meta("attention.sliding_window", 4096))}
    if arch == "gemma2":
        out["attn_logit_softcapping"] = float(meta("attn_logit_softcapping", 50.0))
        out["final_logit_softcapping"] = float(meta("final_logit_softcapping", 30.0))
        return out
    if meta("final_logit_softcapping") is not None:
        out["final_logit_softcapping"] = float(meta("final_logit_softcapping"))
    out["rope_local_base_freq"] = float(meta("rope.freq_base_swa", 10000.0))
    pattern = meta("attention.sliding_window_pattern")
    sliding = [bool(x) for x in (pattern.tolist() if hasattr(pattern, "tolist") else pattern or [])]
    if sliding:  # every layer slides but each n-th: mlx-lm's sliding_window_pattern n
        n = sliding.index(False) + 1 if False in sliding else len(sliding) + 1
        if sliding != [(i + 1) % n != 0 for i in range(len(sliding))]:
            raise UserError(f"this Gemma 3's sliding-window layers ({sliding}) are not every layer but each n-th, "
                            "which mlx-lm's gemma3_text needs")
        out["sliding_window_pattern"] = n
    else:
        out["sliding_window_pattern"] = 6  # llama.cpp's default without the key
    if str(meta("rope.scaling.type", "")).lower() == "linear" and meta("rope.scaling.factor"):
        out["rope_scaling"] = {"rope_type": "linear", "factor": float(meta("rope.scaling.factor"))}
    return out


def _rope_freqs(weights: dict, config: dict, path: Path) -> None:
    """Llama 3's ``rope_freqs`` tensor becomes the config's ``rope_scaling`` (mlx-lm's Llama 3
    rotary computes the same factors from it); a tensor that no Llama 3 setting makes is refused."""
    import numpy as np

    from mlx_lora.models.rope import llama3_scaling

    factors = weights.pop("rope_freqs.weight", None)
    if factors is None:
        return
    scaling = llama3_scaling(np.array(factors, dtype=np.float32), config["rope_theta"], config["head_dim"])
    if scaling is None or config["model_type"] != "llama":
        raise UserError(f"{path}: its rope_freqs tensor is not Llama 3's rope scaling (factor, low/high 1/4, "
                        "context 8192); importing it would change the model")
    config["rope_scaling"] = scaling


def _unpermute(x, n_head: int):
    """Undo llama.cpp's rotary row permutation. ``x``: (rows, …) with rows = n_head * head_dim."""
    rows = x.shape[0]
    rest = x.shape[1:]
    # forward (llama.cpp): reshape(n_head, 2, d/2).swapaxes(1, 2); inverse: (n_head, d/2, 2).swapaxes(1, 2)
    return x.reshape(n_head, rows // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def convert_weights(weights: dict, config: dict) -> tuple[dict, dict]:
    """Rename GGUF tensors to Hugging Face / mlx-lm names, un-permute q/k.

    Returns (weights, per-module quantisation {module: {"bits", "group_size"}}).
    """
    import mlx.core as mx

    out: dict = {}
    quant: dict = {}
    n_heads = config["num_attention_heads"]
    n_kv = config["num_key_value_heads"]
    # llama.cpp's converter permutes q/k only for the llama family (LlamaModel), not qwen2
    permuted = config["model_type"] in _PERMUTED
    for name, tensor in weights.items():
        stem, _, suffix = name.rpartition(".")  # suffix: weight | scales | biases | bias
        parts = stem.split(".")
        if parts[0] == "blk":
            layer, kind = parts[1], parts[2]
            names = {**_LAYER_NAMES, **_FAMILY_NAMES.get(config["model_type"], {})}
            if kind not in names:
                log.debug("skipping GGUF tensor %s", name)
                continue
            module = f"model.layers.{layer}.{names[kind]}"
            if permuted and kind == "attn_q":
                tensor = _unpermute(tensor, n_heads)
            elif permuted and kind == "attn_k":
                tensor = _unpermute(tensor, n_kv)
        elif stem in _TOP_NAMES:
            module = _TOP_NAMES[stem]
        else:
            log.debug("skipping GGUF tensor %s", name)
            continue
        if config["model_type"] in _GEMMA_TYPES and module.endswith("norm") and suffix == "weight":
            # llama.cpp's Gemma norms compute x·w, mlx-lm's x·(1 + w): the converter wrote w + 1
            tensor = tensor.astype(mx.float32) - 1.0
        out[f"{module}.{suffix}"] = tensor
    for key, scales in out.items():
        if key.endswith(".scales"):
            module = key[: -len(".scales")]
            packed = out[f"{module}.weight"]
            # weight (out, in*bits/32), scales (out, in/group): with MLX's GGUF groups of 32,
            # bits = packed columns * 32 / (groups * 32).
            group_size = 32
            bits = packed.shape[-1] * 32 // (scales.shape[-1] * group_size)  # the last axis: stacked experts too
            quant[module] = {"group_size": group_size, "bits": bits}
    return out, quant


def dequantize_weights(weights: dict, quant: dict, dtype) -> dict:
    import mlx.core as mx

    out = {}
    for key, tensor in weights.items():
        module, _, suffix = key.rpartition(".")
        if module in quant and suffix in ("scales", "biases"):  # folded into the weight below
            continue
        if module in quant and suffix == "weight":  # a layer's own `bias` stays as it is
            q = quant[module]
            # in float32, exact (models/dequant.py), rounded once to dtype
            tensor = dequantize_exact(tensor, weights[f"{module}.scales"], weights[f"{module}.biases"],
                                      q["group_size"], q["bits"], dtype=dtype)
        out[key] = tensor.astype(dtype) if mx.issubdtype(tensor.dtype, mx.floating) else tensor
    return out


# llama.cpp's token types (llama_token_type): 0 undefined, 1 normal, 2 unknown,
# 3 control, 4 user-defined, 5 unused, 6 byte
_TOKEN_TYPES = range(0, 7)


def build_tokenizer_files(metadata: dict, where: str | Path = "the GGUF file") -> dict[str, str]:
    """The tokenizer files (name -> text) for a byte-level BPE GGUF vocabulary.
    (Types and lengths were checked with the header; the values are checked here.)"""
    model = str(metadata.get("tokenizer.ggml.model", ""))
    if model == "llama":  # SentencePiece (Llama 2, Mistral, Gemma…)
        from mlx_lora.models.gguf_spm import spm_tokenizer_files

        return spm_tokenizer_files(metadata, where)
    if model != "gpt2":
        raise UserError(
            f"GGUF tokenizer type {model!r} is not supported yet: byte-level BPE ('gpt2': Llama 3, SmolLM, "
            "Qwen2…) and SentencePiece ('llama': Llama 2, Mistral, Gemma…) vocabularies can be imported"
        )
    pre = str(metadata.get("tokenizer.ggml.pre", "default"))
    if pre not in _PRE_TOKENIZERS:
        log.warning("unknown GGUF pre-tokenizer %r: using GPT-2's", pre)
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    merges: list[str] = list(metadata.get("tokenizer.ggml.merges", []))
    token_types = metadata.get("tokenizer.ggml.token_type")
    token_types = [int(t) for t in token_types.tolist()] if token_types is not None else [1] * len(tokens)
    if len(token_types) != len(tokens) or not all(t in _TOKEN_TYPES for t in token_types):
        odd = next((t for t in token_types if t not in _TOKEN_TYPES), None)
        raise UserError(f"{where}: tokenizer.ggml.token_type holds {odd}, not a token type (0 to 6)" if odd is not None
                        else f"{where}: tokenizer.ggml.token_type has {len(token_types):,} entries for "
                             f"{len(tokens):,} tokens")
    if not all(isinstance(t, str) for t in tokens) or not all(isinstance(m, str) and " " in m for m in merges):
        raise UserError(f"{where}: the token list must hold strings and every merge two tokens with a space")

    def special_id(name: str) -> int | None:
        value = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return int(_scalar(value)) if value is not None else None

    # token type 3 = control, 4 = user-defined: added tokens that are never split
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": token_types[i] == 3}
        for i in range(len(tokens)) if token_types[i] in (3, 4)
    ]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _PRE_TOKENIZERS.get(pre, _PRE_TOKENIZERS["default"]),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }
    ids = {name: special_id(name) for name in ("bos", "eos", "padding", "unknown")}
    from mlx_lora.models.gguf_spm import tokenizer_file_texts

    return tokenizer_file_texts(tokenizer_json, tokens, ids, metadata, add_eos_token=False, add_bos_token=bool(
        _scalar(metadata.get("tokenizer.ggml.add_bos_token", False))))


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def import_gguf(
    gguf_path: str | Path,
    out_dir: str | Path,
    dequantize: str | None = None,
    reporter: Reporter = NullReporter(),
    should_stop: Callable[[], bool] = never_stop,
) -> Path:
    """Convert ``gguf_path`` into an MLX model folder at ``out_dir`` (written atomically).

    ``dequantize``: None keeps the file's quantisation; "float16", "bfloat16" or
    "float32" writes full-precision weights. ``should_stop`` is asked between the stages
    and before the folder is published: a cancelled import raises :class:`Cancelled` and
    leaves nothing at ``out_dir`` (nor a temporary beside it).
    """
    import mlx.core as mx

    def stage(message: str, done: int) -> None:
        if should_stop():
            raise Cancelled(f"import of {gguf_path.name} cancelled")
        reporter.emit(Progress("import-gguf", message, done, 3))

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    header = _checked_header(gguf_path, check_model=True)
    plan = import_plan(gguf_path, dequantize, header)
    stage(f"reading {gguf_path.name}", 0)  # (the memory it will take was said before: the CLI and the Models page)
    if plan.must_dequantize:  # K-quants, Q5_*, BF16…: read and dequantised by gguf-py, exactly
        metadata = read_gguf_header(gguf_path, values=True).metadata
        config = gguf_to_hf_config(metadata, has_output="output.weight" in header.tensors)
        tokenizer_files = build_tokenizer_files(metadata, gguf_path)  # fail early on an unsupported vocabulary
        weights = read_dequantized(gguf_path, header, plan.dequantize)
    else:
        weights, metadata = read_gguf(gguf_path)
        config = gguf_to_hf_config(metadata, has_output="output.weight" in weights)
        tokenizer_files = build_tokenizer_files(metadata, gguf_path)
    stage("converting tensors", 1)
    _rope_freqs(weights, config, gguf_path)
    weights, quant = convert_weights(weights, config)
    dequantize = plan.dequantize
    if dequantize:
        weights = dequantize_weights(weights, quant, getattr(mx, dequantize))
        config["torch_dtype"] = dequantize
    elif quant:
        # The commonest setting is the default; others are listed per module (mlx-lm's format).
        bits = [q["bits"] for q in quant.values()]
        default_bits = max(set(bits), key=bits.count)
        quantization: dict[str, Any] = {"group_size": 32, "bits": default_bits}
        for module, q in quant.items():
            if q["bits"] != default_bits:
                quantization[module] = q
        config["quantization"] = quantization
        config["quantization_config"] = quantization
        config["torch_dtype"] = "float16"
    generation_config = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    source = {
        "gguf": str(gguf_path.resolve()),
        "name": str(metadata.get("general.name", gguf_path.stem)),
        "license": str(metadata.get("general.license", "")),
        "sha256": _sha256(gguf_path),  # so an export can name the exact file its base came from
        "gguf_types": plan.types,
        "quantization": "dequantized to " + dequantize if dequantize else (
            f"{config['quantization']['bits']}-bit (group 32), as in the GGUF" if quant else "none"),
    }
    stage("writing the MLX folder", 2)
    with atomic.atomic_dir(out_dir) as tmp:
        # through a file object: given a path, mx.save_safetensors ignores write errors (a full
        # disk gives a short file and no error), and the folder would be published broken
        with open(tmp / "model.safetensors", "wb") as fh:
            mx.save_safetensors(fh, weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation_config, indent=2))
        for name, text in tokenizer_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "mlx_lora_source.json").write_text(json.dumps(source, indent=2))
        if should_stop():  # the last moment a cancel keeps the folder from appearing
            raise Cancelled(f"import of {gguf_path.name} cancelled")
    reporter.emit(Progress("import-gguf", "done", 3, 3))
    return out_dir
