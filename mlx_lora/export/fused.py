"""The adapter merged into its base, written as a model folder.

:func:`fused_model` loads the base, brings it to float32 — a quantised base is
DEQUANTISED first (fusing into a quantised base and re-quantising silently loses a
fine-tune whose deltas are smaller than the quantisation step: mlx-lm #1172,
mlx-examples #425/#460/#832) — puts the adapter on it, merges every adapter layer
with mlx-lm's own ``fuse()``, and casts the result to the base's storage dtype
(float16 for the demo's 4-bit base, whose scales are float16), rounding once.

:func:`save_model_folder` writes it: safetensors shards + index, config.json,
the tokenizer files and chat template, and generation_config.json whose
``eos_token_id`` lists the end-of-turn token the chat template writes (so the
fused model stops where the tuned one did). ``mlx`` folders may be re-quantised
on request; ``hf`` folders are plain transformers checkpoints (no MLX
quantisation, ``torch_dtype`` set, tensor names checked against the base's).
Never a ``*.py`` file: nothing here needs remote code. :func:`load_float32` reads
such a folder back for the check; :func:`load_base_float32` loads the base alone.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from mlx_lora.adapters import AdapterFiles, adapter_layers, apply_adapter
from mlx_lora.chat.model import prepare_base, run_base_settings
from mlx_lora.errors import UserError

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt",
)
QUANTIZE_GROUP_SIZE = 32


def fuse_adapters(model) -> None:
    """mlx-lm's ``fuse()`` on every adapter layer, in place (the layers are float by now)."""
    from mlx.utils import tree_unflatten

    fused = [(name, layer.fuse(dequantize=True)) for name, layer in adapter_layers(model)]
    if fused:
        model.update_modules(tree_unflatten(fused))


def storage_dtype(model) -> Any:
    """The commonest floating dtype among the model's tensors (quantised weights are uint32)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    counts = Counter(v.dtype for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating))
    return counts.most_common(1)[0][0] if counts else mx.float32


def dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def fused_model(base_dir: Path, files: AdapterFiles, fuse: Callable[[Any], None] = fuse_adapters):
    """(model, config, storage dtype): the base with the adapter merged in."""
    import mlx.core as mx
    from mlx_lm.utils import load_model

    model, config = load_model(base_dir)
    dtype = storage_dtype(model)
    prepare_base(model, compute_dtype="float32", **run_base_settings(files))  # dequantised, float32
    apply_adapter(model, files)
    fuse(model)
    if adapter_layers(model):
        raise UserError("fusing left adapter layers in the model; cannot save it as a plain model")
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model, config, dtype


def load_float32(folder: Path):
    """A saved model folder loaded back with mlx-lm, in float32 (how an export is checked)."""
    from mlx_lm.utils import load_model

    model, _ = load_model(folder)
    prepare_base(model, compute_dtype="float32")
    return model


def load_base_float32(base_dir: Path, files: AdapterFiles):
    """The base as the run trained on it, in float32, without the adapter."""
    from mlx_lm.utils import load_model

    model, _ = load_model(base_dir)
    prepare_base(model, compute_dtype="float32", **run_base_settings(files))
    return model


def _quantize(model, bits: int) -> dict:
    """Quantise in place; returns config.json's ``quantization``. Embeddings and the output
    head stay at 8 bits when fewer are asked for, as llama.cpp's mixed formats keep the
    output tensor at 6-8 bits: on the demo (tied embeddings) a 4-bit head alone moves the
    logits more than the fine-tune does."""
    import mlx.nn as nn

    config: dict[str, Any] = {"group_size": QUANTIZE_GROUP_SIZE, "bits": bits}
    head = {"group_size": QUANTIZE_GROUP_SIZE, "bits": 8}

    def predicate(path: str, module) -> bool | dict:
        if not hasattr(module, "to_quantized") or module.weight.shape[-1] % QUANTIZE_GROUP_SIZE:
            return False
        if bits < 8 and isinstance(module, nn.Embedding) or path == "lm_head":
            config[path] = head
            return head
        return True

    nn.quantize(model, QUANTIZE_GROUP_SIZE, bits, class_predicate=predicate)
    return config


def _safetensors_names(folder: Path) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="numpy") as fh:
            names.update(fh.keys())
    return names


def copy_tokenizer_files(base_dir: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out / name)
    if not (out / "tokenizer.json").is_file() and not (out / "tokenizer.model").is_file():
        raise UserError(f"{base_dir}: the base model has no tokenizer files to export with it")


def generation_config(base_dir: Path, config: dict, eos_ids: set[int]) -> dict:
    """The base's generation_config.json with ``eos_token_id`` = every stop token of the chat."""
    path = base_dir / "generation_config.json"
    generation = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("bos_token_id", "pad_token_id"):
        if key not in generation and config.get(key) is not None:
            generation[key] = config[key]
    ids = sorted(eos_ids)
    generation["eos_token_id"] = ids[0] if len(ids) == 1 else ids
    return generation


def save_model_folder(model, config: dict, base_dir: Path, out: Path, *, fmt: str, quantize: int | None,
                      eos_ids: set[int]) -> list[str]:
    """Write the fused model into ``out`` (an empty folder); returns the files written."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import make_shards

    config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config", "_name_or_path")}
    if quantize:
        if fmt == "hf":
            raise UserError("the hf format is a plain transformers checkpoint: it cannot be MLX-quantised; "
                            "use --format mlx with --quantize, or --format gguf --quantize 8")
        config["quantization"] = config["quantization_config"] = _quantize(model, quantize)
    weights = dict(tree_flatten(model.parameters()))
    if fmt == "hf":
        unknown = sorted(set(weights) - _safetensors_names(base_dir))
        if unknown:
            raise UserError(
                f"this model's MLX tensor names are not transformers' (e.g. {unknown[0]}), so it cannot be "
                "written in the hf format; use --format mlx")
    dtype = dtype_name(storage_dtype(model))
    config["torch_dtype"] = config["dtype"] = dtype
    shards = make_shards(weights)
    pattern = "model-{:05d}-of-{:05d}.safetensors" if len(shards) > 1 else "model.safetensors"
    weight_map: dict[str, str] = {}
    written = []
    for i, shard in enumerate(shards):
        name = pattern.format(i + 1, len(shards))
        # "pt": what transformers expects of a checkpoint; mlx-lm reads either
        # a file object, not a path: given a path, MLX ignores write errors (a full disk gave a
        # short file and no error; mlx_lora/run_folder.py)
        with open(out / name, "wb") as fh:
            mx.save_safetensors(fh, shard, metadata={"format": "pt" if fmt == "hf" else "mlx"})
        weight_map.update({k: name for k in shard})
        written.append(name)
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=2))
    (out / "generation_config.json").write_text(
        json.dumps(generation_config(base_dir, config, eos_ids), indent=2))
    copy_tokenizer_files(base_dir, out)
    return sorted(p.name for p in out.iterdir())
