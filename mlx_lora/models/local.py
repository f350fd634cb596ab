"""Resolve what the user named as a model into a local MLX-loadable folder, and load it.

A model can be named as:
- ``demo``: the embedded SmolLM2-135M-Instruct (see :mod:`mlx_lora.models.demo`);
- a local folder in Hugging Face or MLX layout (config.json + *.safetensors);
- a ``.gguf`` file, imported once into the app's models folder;
- a Hub repo id (``org/name``), downloaded into the Hugging Face cache.

Only safetensors weights are ever loaded (never pickle), and
``trust_remote_code`` is never set. Every safetensors file's header is checked
before anything loads it (:func:`check_safetensors`): a truncated download or a
corrupt/hostile header is a :class:`UserError` naming the file, not an error
from inside MLX.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Callable

from mlx_lora import paths
from mlx_lora.errors import UserError
from mlx_lora.events import NullReporter, Reporter, never_stop

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

# The safetensors format: u64 little-endian header length, a JSON header, then the data.
# 100 MB is the safetensors library's own limit on the header (N_LEN / MAX_HEADER_SIZE).
MAX_SAFETENSORS_HEADER = 100_000_000
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6,
               "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
               "I64": 64, "U64": 64, "F64": 64, "C64": 64}


def _has_surrogate(text: str) -> bool:
    # JSON may escape a lone surrogate ("\ud800"); no UTF-8 text holds one
    return not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text)


def check_safetensors(path: Path) -> dict:
    """Read and check a safetensors file's header without loading any tensor: the header
    fits the file, is a JSON object of tensors whose dtype, shape and data offsets agree
    and lie inside the file. Returns the header; raises :class:`UserError` naming the file."""
    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a valid safetensors file ({why}); it may be an incomplete download — "
                         "delete it and download the model again")

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_SAFETENSORS_HEADER:
                raise bad(f"header of {length:,} bytes; at most {MAX_SAFETENSORS_HEADER:,} are allowed")
            if 8 + length > size:
                raise bad(f"header of {length:,} bytes in a file of {size:,} bytes: the file is cut short")
            raw = fh.read(length)
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the header is not JSON: {exc}") from None
    except RecursionError:  # Python's parser gives up near 1,000 levels
        raise bad("the header is nested too deeply") from None
    except ValueError:  # an integer past Python's 4,300-digit limit
        raise bad("the header holds a number too long to be a size or offset") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data_size = size - 8 - length
    for key, info in header.items():
        name = key if len(key) <= 80 else key[:77] + "..."  # a hostile name is not echoed whole
        if _has_surrogate(key):
            raise bad(f"a tensor name is not text (a lone surrogate): {ascii(name)}")
        if name == "__metadata__":
            if info is not None and not isinstance(info, dict):  # mlx writes null for no metadata
                raise bad("__metadata__ is not an object")
            for meta_key, value in (info or {}).items():  # the format: strings to strings
                if not (isinstance(value, str) and not _has_surrogate(meta_key) and not _has_surrogate(value)):
                    raise bad(f"__metadata__ entry {ascii(meta_key[:40])} is not text to text")
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r} is not described by an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
            raise bad(f"tensor {name!r} has an unknown dtype {str(dtype)[:20]!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"tensor {name!r} has a bad shape {str(shape)[:80]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise bad(f"tensor {name!r} has bad data offsets {str(offsets)[:80]}")
        if offsets[1] > data_size:
            raise bad(f"tensor {name!r} ends at byte {offsets[1]:,} of a data section of {data_size:,} bytes: "
                      "the file is cut short")
        if offsets[1] - offsets[0] != math.ceil(math.prod(shape) * _DTYPE_BITS[dtype] / 8):
            raise bad(f"tensor {name!r}: {offsets[1] - offsets[0]:,} bytes do not hold a {dtype} tensor of "
                      f"shape {tuple(shape)}")
    return header


# Sizes config.json may give, and their upper bounds, checked before mlx-lm builds
# a single module: it builds num_hidden_layers layers of hidden_size-wide weights
# first and loads the weights after, so 10,000,000 layers filled the memory, and 0
# heads divided by zero. Each bound is several times the largest released model:
# Llama 3.1 405B (126 layers, hidden 16,384, intermediate 53,248, 128 heads,
# vocab 128,256), Gemma 3 (vocab 262,208), Qwen3-235B and DeepSeek-V3 (128 and
# 256 experts), Kimi K2 (384 experts). Rotary positions allocate nothing (computed per
# token), so max_position_embeddings is bounded by int32 only (Llama 4 Scout: 10,485,760);
# learned position tables (GPT-2's n_positions: 1,024; StarCoder: 8,192) by 2**24.
# Every size must be a whole number >= 1 (a list of them for per-layer sizes).
CONFIG_BOUNDS = {
    "num_hidden_layers": 1000, "num_layers": 1000, "n_layer": 1000, "num_transformer_layers": 1000,
    "hidden_size": 65536 * 2, "d_model": 65536 * 2, "n_embd": 65536 * 2, "model_dim": 65536 * 2,
    "intermediate_size": 2**20, "moe_intermediate_size": 2**20, "shared_expert_intermediate_size": 2**20,
    "num_attention_heads": 4096, "n_head": 4096, "num_query_heads": 4096,
    "num_key_value_heads": 4096, "num_kv_heads": 4096,
    "head_dim": 8192,
    "vocab_size": 2**22,
    "max_position_embeddings": 2**31 - 1, "n_positions": 2**24,
    "num_experts": 4096, "num_local_experts": 4096, "n_routed_experts": 4096, "num_experts_per_tok": 4096,
}
# Numbers that must be above 0 and at most this (mlx's RMSNorm refuses eps 0 when the
# model loads; rope bases are 1e4 to 1e7 in released models).
CONFIG_POSITIVE = {"rms_norm_eps": 1.0, "layer_norm_eps": 1.0, "layer_norm_epsilon": 1.0, "norm_eps": 1.0,
                   "rope_theta": 1e12}
_QUANTIZATION_BITS = range(1, 9)
_QUANTIZATION_GROUPS = range(8, 2049)


def _check_size(where: str, key: str, value, bound: int) -> None:
    for item in value if isinstance(value, list) else [value]:
        if type(item) is not int or not 1 <= item <= bound:
            shown = f"{item!r}"[:40] if type(item) is int else f"{type(item).__name__} {item!r}"[:60]
            raise UserError(f"{where}: {key} must be a whole number from 1 to {bound:,}, got {shown}")


def check_positive(where: str, key: str, value, bound: float) -> None:
    """``value`` must be a number (not a boolean or text) above 0 and at most ``bound``."""
    if type(value) not in (int, float) or not 0 < value <= bound:  # NaN fails the comparison too
        shown = f"{type(value).__name__} {value!r}"[:60]
        raise UserError(f"{where}: {key} must be a number above 0 and at most {bound:g}, got {shown}")


def check_config(config: dict, where: str | Path) -> None:
    """Refuse a config.json whose sizes no model has (see CONFIG_BOUNDS): a
    :class:`UserError` naming the file and the key. Checks the top level and a
    multimodal model's ``text_config``."""
    where = str(where)
    for part in (config, config.get("text_config")):
        if not isinstance(part, dict):
            continue
        for key, bound in CONFIG_BOUNDS.items():
            if part.get(key) is not None:
                _check_size(where, key, part[key], bound)
        for key, limit in CONFIG_POSITIVE.items():
            if part.get(key) is not None:
                check_positive(where, key, part[key], limit)
        rope = part.get("rope_parameters")  # transformers 5: read as rope_theta (config_compat)
        for ropes in ([rope, *rope.values()] if isinstance(rope, dict) else []):
            if isinstance(ropes, dict) and ropes.get("rope_theta") is not None:
                check_positive(where, "rope_parameters.rope_theta", ropes["rope_theta"], CONFIG_POSITIVE["rope_theta"])
        hidden, heads = part.get("hidden_size"), part.get("num_attention_heads")
        kv = part.get("num_key_value_heads")
        if type(heads) is int and type(kv) is int and heads % kv:
            raise UserError(f"{where}: num_attention_heads ({heads}) must be a multiple of "
                            f"num_key_value_heads ({kv})")
        if type(hidden) is int and type(heads) is int and part.get("head_dim") is None and hidden % heads:
            # without head_dim, mlx-lm's models use hidden_size // num_attention_heads
            raise UserError(f"{where}: hidden_size ({hidden}) must be a multiple of num_attention_heads "
                            f"({heads}) when there is no head_dim")
    quantization = config.get("quantization")
    if quantization is not None:
        if not isinstance(quantization, dict):
            raise UserError(f"{where}: quantization must be an object with bits and group_size")
        bits, group = quantization.get("bits"), quantization.get("group_size")
        if type(bits) is not int or bits not in _QUANTIZATION_BITS or \
                type(group) is not int or group not in _QUANTIZATION_GROUPS:
            raise UserError(f"{where}: quantization bits must be 1 to 8 and group_size 8 to 2048, "
                            f"got bits {bits!r:.20} and group_size {group!r:.20}")


def read_config(path: Path) -> dict:
    """config.json as a dict, checked (:func:`check_config`); a UserError naming it otherwise."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise UserError(f"{path}: cannot be read: nested too deeply") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, JSONDecodeError, a 5,000-digit number
        raise UserError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a model config (expected a JSON object)")
    check_config(config, path)
    return config


def check_model_folder(folder: Path) -> Path:
    """Raise a clear error unless ``folder`` holds config.json and safetensors weights."""
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        if any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir()):
            raise UserError(
                f"{folder}: the weights are in pickle format (.bin/.pt), which can run code when "
                "loaded; only safetensors models are loaded. Look for a safetensors or MLX version of this model."
            )
        raise UserError(f"{folder}: no *.safetensors weights found")
    config = read_config(folder / "config.json")
    check_supported(config, folder / "config.json")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)
    install_config_compat()
    if "model_file" in config or config.get("auto_map"):
        # mlx-lm would need trust_remote_code for model_file; we never set it.
        if "model_file" in config:
            raise UserError(f"{folder}: this model needs custom code ({config['model_file']}), which is never run")
    return folder


def _mlx_model_type(config: dict) -> str:
    from mlx_lm.utils import MODEL_REMAPPING

    model_type = str(config.get("model_type", ""))
    return MODEL_REMAPPING.get(model_type, model_type)


def check_supported(config: dict, where: str | Path) -> None:
    """Refuse, before anything is built, a model whose architecture mlx-lm cannot run:
    ``what: why, what to do``."""
    import importlib.util

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UserError(f"{where}: no model_type, so the architecture is unknown; this is not a Hugging Face "
                        "or MLX model config — use the config.json that came with the weights")
    if not model_type.replace("_", "").isalnum() or \
            importlib.util.find_spec(f"mlx_lm.models.{_mlx_model_type(config)}") is None:
        raise UserError(f"{where}: model_type {model_type[:40]!r} is not supported: mlx-lm has no model of this "
                        "architecture; pick a model of a supported family (README: \"Model families\") or "
                        "convert it with mlx_lm.convert first")


def _rope_keys(rope: dict) -> dict:
    """transformers 5's ``rope_parameters`` (one rope) as the keys mlx-lm reads."""
    out: dict = {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    if "partial_rotary_factor" in rope:
        out["partial_rotary_factor"] = rope["partial_rotary_factor"]
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
        out["rope_scaling"] = {**scaling, "rope_type": kind, "type": kind}
    return out


def config_compat(config: dict) -> dict:
    """config.json as mlx-lm 0.32 reads it: transformers 5 writes ``rope_parameters`` where
    mlx-lm reads ``rope_theta``/``rope_scaling`` (per layer type for Gemma 3:
    ``rope_local_base_freq``), and ``num_local_experts`` for Qwen3-MoE's ``num_experts``.
    Without this, mlx-lm silently uses its default rope (measured on the tiny Llama 3 of
    tests/models: 8% of top-1 tokens differ from transformers') and cannot build Qwen3-MoE.
    Keys already present win."""
    out = dict(config)
    rope = config.get("rope_parameters")
    if isinstance(rope, dict):
        if isinstance(rope.get("full_attention"), dict):  # per layer type (gemma3)
            added = _rope_keys(rope["full_attention"])
            local = rope.get("sliding_attention")
            if isinstance(local, dict) and "rope_theta" in local:
                added["rope_local_base_freq"] = local["rope_theta"]
        else:
            added = _rope_keys(rope)
        for key, value in added.items():
            out.setdefault(key, value)
    if out.get("model_type") in ("qwen3_moe", "qwen2_moe") and "num_experts" not in out \
            and "num_local_experts" in out:
        out["num_experts"] = out["num_local_experts"]
    if "torch_dtype" not in out and isinstance(out.get("dtype"), str):
        out["torch_dtype"] = out["dtype"]
    return out


_COMPAT_INSTALLED = False


def install_config_compat() -> None:
    """Make every mlx-lm load (ours, the trainer's, the exports') read config.json through
    :func:`config_compat`: ``mlx_lm.utils.load_config`` is the one place it is read."""
    global _COMPAT_INSTALLED
    if _COMPAT_INSTALLED:
        return
    import mlx_lm.utils as mlx_utils

    original = mlx_utils.load_config

    def load_config(model_path):
        return config_compat(original(model_path))

    mlx_utils.load_config = load_config
    _COMPAT_INSTALLED = True


def imported_gguf_path(gguf: Path) -> Path:
    """Where a GGUF file is imported: keyed by its name and a hash of its absolute path."""
    digest = hashlib.sha1(str(gguf.resolve()).encode()).hexdigest()[:8]
    return paths.models_dir() / f"{gguf.stem}-{digest}"


def resolve_model(spec: str | Path, reporter: Reporter = NullReporter(), download: bool = True,
                  should_stop: Callable[[], bool] = never_stop) -> Path:
    """The local folder for a model name (see module docstring). ``should_stop`` cancels a
    GGUF import or a download on the way (:class:`~mlx_lora.errors.Cancelled`; nothing is left)."""
    text = str(spec)
    if text == "demo":
        from mlx_lora.models.demo import demo_model_path

        return demo_model_path(reporter, should_stop)
    path = Path(text).expanduser()
    if path.is_dir():
        return check_model_folder(path)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"{path}: no such GGUF file")
        from mlx_lora.models.gguf import import_gguf

        target = imported_gguf_path(path)
        if not (target / "config.json").exists():
            import_gguf(path, target, reporter=reporter, should_stop=should_stop)
        return target
    if path.exists():
        raise UserError(f"{path}: not a model folder or a .gguf file")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from mlx_lora.models import hub

        if download:
            return check_model_folder(hub.download_model(text, reporter=reporter, should_stop=should_stop))
        return check_model_folder(hub.cached_model_path(text))
    raise UserError(f"{text}: no such folder, GGUF file or Hub repository (expected org/name)")


def load_model(spec: str | Path, adapter_path: str | Path | None = None, reporter: Reporter = NullReporter()):
    """(model, tokenizer, config) through mlx-lm, never with remote code."""
    from mlx_lm.utils import load

    folder = resolve_model(spec, reporter)
    model, tokenizer, config = load(
        str(folder),
        adapter_path=str(adapter_path) if adapter_path else None,
        return_config=True,
        trust_remote_code=False,
    )
    return model, tokenizer, config
