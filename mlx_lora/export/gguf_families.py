"""What differs between the families in a GGUF file: one :class:`Family` per mlx-lm
``model_type``, read by :func:`mlx_lora.export.gguf_export.write_gguf`.

The reference is llama.cpp's own converter (``convert_hf_to_gguf.py`` and its
``conversion/`` modules, as vendored by llama-cpp-python 0.3.36) and its loaders
(``src/models/<arch>.cpp``). What a family can say:

- ``arch``: llama.cpp's architecture name (``general.architecture``).
- ``permute_qk``: llama.cpp runs these with its "normal" (interleaved) rotary layout, so
  the q/k rows are permuted from Hugging Face's half-split layout (``LlamaModel.permute``);
  the NEOX-rotary families (Qwen, Gemma, Phi-3) are written as they are.
- ``norm_shift``: added to every ``*norm.weight``: mlx-lm's Gemma norms compute
  x·(1 + w), llama.cpp's x·w (``GemmaModel.modify_tensors``: ``data_torch + 1``).
- ``keys``: the architecture's own metadata beyond the common keys.
- ``tensors``: tensors llama.cpp needs that the model does not hold (llama 3's rope_freqs).
- ``space_prefix``: ``tokenizer.ggml.add_space_prefix`` where the family fixes it
  (Gemma's SentencePiece: off, as ``Gemma2Model.set_vocab`` writes it).
- ``checks``: what llama.cpp hard-codes for the architecture; a model that differs would
  load and compute something else, so it is refused, by name, before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

Config = dict[str, Any]


def rope_parameters(config: Config, layer: str = "full_attention") -> dict[str, Any]:
    """The rotary settings of ``layer``'s attention: transformers 5's ``rope_parameters``
    (per layer type for Gemma 3) or the older ``rope_theta`` + ``rope_scaling``."""
    params = config.get("rope_parameters") or {}
    if layer in params or "sliding_attention" in params:
        params = params.get(layer) or {}
    merged = {"rope_theta": config.get("rope_theta", 10000.0), **(config.get("rope_scaling") or {}), **params}
    if "type" in merged and "rope_type" not in merged:
        merged["rope_type"] = merged["type"]
    return merged


def head_dim(config: Config) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


# ---- architecture keys -----------------------------------------------------------------


def _gemma2_keys(writer, config: Config) -> None:
    writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or 50.0))
    writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or 30.0))
    writer.add_sliding_window(int(config.get("sliding_window") or 4096))


def gemma3_sliding_layers(config: Config) -> list[bool]:
    """Which layers attend through the sliding window (transformers' ``layer_types``, or
    every layer but each ``sliding_window_pattern``-th)."""
    if config.get("layer_types"):
        return [kind == "sliding_attention" for kind in config["layer_types"]]
    pattern = int(config.get("sliding_window_pattern") or 6)
    return [(i + 1) % pattern != 0 for i in range(int(config["num_hidden_layers"]))]


def _gemma3_keys(writer, config: Config) -> None:
    if config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    writer.add_sliding_window(int(config.get("sliding_window") or 4096))
    # llama.cpp reads the per-layer pattern and the local layers' rope base when the file has
    # them (src/models/gemma3.cpp: load_swa_pattern, LLM_KV_ROPE_FREQ_BASE_SWA); else 6 and 10,000
    writer.add_sliding_window_pattern(gemma3_sliding_layers(config))
    local = ((config.get("rope_parameters") or {}).get("sliding_attention") or {}).get("rope_theta")
    writer.add_rope_freq_base_swa(float(local or config.get("rope_local_base_freq", 10000.0)))


def _phi3_keys(writer, config: Config) -> None:
    rope = rope_parameters(config)
    writer.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings")
                                             or config.get("original_max_position_embeddings")
                                             or config["max_position_embeddings"]))
    writer.add_sliding_window(int(config.get("sliding_window") or 0))  # 0: not Phi-4's windowed attention
    long_factors = rope.get("long_factor")
    if long_factors:
        scale = config["max_position_embeddings"] / rope["original_max_position_embeddings"]
        original = rope["original_max_position_embeddings"]
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)


def _moe_keys(writer, config: Config) -> None:
    writer.add_expert_count(int(config.get("num_local_experts") or config["num_experts"]))
    writer.add_expert_used_count(int(config["num_experts_per_tok"]))
    writer.add_expert_feed_forward_length(int(config["moe_intermediate_size"]))


# ---- tensors llama.cpp needs that the model does not hold ------------------------------------


def _llama3_rope_freqs(config: Config) -> dict[str, np.ndarray]:
    """Llama 3's frequency-dependent rope scaling as llama.cpp's ``rope_freqs`` tensor
    (``LlamaModel.generate_extra_tensors``; :mod:`mlx_lora.models.rope`)."""
    from mlx_lora.models.rope import llama3_rope_factors

    rope = rope_parameters(config)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return {}
    return {"rope_freqs.weight": llama3_rope_factors(rope, head_dim(config))}


def _phi3_rope_factors(config: Config) -> dict[str, np.ndarray]:
    rope = rope_parameters(config)
    if not rope.get("long_factor"):
        return {}
    return {"rope_factors_long.weight": np.array(rope["long_factor"], dtype=np.float32),
            "rope_factors_short.weight": np.array(rope["short_factor"], dtype=np.float32)}


# ---- what llama.cpp hard-codes ---------------------------------------------------------------


def _rope_type_known(config: Config) -> str | None:
    kind = str(rope_parameters(config).get("rope_type") or "default").lower()
    if kind not in ("default", "linear", "yarn", "llama3", "longrope", "su"):
        return f"its rope scaling {kind!r} has no llama.cpp form here"
    return None


def _smollm3_no_rope(config: Config) -> str | None:
    # src/models/smollm3.cpp: n_no_rope_layer_step = 4, with no GGUF key to say otherwise
    layers = [int(x) for x in config.get("no_rope_layers") or []]
    expected = [int((i + 1) % 4 != 0) for i in range(int(config["num_hidden_layers"]))]
    if layers and layers != expected:
        return (f"llama.cpp skips the rotary embedding on every 4th layer of a SmolLM3 (hard-coded), and this "
                f"model's no_rope_layers are {layers}")
    return None


def _gemma_attention_scale(config: Config) -> str | None:
    # llama.cpp: 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B (gemma2.cpp, gemma3.cpp)
    scalar = config.get("query_pre_attn_scalar")
    allowed = {head_dim(config)}
    if int(config["num_hidden_layers"]) in (46, 62):
        allowed.add(config["hidden_size"] // config["num_attention_heads"])
    if scalar is not None and int(scalar) not in allowed:
        return f"llama.cpp scales attention by 1/sqrt({head_dim(config)}), this model by 1/sqrt({scalar})"
    return None


def _qwen3_moe_layout(config: Config) -> str | None:
    if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step") or 1) != 1:
        return "llama.cpp's qwen3moe has experts in every layer; this model has dense layers too"
    if config.get("norm_topk_prob") is False:
        return "llama.cpp's qwen3moe renormalises the chosen experts' weights; this model does not"
    return None


@dataclasses.dataclass(frozen=True)
class Family:
    arch: str
    permute_qk: bool = False
    norm_shift: float = 0.0
    keys: tuple[Callable[[Any, Config], None], ...] = ()
    tensors: Callable[[Config], dict[str, np.ndarray]] = lambda config: {}
    checks: tuple[Callable[[Config], str | None], ...] = ()
    space_prefix: bool | None = None  # a SentencePiece vocabulary's add_space_prefix, when the family fixes it


# mlx-lm model_type → how it is written. Mistral is llama.cpp's llama (convert_hf_to_gguf:
# MistralForCausalLM → LlamaModel), as is every Llama 2/3.
_LLAMA = Family("llama", permute_qk=True, tensors=_llama3_rope_freqs)
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": Family("qwen2"),
    "qwen3": Family("qwen3"),
    "qwen3_moe": Family("qwen3moe", keys=(_moe_keys,), checks=(_qwen3_moe_layout,)),
    "gemma2": Family("gemma2", norm_shift=1.0, keys=(_gemma2_keys,), checks=(_gemma_attention_scale,),
                     space_prefix=False),
    "gemma3_text": Family("gemma3", norm_shift=1.0, keys=(_gemma3_keys,),
                          checks=(_gemma_attention_scale,), space_prefix=False),
    "phi3": Family("phi3", keys=(_phi3_keys,), tensors=_phi3_rope_factors),
    "smollm3": Family("smollm3", permute_qk=True, checks=(_smollm3_no_rope,)),
}


def problems(model_type: str, config: Config) -> list[str]:
    """Why llama.cpp would not compute this model (empty: it would)."""
    family = FAMILIES[model_type]
    return [p for check in (_rope_type_known, *family.checks) if (p := check(config))]
