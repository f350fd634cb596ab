"""Adapters on a model already in memory: attach them, switch them, switch them off,
and combine several.

One base model stays loaded; adapters come and go on top of it:

- :func:`apply_adapter` puts one (an :class:`~mlx_lora.adapters.files.AdapterFiles`, or
  what :func:`~mlx_lora.adapters.files.resolve_adapter` takes) on the model. With the
  same LoRA structure as the adapter already there (type, layers, rank, targets) the
  weights are loaded into the existing LoRA layers; otherwise the LoRA layers are
  rebuilt around the same base layers. Every tensor is checked first — an adapter from
  another base or of another rank is a :class:`UserError` naming the tensor and both
  shapes, never a partial load.
- :func:`adapter_disabled` answers "what would the base say?" with the same model:
  each LoRA/DoRA layer is swapped for the base layer it wraps (full fine-tunes:
  the original weights are swapped back in) and restored on exit. Scaling LoRA by
  0 would not do for DoRA, whose magnitude vector still rescales the output.
- :func:`combine_adapters` merges several LoRA adapters with weights into one LoRA
  layer per module: ``A = [A_1 … A_n]`` (in, Σr), ``B = [w_1 s_1 B_1; …; w_n s_n B_n]``
  (Σr, out), scale 1, so ``x A B = Σ w_i s_i x A_i B_i`` — the weighted sum of
  the deltas, and still a plain ``LoRALinear`` that fuses and exports like any other.

MLX and mlx-lm are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mlx_lora.adapters.files import AdapterFiles, load_adapter_weights, resolve_adapter
from mlx_lora.errors import UserError
from mlx_lora.methods import METHODS

# Leaves of mlx-lm's adapter layers: LoRA A/B and DoRA's magnitude.
ADAPTER_LEAVES = ("lora_a", "lora_b", "m")


def _wrapped(module) -> Any:
    """The base layer an adapter layer wraps (``.linear`` or ``.embedding``)."""
    return module.linear if hasattr(module, "linear") else module.embedding


def adapter_layers(model) -> list[tuple[str, Any]]:
    """(path, layer) of every LoRA/DoRA layer in the model."""
    from mlx_lora.methods.tensors.layers import adapter_layer_classes

    classes = adapter_layer_classes()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, classes)]


# Per-model state kept as a plain attribute (a dict or array attribute of an nn.Module
# would become part of its parameter tree): the installed adapter, and for full
# fine-tunes the base weights it overwrote.
@dataclass
class _State:
    adapter: "InstalledAdapter | None" = None
    base_weights: dict = field(default_factory=dict)  # full fine-tune: name -> original tensor
    lock: threading.RLock = field(default_factory=threading.RLock)
    disabled: int = 0


_STATE_ATTRIBUTE = "_mlx_lora_adapter_state"
_STATE_LOCK = threading.Lock()


def _state(model) -> _State:
    with _STATE_LOCK:
        state = getattr(model, _STATE_ATTRIBUTE, None)
        if state is None:
            state = _State()
            object.__setattr__(model, _STATE_ATTRIBUTE, state)  # nn.Module is a dict: bypass its __setattr__
        return state


@dataclass(frozen=True)
class InstalledAdapter:
    """What is on the model now. ``parts`` are (label, weight) — one part with weight 1
    for a single adapter, several for a combination."""

    fine_tune_type: str
    num_layers: int
    lora_parameters: dict
    parts: tuple[tuple[str, float], ...]
    files: tuple[AdapterFiles, ...]

    @property
    def label(self) -> str:
        if len(self.parts) == 1 and self.parts[0][1] == 1.0:
            return self.parts[0][0]
        return " + ".join(f"{w:g}×{name}" for name, w in self.parts)

    def structure(self) -> tuple:
        p = self.lora_parameters
        keys = tuple(sorted(p.get("keys") or ())) if p.get("keys") is not None else None
        return (self.fine_tune_type, self.num_layers, p.get("rank"), keys, bool(p.get("combined")), len(self.parts))


def installed_adapter(model) -> InstalledAdapter | None:
    return _state(model).adapter


def strip_adapters(model) -> None:
    """Put the base layers (and base weights of a full fine-tune) back: the model is the base again."""
    from mlx.utils import tree_unflatten

    state = _state(model)
    with state.lock:
        if state.disabled:
            raise RuntimeError("cannot change adapters inside adapter_disabled()")
        layers = adapter_layers(model)
        if layers:
            model.update_modules(tree_unflatten([(name, _wrapped(m)) for name, m in layers]))
        if state.base_weights:
            model.load_weights(list(state.base_weights.items()), strict=False)
            state.base_weights = {}
        state.adapter = None


@contextmanager
def adapter_disabled(model) -> Iterator[None]:
    """Inside the block the model is its base: adapter layers are swapped for the layers
    they wrap, a full fine-tune's original weights swapped back in. Restored on exit."""
    from mlx.utils import tree_unflatten

    state = _state(model)
    with state.lock:
        layers = adapter_layers(model)
        tuned = {}
        if state.base_weights:
            params = _flat_parameters(model)
            tuned = {name: params[name] for name in state.base_weights}
        if layers:
            model.update_modules(tree_unflatten([(name, _wrapped(m)) for name, m in layers]))
        if state.base_weights:
            model.load_weights(list(state.base_weights.items()), strict=False)
        state.disabled += 1
        try:
            yield
        finally:
            state.disabled -= 1
            if layers:
                model.update_modules(tree_unflatten(layers))
            if tuned:
                model.load_weights(list(tuned.items()), strict=False)


def _flat_parameters(model) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.parameters()))


def _shape(array) -> tuple[int, ...]:
    return tuple(int(d) for d in array.shape)


def check_adapter_tensors(weights: dict, expected: dict, files: AdapterFiles, full: bool) -> None:
    """Every tensor of the adapter must have a place of the same shape in the model, and
    (for LoRA/DoRA) every adapter parameter of the model must come from the file."""
    problems: list[str] = []
    for name, tensor in sorted(weights.items()):
        if name not in expected:
            problems.append(f"{name}: the model has no such {'weight' if full else 'adapter parameter'}")
        elif _shape(tensor) != _shape(expected[name]):
            problems.append(
                f"{name}: the adapter's tensor has shape {_shape(tensor)} but this model needs "
                f"{_shape(expected[name])}"
            )
    if not full:
        missing = sorted(set(expected) - set(weights))
        problems += [f"{name}: missing from the adapter file" for name in missing[:5]]
        if len(missing) > 5:
            problems.append(f"… and {len(missing) - 5} more adapter parameters missing")
    if problems:
        shown = problems[:8] + ([f"… and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise UserError(
            f"{files.weights} does not fit this model: it was trained on another base model, "
            f"or with other LoRA settings (rank, layers, targets) than {files.config_path.name} says.\n  "
            + "\n  ".join(shown)
        )


def _lora_config(files: AdapterFiles) -> dict:
    p = files.lora_parameters
    return {"rank": int(p["rank"]), "scale": float(p["scale"]), "dropout": float(p.get("dropout", 0.0)),
            "keys": p.get("keys")}


def _dequantize_if_needed(model) -> None:
    """Full fine-tunes store dense weights: a quantised base must become dense first."""
    import mlx.nn as nn
    from mlx_lora.models.dequant import dequantize_model

    if any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()):
        dequantize_model(model)


def apply_adapter(model, adapter: AdapterFiles | str | Path) -> InstalledAdapter:
    """Put ``adapter`` on ``model`` in place of whatever adapter is there (see module docstring)."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers

    files = adapter if isinstance(adapter, AdapterFiles) else resolve_adapter(adapter)
    weights = load_adapter_weights(files)
    state = _state(model)
    with state.lock:
        if state.disabled:
            raise RuntimeError("cannot change adapters inside adapter_disabled()")
        kind = files.fine_tune_type
        method = METHODS[kind]  # files.py checked the name
        new = InstalledAdapter(kind, files.num_layers, files.lora_parameters if method.has_adapter else {},
                               ((files.label, 1.0),), (files,))
        if not method.has_adapter:
            strip_adapters(model)
            _dequantize_if_needed(model)
            params = _flat_parameters(model)
            check_adapter_tensors(weights, params, files, full=True)
            state.base_weights = {name: params[name] for name in weights}
            model.load_weights([(k, v.astype(params[k].dtype)) for k, v in weights.items()], strict=False)
        else:
            current = state.adapter
            if current is None or current.structure() != new.structure():
                strip_adapters(model)
                try:
                    linear_to_lora_layers(model, files.num_layers, _lora_config(files), use_dora=method.use_dora)
                except (ValueError, KeyError) as exc:
                    strip_adapters(model)
                    raise UserError(f"{files.config_path}: cannot build these adapter layers: {exc}") from exc
            params = _flat_parameters(model)
            expected = {k: v for k, v in params.items() if k.rsplit(".", 1)[-1] in ADAPTER_LEAVES}
            try:
                check_adapter_tensors(weights, expected, files, full=False)
            except UserError:
                strip_adapters(model)
                raise
            scale = float(files.lora_parameters["scale"])
            for _, layer in adapter_layers(model):
                layer.scale = scale
            model.load_weights([(k, v.astype(expected[k].dtype)) for k, v in weights.items()], strict=False)
        mx.eval(model.parameters())
        model.eval()
        state.adapter = new
        return new


def combine_adapters(model, adapters: list[tuple[AdapterFiles | str | Path, float]]) -> InstalledAdapter:
    """Put the weighted sum of several LoRA adapters on the model (see module docstring)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.lora import LoRALinear
    from mlx_lm.tuner.utils import linear_to_lora_layers

    if not adapters:
        raise UserError("name at least one adapter to combine")
    resolved = [(a if isinstance(a, AdapterFiles) else resolve_adapter(a), float(w)) for a, w in adapters]
    for files, _ in resolved:
        if files.fine_tune_type != "lora":
            raise UserError(f"{files.label}: only LoRA adapters can be combined ({files.fine_tune_type} "
                            "adapters change more than a low-rank delta)")
    state = _state(model)
    with state.lock:
        strip_adapters(model)
        base_modules = dict(model.named_modules())
        # module path -> list of (lora_a (in, r), scaled lora_b (r, out))
        pieces: dict[str, list[tuple[Any, Any]]] = {}
        for files, weight in resolved:
            # Build this adapter's layers on the base to check its tensors against them.
            linear_to_lora_layers(model, files.num_layers, _lora_config(files))
            params = _flat_parameters(model)
            expected = {k: v for k, v in params.items() if k.rsplit(".", 1)[-1] in ADAPTER_LEAVES}
            tensors = load_adapter_weights(files)
            try:
                check_adapter_tensors(tensors, expected, files, full=False)
            finally:
                strip_adapters(model)
            scale = float(files.lora_parameters["scale"])
            for name, tensor in tensors.items():
                module, leaf = name.rsplit(".", 1)
                if leaf == "lora_a":
                    b = tensors[f"{module}.lora_b"].astype(mx.float32)
                    pieces.setdefault(module, []).append((tensor.astype(mx.float32), weight * scale * b))
        layers = []
        for module, parts in pieces.items():
            base = base_modules[module]
            if not isinstance(base, (nn.Linear, nn.QuantizedLinear)):
                raise UserError(f"{module}: adapters on a {type(base).__name__} cannot be combined")
            rank = sum(a.shape[1] for a, _ in parts)
            layer = LoRALinear.from_base(base, r=rank, scale=1.0)
            dtype = layer.lora_a.dtype
            layer.lora_a = mx.concatenate([a for a, _ in parts], axis=1).astype(dtype)  # (in, Σr)
            layer.lora_b = mx.concatenate([b for _, b in parts], axis=0).astype(dtype)  # (Σr, out)
            layers.append((module, layer))
        model.update_modules(tree_unflatten(layers))
        mx.eval(model.parameters())
        model.eval()
        ranks = sorted({int(f.lora_parameters["rank"]) for f, _ in resolved})
        state.adapter = InstalledAdapter(
            "lora", max(f.num_layers for f, _ in resolved),
            {"rank": sum(ranks), "scale": 1.0, "dropout": 0.0, "combined": True},
            tuple((f.label, w) for f, w in resolved), tuple(f for f, _ in resolved),
        )
        return state.adapter
