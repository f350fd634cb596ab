"""A LoRA adapter trained elsewhere — PEFT's (or Unsloth's) ``adapter_config.json`` +
``adapter_model.safetensors`` — as an mlx-lm adapter that chat and export take like ours.

PEFT's convention (the inverse of :mod:`mlx_lora.export.peft_export`)::

    y = x Wᵀ + s · (x Aᵀ) Bᵀ    A: lora_A.weight (r, in), B: lora_B.weight (out, r),
                                 s = lora_alpha / r (lora_alpha / √r with use_rslora)

so mlx-lm's ``lora_a = Aᵀ`` (in, r), ``lora_b = Bᵀ`` (r, out) and ``scale = s``; DoRA's
``lora_magnitude_vector`` is mlx-lm's ``m``. Keys are ``base_model.model.<module>.lora_A[.default].weight``.
The converted adapter is written once (temp then rename) into the app's models folder, keyed
by the PEFT files' path and contents; the PEFT folder is only read. What mlx-lm cannot
represent — per-module ranks or alphas, ``modules_to_save``, trained biases, fan-in-fan-out
layers, adapters on embeddings — is refused with the key named.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from mlx_lora import atomic, paths
from mlx_lora.errors import UserError

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<leaf>lora_A|lora_B|lora_magnitude_vector)"
                  r"(?:\.default)?(?:\.weight)?$")
_LAYER = re.compile(r"^(?P<prefix>.*\blayers)\.(?P<index>\d+)\.(?P<rest>.+)$")


def is_peft_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a PEFT adapter (its config names a ``peft_type``)."""
    config = folder / PEFT_CONFIG
    if not ((folder / PEFT_WEIGHTS).is_file() and config.is_file()):
        return False
    try:
        return "peft_type" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def _check_config(config: dict, where: Path) -> tuple[int, float, bool]:
    """(rank, scale, DoRA) of a PEFT LoRA config; a UserError for what mlx-lm cannot run."""
    if config.get("peft_type") != "LORA":
        raise UserError(f"{where}: peft_type {config.get('peft_type')!r} is not supported: only LoRA (and DoRA) "
                        "adapters can be imported; export a LoRA adapter from PEFT")
    for key, fine in (("modules_to_save", None), ("bias", "none"), ("fan_in_fan_out", False)):
        if config.get(key, fine) not in (fine, [], None if fine is None else fine):
            raise UserError(f"{where}: {key}={config[key]!r} is not supported: mlx-lm adapters hold only LoRA's "
                            "A and B; train the adapter without it")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise UserError(f"{where}: {key} is not supported: mlx-lm uses one rank and scale for every layer")
    try:
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: r and lora_alpha must be numbers ({exc})") from exc
    if rank < 1 or not alpha > 0:
        raise UserError(f"{where}: r must be at least 1 and lora_alpha above 0, got r={rank}, lora_alpha={alpha}")
    scale = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
    return rank, scale, bool(config.get("use_dora"))


def _base_layers(base: str | None) -> int | None:
    if base and (Path(base) / "config.json").is_file():
        from mlx_lora.models.local import read_config

        config = read_config(Path(base) / "config.json")
        return int(config.get("text_config", config).get("num_hidden_layers", 0)) or None
    return None


def convert_peft(folder: Path, out: Path, base: str | None = None) -> None:
    """Write the mlx-lm adapter of the PEFT adapter in ``folder`` into ``out`` (a new folder)."""
    import mlx.core as mx
    import numpy as np
    from safetensors.numpy import load_file

    from mlx_lora.models.local import check_safetensors

    config = json.loads((folder / PEFT_CONFIG).read_text())
    rank, scale, dora = _check_config(config, folder / PEFT_CONFIG)
    check_safetensors(folder / PEFT_WEIGHTS)
    tensors = load_file(str(folder / PEFT_WEIGHTS))
    weights: dict[str, np.ndarray] = {}
    keys, layers, prefix = set(), set(), None
    for key, array in sorted(tensors.items()):
        match = _KEY.match(key)
        if match is None:
            raise UserError(f"{folder / PEFT_WEIGHTS}: {key!r} is not a LoRA tensor (lora_A, lora_B or "
                            "lora_magnitude_vector); only LoRA weights can be imported")
        module, leaf = match["module"], match["leaf"]
        layer = _LAYER.match(module)
        if layer is None:
            raise UserError(f"{folder / PEFT_WEIGHTS}: {key!r} adapts {module}, outside the transformer layers; "
                            "mlx-lm adapters only adapt the layers' linear modules")
        prefix, rest = layer["prefix"], layer["rest"]
        keys.add(rest)
        layers.add(int(layer["index"]))
        array = array.astype(np.float32)
        if leaf == "lora_A":  # (r, in) -> (in, r)
            if array.ndim != 2 or array.shape[0] != rank:
                raise UserError(f"{folder / PEFT_WEIGHTS}: {key} has shape {array.shape}, not (r={rank}, in)")
            weights[f"{module}.lora_a"] = np.ascontiguousarray(array.T)
        elif leaf == "lora_B":  # (out, r) -> (r, out)
            if array.ndim != 2 or array.shape[1] != rank:
                raise UserError(f"{folder / PEFT_WEIGHTS}: {key} has shape {array.shape}, not (out, r={rank})")
            weights[f"{module}.lora_b"] = np.ascontiguousarray(array.T)
        else:
            weights[f"{module}.m"] = array
    if not weights:
        raise UserError(f"{folder / PEFT_WEIGHTS}: no LoRA tensors in it")
    total = _base_layers(base) or max(layers) + 1
    first = min(layers)
    # mlx-lm adapts the last num_layers layers with the same keys: layers PEFT left alone get
    # B = 0 (no change), so the adapter means exactly what PEFT's does
    for index in range(first, total):
        for rest in keys:
            module = f"{prefix}.{index}.{rest}"
            a, b = weights.get(f"{module}.lora_a"), weights.get(f"{module}.lora_b")
            if (a is None) != (b is None):
                raise UserError(f"{folder / PEFT_WEIGHTS}: {module} has only one of lora_A and lora_B")
            if a is None:
                if dora:
                    raise UserError(f"{folder / PEFT_WEIGHTS}: a DoRA adapter must adapt {rest} in every layer "
                                    f"from {first} on (layer {index} is missing)")
                twin = next(k for k in weights if k.endswith(f".{rest}.lora_a"))
                in_dim = weights[twin].shape[0]
                out_dim = weights[twin.replace(".lora_a", ".lora_b")].shape[1]
                weights[f"{module}.lora_a"] = np.zeros((in_dim, rank), np.float32)
                weights[f"{module}.lora_b"] = np.zeros((rank, out_dim), np.float32)
    adapter_config = {
        "fine_tune_type": "dora" if dora else "lora",
        "num_layers": total - first,
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": float(config.get("lora_dropout") or 0.0),
                            "keys": sorted(keys)},
        "model": base,
        "imported_from": str(folder),
    }
    with atomic.atomic_dir(out) as tmp:
        mx.save_safetensors(str(Path(tmp) / "adapters.safetensors"), {k: mx.array(v) for k, v in weights.items()})
        (Path(tmp) / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))


def imported_peft(folder: Path) -> Path:
    """The mlx-lm adapter folder of the PEFT adapter in ``folder``, converted on first use."""
    folder = folder.resolve()
    digest = hashlib.sha256(str(folder).encode())
    for name in (PEFT_CONFIG, PEFT_WEIGHTS):
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    out = paths.models_dir() / "imported-adapters" / f"{folder.name}-{digest.hexdigest()[:10]}"
    if not (out / "adapters.safetensors").is_file():
        config = json.loads((folder / PEFT_CONFIG).read_text())
        base = config.get("base_model_name_or_path")
        out.parent.mkdir(parents=True, exist_ok=True)
        convert_peft(folder, out, str(base) if base else None)
    return out
