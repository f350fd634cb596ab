"""An mlx-lm LoRA adapter in PEFT's format, and its check without torch.

Conventions (PEFT ``tuners/lora/layer.py``, ``Linear.forward``)::

    y = x Wᵀ + (lora_alpha / r) · (x Aᵀ) Bᵀ      A: lora_A.weight (r, in)   B: lora_B.weight (out, r)

mlx-lm stores ``lora_a`` as (in, r) and ``lora_b`` as (r, out) and computes
``y = x Wᵀ + scale · (x lora_a) lora_b``; so ``A = lora_aᵀ``, ``B = lora_bᵀ`` and
``lora_alpha = scale × r``. Names are ``base_model.model.<module>.lora_A.weight``
(PEFT's ``get_peft_model_state_dict`` form, without the adapter name). Only the
adapted layers are targeted: ``target_modules`` lists the module names and
``layers_to_transform`` the layer indices (mlx-lm adapts the last ``num_layers``).
DoRA adapters go out with ``use_dora`` and ``lora_magnitude_vector`` (mlx-lm's
``m``, the per-output-row norm PEFT uses too).

:func:`dense_deltas` reads an exported folder back by PEFT's convention alone —
numpy, no mlx-lm code — giving ``W + (alpha/r) B A`` per module; the export check
(:func:`check_peft_numpy`) puts those weights into the base and compares logits with
base+adapter.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from mlx_lora.adapters import AdapterFiles, load_adapter_weights
from mlx_lora.errors import UserError
from mlx_lora.methods import method_for

PREFIX = "base_model.model."
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def peft_state_dict(files: AdapterFiles) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors as numpy float32, adapter_config.json) for an mlx-lm LoRA/DoRA adapter."""
    import mlx.core as mx
    import numpy as np

    method_fields = method_for(files.fine_tune_type).peft_config()  # raises for a method without an adapter
    weights = load_adapter_weights(files)
    params = files.lora_parameters
    rank, scale = int(params["rank"]), float(params["scale"])
    tensors: dict[str, Any] = {}
    modules, layers = set(), set()
    for name, tensor in sorted(weights.items()):
        module, leaf = name.rsplit(".", 1)
        array = np.array(tensor.astype(mx.float32))
        if leaf == "lora_a":  # (in, r) -> A (r, in)
            if array.ndim != 2:
                raise UserError(f"{name}: only linear layers can be exported to PEFT (shape {array.shape})")
            tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(array.T)
        elif leaf == "lora_b":  # (r, out) -> B (out, r)
            tensors[f"{PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(array.T)
        elif leaf == "m":
            tensors[f"{PREFIX}{module}.lora_magnitude_vector"] = array
        else:
            raise UserError(f"{name}: not a LoRA tensor; cannot be written in PEFT's format")
        modules.add(module.rsplit(".", 1)[-1])
        if m := _LAYER_INDEX.search(module):
            layers.add(int(m[1]))
    ranks = Counter(v.shape[0] for k, v in tensors.items() if k.endswith("lora_A.weight"))
    if set(ranks) != {rank}:
        raise UserError(f"{files.weights}: tensors of rank {sorted(ranks)} but adapter_config.json says {rank}")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,  # filled by the caller, which knows the base
        "r": rank,
        "lora_alpha": _number(scale * rank),  # PEFT scales by alpha / r == mlx-lm's scale
        "lora_dropout": float(params.get("dropout", 0.0)),
        "target_modules": sorted(modules),
        "layers_to_transform": sorted(layers) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
        **method_fields,
    }
    return tensors, config


def write_peft(files: AdapterFiles, out: Path, base_model_name: str, trained_base: dict | None = None) -> list[str]:
    """``trained_base``: :func:`mlx_lora.export.provenance.trained_base`'s record; then
    ``base_model_name_or_path`` is the base as trained (a GGUF's path), the Hub id goes
    into ``base_model_hub_id`` and the record into ``base_model_trained_on`` (PEFT ignores
    both, with a warning)."""
    from safetensors.numpy import save_file

    from mlx_lora.export.provenance import base_for_peft

    tensors, config = peft_state_dict(files)
    config["base_model_name_or_path"] = base_model_name
    if trained_base is not None:
        config["base_model_name_or_path"] = base_for_peft(trained_base)
        config["base_model_hub_id"] = trained_base.get("hub_id")
        config["base_model_trained_on"] = trained_base
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return ["adapter_model.safetensors", "adapter_config.json"]


def dense_deltas(folder: Path, base_weights: dict[str, Any]) -> dict[str, Any]:
    """The base's adapted weights as PEFT would compute them from ``folder`` — numpy only.

    ``base_weights``: module weight name → (out, in) float32 numpy. Returns the same
    names → ``W + (alpha/r) B A`` (LoRA) or PEFT's DoRA weight
    ``m / ‖W + (alpha/r) B A‖_row · (W + (alpha/r) B A)``."""
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    if config.get("peft_type") != "LORA":
        raise UserError(f"{folder}: not a PEFT LoRA adapter")
    scaling = float(config["lora_alpha"]) / float(config["r"])
    out: dict[str, Any] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len(PREFIX): -len(".lora_A.weight")]
        name = f"{module}.weight"
        if name not in base_weights:
            raise UserError(f"{key}: the base has no {name}")
        w = base_weights[name]
        b = tensors[f"{PREFIX}{module}.lora_B.weight"]
        if a.shape != (config["r"], w.shape[1]) or b.shape != (w.shape[0], config["r"]):
            raise UserError(f"{module}: lora_A {a.shape} / lora_B {b.shape} do not fit the base weight {w.shape} "
                            f"with r={config['r']} (expected ({config['r']}, {w.shape[1]}) / "
                            f"({w.shape[0]}, {config['r']}))")
        merged = w + scaling * (b @ a)  # (out, r) @ (r, in) -> (out, in)
        if config.get("use_dora"):
            magnitude = tensors[f"{PREFIX}{module}.lora_magnitude_vector"]
            merged = (magnitude / np.linalg.norm(merged, axis=1))[:, None] * merged
        out[name] = merged.astype(np.float32)
    return out


def check_peft_numpy(folder: Path, base_dir: Path, files: AdapterFiles, compare) -> None:
    """PEFT's forward convention in numpy: W' = W + (alpha/r)·B·A from the exported
    tensors, put into a fresh float32 base, logits against base+adapter."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_lora.export import verify
    from mlx_lora.export.fused import load_base_float32

    model = load_base_float32(base_dir, files)
    params = dict(tree_flatten(model.parameters()))
    base_weights = {k: np.array(v) for k, v in params.items() if k.endswith(".weight") and v.ndim == 2}
    merged = dense_deltas(folder, base_weights)
    model.load_weights([(k, mx.array(v)) for k, v in merged.items()], strict=False)
    mx.eval(model.parameters())
    compare("PEFT adapter (PEFT's convention applied in numpy)", verify.logits_of(model), verify.THRESHOLDS["exact"])
