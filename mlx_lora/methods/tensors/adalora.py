"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form whose rank per matrix is pruned,
by importance, toward a total rank budget.

Each adapted linear layer ``W`` becomes ``W + scale · (P · diag(λ) · Q)ᵀ``
(:class:`~mlx_lora.methods.tensors.layers.AdaLoRALinear`, beside the other adapter layers;
mlx shapes: ``lora_a`` P (in, r), ``lora_e`` λ (r,), ``lora_b`` Q (r, out));
``r`` is ``rank``, the initial rank, and ``scale`` is
``alpha / rank`` as for LoRA (PEFT's ``lora_alpha / r``, fixed while pruning). As in
PEFT's ``AdaLoraModel``, λ starts at zero (the adapter starts as the identity)
and P, Q at N(0, 0.02²).

:class:`AdaLoRAHook` is the loop's step hook and does, after every optimiser update
(PEFT's ``RankAllocator``, the reference behaviour):

- importance: per adapter entry, sensitivity ``I = |w · ∂L/∂w|`` smoothed with an
  EMA ``Ī`` (β₁ = 0.85) and its uncertainty ``Ū = EMA |I − Ī|`` (β₂ = 0.85), score
  ``s = Ī · Ū``; a triplet's (one singular value with its column of P and row of
  Q) score is ``s(λᵢ) + mean s(P[:, i]) + mean s(Q[i, :])``;
- budget: the initial total rank ``b⁰ = r × matrices`` for the first ``adalora_tinit``
  steps, then ``b(t) = b_T + (b⁰ − b_T)(1 − (t − tinit)/(T − tfinal − tinit))³`` down to
  ``b_T = adalora_target_rank × matrices`` at step ``T − adalora_tfinal``, fixed after;
- pruning: every ``adalora_delta_t`` steps (and at ``T − tfinal``) the ``b(t)`` triplets
  with the highest scores are kept across all layers and the other λ set to zero; the
  mask is re-applied after every update, so a pruned λ stays exactly zero;
- the orthogonality regulariser ``‖PᵀP − I‖_F + ‖QQᵀ − I‖_F`` (averaged over the
  matrices, weight ``adalora_orth_reg``) is added to the gradient before clipping.
  The reported loss is the language-model loss alone, comparable with LoRA's.

Deviations from PEFT, on purpose: PEFT ranks the triplets by a threshold (its
``kthvalue`` over both the triplet and the λ-only scores), which can keep more or fewer
than the budget; here exactly the top ``b(t)`` are kept, so the total rank after
``T − tfinal`` *is* the budget.

What is saved: every ``adapters.safetensors`` of the run (final, best/, checkpoints) is
a plain mlx-lm LoRA adapter, ``lora_a = P[:, kept] · λ[kept]`` and ``lora_b = Q[kept]``,
each matrix's kept triplets first and zero-padded to the largest kept rank — so chat,
fuse, the PEFT export and ``mlx_lm.load`` take it like any LoRA, and the file is no
larger than the largest final rank needs. ``adapter_config.json`` carries ``adalora``:
the per-module ranks, their total and the budget. The SVD-form weights, the masks and
the importance EMAs go to the checkpoint's ``method_state.safetensors``, from which a
resume restores them exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_lora.errors import UserError
from mlx_lora.methods.base import StepHook
from mlx_lora.methods.tensors.layers import AdaLoRALinear
from mlx_lora.run_events import AdapterRanks
from mlx_lora.tree_paths import add_at

if TYPE_CHECKING:
    from mlx_lora.config import AdapterConfig

BETA1 = BETA2 = 0.85  # PEFT's AdaLoraConfig defaults for the two EMAs
LEAVES = ("lora_a", "lora_e", "lora_b")


def to_adalora_layers(model: nn.Module, num_layers: int, keys: list[str], rank: int, scale: float,
                      dropout: float) -> None:
    """Wrap the ``keys`` linear layers of the last ``num_layers`` layers, in place."""
    from mlx.utils import tree_unflatten

    for layer in model.layers[len(model.layers) - num_layers:]:
        wrapped = []
        for name, module in layer.named_modules():
            if name not in keys:
                continue
            if not isinstance(module, (nn.Linear, nn.QuantizedLinear)):
                raise UserError(f"fine_tune_type (adapter.fine_tune_type, --fine-tune-type): AdaLoRA adapts "
                                f"linear layers only; {name} is a {type(module).__name__}")
            wrapped.append((name, AdaLoRALinear.from_base(module, rank, scale, dropout)))
        layer.update_modules(tree_unflatten(wrapped))


def adalora_modules(model: nn.Module) -> dict[str, AdaLoRALinear]:
    return {path: m for path, m in model.named_modules() if isinstance(m, AdaLoRALinear)}


def orthogonality_penalty(params: dict[str, mx.array]) -> mx.array:
    """Mean over the matrices of ‖PᵀP − I‖_F (P: lora_a, (in, r)) and ‖QQᵀ − I‖_F (Q: lora_b, (r, out))."""
    total = mx.array(0.0)
    for name, p in params.items():
        cov = p.T @ p if name.endswith("lora_a") else p @ p.T  # (r, r)
        total = total + mx.sqrt(mx.sum((cov - mx.eye(cov.shape[0], dtype=cov.dtype)) ** 2))
    return total / max(len(params), 1)


def budget_at(step: int, initial: int, target: int, tinit: int, end: int) -> int:
    """The total rank allowed after update ``step`` (cubic from ``initial`` to ``target``)."""
    if step <= tinit:
        return initial
    if step >= end:
        return target
    coefficient = 1 - (step - tinit) / (end - tinit)
    return int((initial - target) * coefficient ** 3 + target)


def _natural(path: str) -> list:
    return [int(part) if part.isdigit() else part for part in path.split(".")]


def describe_ranks(ranks: dict[str, int]) -> str:
    """``layers.0: q_proj 2, v_proj 4; layers.1: …`` — one group per transformer layer."""
    groups: dict[str, list[str]] = {}
    for path, rank in ranks.items():
        layer, _, module = path.removeprefix("model.").rpartition(".")
        head, _, _ = layer.rpartition(".")  # layers.0.self_attn -> layers.0
        groups.setdefault(head or layer, []).append(f"{module} {rank}")
    return "; ".join(f"{layer}: {', '.join(parts)}" for layer, parts in groups.items())


class AdaLoRAHook(StepHook):
    """Importance, budget, pruning and the regulariser around each update (module docstring)."""

    def __init__(self, model: nn.Module, adapter: AdapterConfig, total_steps: int,
                 emit: Callable[[Any], None]) -> None:
        self.modules = adalora_modules(model)
        self.adapter = adapter
        self.total_steps = total_steps
        self.emit = emit
        self.end = total_steps - adapter.adalora_tfinal  # pruning ends here; ranks are fixed after
        if adapter.adalora_tinit >= self.end:
            raise UserError(f"adalora_tinit + adalora_tfinal ({adapter.adalora_tinit} + {adapter.adalora_tfinal}) "
                            f"must be less than the run's {total_steps} steps: AdaLoRA prunes between them")
        self.initial_rank = adapter.rank
        self.initial_budget = adapter.rank * len(self.modules)
        self.budget = adapter.adalora_target_rank * len(self.modules)
        self.masks = {path: mx.ones((adapter.rank,)) for path in self.modules}
        self.average: dict[str, mx.array] = {}  # parameter path -> EMA of |w · grad|
        self.uncertainty: dict[str, mx.array] = {}  # parameter path -> EMA of |I - Ī|

    # -- around the update --------------------------------------------------------
    def adjust_gradients(self, grads: dict) -> dict:
        weight = self.adapter.adalora_orth_reg
        if not weight or not self.modules:
            return grads
        params = {f"{path}.{leaf}": getattr(m, leaf) for path, m in self.modules.items() for leaf in ("lora_a", "lora_b")}
        for name, g in mx.grad(orthogonality_penalty)(params).items():
            add_at(grads, name, weight * g)
        return grads

    def after_update(self, step: int, grads: dict) -> None:
        from mlx.utils import tree_flatten

        if step <= self.end:
            self._update_importance(dict(tree_flatten(grads)))
        if self.adapter.adalora_tinit < step <= self.end and (step % self.adapter.adalora_delta_t == 0
                                                                or step == self.end):
            self._mask_to(budget_at(step, self.initial_budget, self.budget, self.adapter.adalora_tinit, self.end))
        for path, m in self.modules.items():
            m.lora_e = m.lora_e * self.masks[path]
        mx.eval([m.lora_e for m in self.modules.values()], self.average, self.uncertainty)

    def _update_importance(self, grads: dict[str, mx.array]) -> None:
        for path, m in self.modules.items():
            for leaf in LEAVES:
                name = f"{path}.{leaf}"
                sensitivity = mx.abs(getattr(m, leaf) * grads[name])
                average = BETA1 * self.average.get(name, mx.zeros_like(sensitivity)) + (1 - BETA1) * sensitivity
                self.uncertainty[name] = (BETA2 * self.uncertainty.get(name, mx.zeros_like(sensitivity))
                                          + (1 - BETA2) * mx.abs(sensitivity - average))
                self.average[name] = average

    def triplet_scores(self) -> dict[str, mx.array]:
        """(r,) per module: s(λᵢ) + mean s(P[:, i]) + mean s(Q[i, :])."""
        score = {name: self.average[name] * self.uncertainty[name] for name in self.average}
        return {path: score[f"{path}.lora_e"] + score[f"{path}.lora_a"].mean(axis=0)
                + score[f"{path}.lora_b"].mean(axis=1) for path in self.modules}

    def _mask_to(self, budget: int) -> None:
        scores = self.triplet_scores()
        paths = list(self.modules)
        flat = np.concatenate([np.array(scores[p]) for p in paths])  # (modules · r,)
        keep = np.zeros(flat.shape, dtype=np.float32)
        keep[np.argsort(-flat, kind="stable")[:budget]] = 1.0
        r = self.initial_rank
        self.masks = {p: mx.array(keep[k * r:(k + 1) * r]) for k, p in enumerate(paths)}

    def ranks(self) -> dict[str, int]:
        """Module path -> rank kept, in layer order."""
        return {path: int(self.masks[path].sum().item()) for path in sorted(self.masks, key=_natural)}

    def finish(self, step: int) -> None:
        ranks = self.ranks()
        total = sum(ranks.values())
        self.emit(AdapterRanks(step, ranks, total, self.budget, self.initial_rank,
                               f"AdaLoRA final ranks (total {total} of budget {self.budget}, from "
                               f"{self.initial_rank} per matrix): {describe_ranks(ranks)}"))

    # -- saving and resuming ---------------------------------------------------------
    def saved_adapter(self, weights: dict, adapter_config: dict) -> tuple[dict, dict]:
        """The plain-LoRA adapter (module docstring) and its adapter_config.json."""
        ranks = self.ranks()
        width = max(max(ranks.values(), default=1), 1)
        out = {}
        for path, m in self.modules.items():
            kept = np.flatnonzero(np.array(self.masks[path]) > 0)
            index = mx.array(kept.astype(np.int32))
            a = mx.zeros((m.lora_a.shape[0], width), dtype=m.lora_a.dtype)  # (in, width)
            b = mx.zeros((width, m.lora_b.shape[1]), dtype=m.lora_b.dtype)  # (width, out)
            if kept.size:
                a[:, :kept.size] = m.lora_a[:, index] * m.lora_e[index]
                b[:kept.size] = m.lora_b[index]
            out[f"{path}.lora_a"], out[f"{path}.lora_b"] = a, b
        config = dict(adapter_config)
        config["fine_tune_type"] = "lora"
        config["lora_parameters"] = {**adapter_config["lora_parameters"], "rank": width}
        config["adalora"] = {"initial_rank": self.initial_rank, "target_rank": self.adapter.adalora_target_rank,
                             "budget": self.budget, "total_rank": sum(ranks.values()), "ranks": ranks}
        return out, config

    def state(self) -> dict[str, mx.array]:
        tensors = {f"adalora.weight.{path}.{leaf}": getattr(m, leaf)
                   for path, m in self.modules.items() for leaf in LEAVES}
        tensors.update({f"adalora.mask.{path}": mask for path, mask in self.masks.items()})
        tensors.update({f"adalora.average.{name}": v for name, v in self.average.items()})
        tensors.update({f"adalora.uncertainty.{name}": v for name, v in self.uncertainty.items()})
        return tensors

    def restore(self, weights: dict, state: dict[str, mx.array]) -> dict:
        prefix = "adalora.weight."
        trained = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not trained:
            raise UserError("this checkpoint has no AdaLoRA state (method_state.safetensors): it was not saved "
                            "by an AdaLoRA run of this version; start a new run")
        masks = {k[len("adalora.mask."):]: v for k, v in state.items() if k.startswith("adalora.mask.")}
        if set(masks) != set(self.modules):
            raise UserError("this checkpoint's AdaLoRA masks do not fit the model's adapted layers")
        self.masks = masks
        self.average = {k[len("adalora.average."):]: v for k, v in state.items() if k.startswith("adalora.average.")}
        self.uncertainty = {k[len("adalora.uncertainty."):]: v for k, v in state.items()
                            if k.startswith("adalora.uncertainty.")}
        return trained

