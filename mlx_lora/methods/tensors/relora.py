"""ReLoRA (Lialin et al. 2023): a sequence of LoRA adapters merged into the base one
after another, so the sum of the updates can reach a higher rank than one adapter.

:class:`ReLoRAHook` is the loop's step hook. After every ``relora_every``-th update
(except the run's last, where a restart would train nothing) it

- merges each adapter into the base weight it wraps, ``W ← W + scale · (A B)ᵀ``
  (A: lora_a (in, r), B: lora_b (r, out), W (out, in), as mlx-lm's ``fuse``); the model
  is the same function before and after (up to float rounding);
- restarts the adapter as a new one: A uniform(±1/√in) as mlx-lm initialises it (from a
  key of the run's seed and the merge number), B zero;
- resets the optimiser: Adam's moments to zero and its step count to 0 (the paper
  prunes 99% of the state; with a zero B a fresh Adam with bias correction is the
  plain restart), so the new adapter does not inherit the old one's directions;
- emits :class:`AdapterMerged` (also in metrics.jsonl).

The learning rate is re-warmed linearly over ``relora_warmup`` steps after each merge
(the "jagged" schedule): :func:`mlx_lora.train.optim.learning_rate_at` multiplies the
run's schedule by :func:`rewarm_factor`, a function of the step alone, so a resumed run
follows it exactly.

A quantised base is dequantised for a ReLoRA run (:func:`mlx_lora.train.prepare.load_base`
says so in the run's notes): merging into 4-bit weights would lose updates smaller than
the quantisation step.

What is saved (the decision): the trained model is the base + every merged delta + the
current adapter, and all of it is low-rank, so the run's ``adapters.safetensors`` (final,
best/, each checkpoint) is ONE plain LoRA adapter of rank ``(merges + 1) · r``:
``lora_a = [A₁ … A_k A]`` (in, (k+1)r) and ``lora_b = [B₁; …; B_k; B]`` ((k+1)r, out),
the same scale — ``x A_cat B_cat = Σ x Aᵢ Bᵢ``. Chat, fuse, the PEFT export and
``mlx_lm.load`` take it like any LoRA and give the in-memory model (up to the order of
float additions). A resume splits it back: the first k blocks are re-merged into the
freshly loaded base, in order and with the same arithmetic as in the run (so the base
is bit-for-bit the one the run had), the last block is the current adapter.
``adapter_config.json`` says ``relora: {merges, every, adapter_rank}``. The file grows
by r · (in + out) per matrix and merge; past ``min(in, out) / 2`` merges of rank r a
full-weight delta would be smaller — fine for the few restarts ReLoRA uses.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from mlx_lora.errors import UserError
from mlx_lora.methods.base import StepHook
from mlx_lora.run_events import AdapterMerged


def rewarm_factor(step: int, every: int, warmup: int) -> float:
    """The share of the scheduled learning rate that update ``step`` (1-based) gets: after a
    merge at step m, update m + j gets min(1, j / warmup)."""
    if not every or not warmup or step <= every:
        return 1.0
    since = (step - 1) % every + 1  # updates since the last merge, 1 for the first
    return min(1.0, since / warmup)


def merge_into_base(layer: nn.Module, lora_a: mx.array, lora_b: mx.array) -> None:
    """``layer.linear.weight += scale · (lora_a lora_b)ᵀ``, the arithmetic of mlx-lm's ``fuse``."""
    weight = layer.linear.weight
    layer.linear.weight = weight + ((layer.scale * lora_b.T) @ lora_a.T).astype(weight.dtype)


def reset_optimizer(optimizer) -> None:
    """Adam's moments to zero and its step count to 0 (each group of LoRA+ too)."""
    inner = optimizer.inner
    for adam in inner.optimizers if isinstance(inner, optim.MultiOptimizer) else [inner]:
        state = adam.state
        fresh = {k: tree_map(mx.zeros_like, v) for k, v in state.items() if k not in ("step", "learning_rate")}
        fresh["step"] = mx.zeros_like(state["step"])
        if "learning_rate" in state:
            fresh["learning_rate"] = state["learning_rate"]
        adam.state = fresh


class ReLoRAHook(StepHook):
    def __init__(self, model: nn.Module, optimizer, every: int, total_steps: int, seed: int,
                 emit: Callable[[Any], None]) -> None:
        from mlx_lm.tuner.lora import LoRALinear

        adapters = {path: m for path, m in model.named_modules() if hasattr(m, "lora_a")}
        odd = [f"{path} ({type(m).__name__})" for path, m in adapters.items() if not isinstance(m, LoRALinear)
               or not isinstance(m.linear, nn.Linear)]
        if odd:
            raise UserError(f"relora_every (schedule.relora_every, --relora-every): ReLoRA merges into plain "
                            f"linear layers only; {odd[0]} is not one")
        self.modules: dict[str, Any] = adapters
        self.optimizer = optimizer
        self.every = every
        self.total_steps = total_steps
        self.seed = seed
        self.emit = emit
        self.rank = next(iter(adapters.values())).lora_a.shape[1] if adapters else 0
        self.merged: list[dict[str, tuple[mx.array, mx.array]]] = []  # per merge: path -> (A, B)

    def after_update(self, step: int, grads: dict) -> None:
        if step % self.every or step >= self.total_steps:
            return
        factors = {}
        key = mx.random.key(self.seed * 1_000_003 + len(self.merged) + 1)
        for (path, m), layer_key in zip(self.modules.items(), mx.random.split(key, len(self.modules))):
            factors[path] = (m.lora_a, m.lora_b)
            merge_into_base(m, m.lora_a, m.lora_b)
            bound = 1 / math.sqrt(m.lora_a.shape[0])
            m.lora_a = mx.random.uniform(-bound, bound, m.lora_a.shape, dtype=m.lora_a.dtype, key=layer_key)
            m.lora_b = mx.zeros_like(m.lora_b)
        self.merged.append(factors)
        reset_optimizer(self.optimizer)
        mx.eval([m.parameters() for m in self.modules.values()], self.optimizer.state)
        n = len(self.merged)
        self.emit(AdapterMerged(step, n, f"ReLoRA merge {n}: the adapter was merged into the base "
                                         f"weights and restarted (optimiser reset, learning rate re-warmed)"))

    def saved_adapter(self, weights: dict, adapter_config: dict) -> tuple[dict, dict]:
        out = {}
        for path, m in self.modules.items():
            pairs = [merge[path] for merge in self.merged] + [(m.lora_a, m.lora_b)]
            out[f"{path}.lora_a"] = mx.concatenate([a for a, _ in pairs], axis=1)  # (in, (k+1) r)
            out[f"{path}.lora_b"] = mx.concatenate([b for _, b in pairs], axis=0)  # ((k+1) r, out)
        config = dict(adapter_config)
        config["lora_parameters"] = {**adapter_config["lora_parameters"],
                                     "rank": self.rank * (len(self.merged) + 1)}
        config["relora"] = {"merges": len(self.merged), "every": self.every, "adapter_rank": self.rank}
        return out, config

    def restore(self, weights: dict, state: dict[str, mx.array]) -> dict:
        r = self.rank
        blocks = {weights[f"{path}.lora_a"].shape[1] // r for path in self.modules if f"{path}.lora_a" in weights}
        if len(blocks) != 1 or any(weights[f"{p}.lora_a"].shape[1] % r for p in self.modules if f"{p}.lora_a" in weights):
            return weights  # does not fit; the loop's shape check names the tensor
        merges = blocks.pop() - 1
        self.merged = []
        for k in range(merges):
            factors = {}
            for path, m in self.modules.items():
                a = weights[f"{path}.lora_a"][:, k * r:(k + 1) * r]
                b = weights[f"{path}.lora_b"][k * r:(k + 1) * r]
                merge_into_base(m, a, b)
                factors[path] = (a, b)
            self.merged.append(factors)
        mx.eval([m.parameters() for m in self.modules.values()])
        current = {}
        for path in self.modules:
            current[f"{path}.lora_a"] = weights[f"{path}.lora_a"][:, merges * r:]
            current[f"{path}.lora_b"] = weights[f"{path}.lora_b"][merges * r:]
        return {**weights, **current}
