"""Step hooks: what a method adds to the training loop, at a few fixed points.

The loop (:mod:`mlx_lora.train.loop`) holds one :class:`StepHooks` list and calls it

- ``adjust_gradients(grads)`` after the gradient is averaged, before clipping
  (AdaLoRA's orthogonality regulariser);
- ``after_update(step, grads)`` after each optimiser update is evaluated, with the
  (clipped) gradient it applied (AdaLoRA's importance and pruning, ReLoRA's merges);
- ``saved_adapter(weights, adapter_config)`` for what the run's adapter files hold
  (AdaLoRA and ReLoRA save plain LoRA adapters; the default saves the trainable weights);
- ``state()`` / ``restore(weights, state)``: tensors a checkpoint keeps for an exact
  resume (``method_state.safetensors``), and, from a checkpoint, the weights to load
  into the model;
- ``finish(step)`` before ``RunFinished`` (AdaLoRA reports its final ranks).

Every method of :class:`StepHook` does nothing, so a hook overrides only what it needs;
other features can append their own hook to the list.
"""

from __future__ import annotations

from typing import Any, Callable

import mlx.core as mx


class StepHook:
    def adjust_gradients(self, grads: dict) -> dict:
        return grads

    def after_update(self, step: int, grads: dict) -> None:
        pass

    def saved_adapter(self, weights: dict, adapter_config: dict) -> tuple[dict, dict]:
        return weights, adapter_config

    def state(self) -> dict[str, mx.array]:
        return {}

    def restore(self, weights: dict, state: dict[str, mx.array]) -> dict:
        return weights

    def finish(self, step: int) -> None:
        pass


class StepHooks(list):
    """The hooks of a run, called in order (the saved adapter and restored weights pass through each)."""

    def adjust_gradients(self, grads: dict) -> dict:
        for hook in self:
            grads = hook.adjust_gradients(grads)
        return grads

    def after_update(self, step: int, grads: dict) -> None:
        for hook in self:
            hook.after_update(step, grads)

    def saved_adapter(self, weights: dict, adapter_config: dict) -> tuple[dict, dict]:
        for hook in self:
            weights, adapter_config = hook.saved_adapter(weights, adapter_config)
        return weights, adapter_config

    def state(self) -> dict[str, mx.array]:
        return {k: v for hook in self for k, v in hook.state().items()}

    def restore(self, weights: dict, state: dict[str, mx.array]) -> dict:
        for hook in self:
            weights = hook.restore(weights, state)
        return weights

    def finish(self, step: int) -> None:
        for hook in self:
            hook.finish(step)


def add_at(tree: Any, path: str, value: mx.array) -> None:
    """``tree[path] += value`` for a dotted path into a nested dict/list tree, in place."""
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree[int(key)] if isinstance(tree, list) else tree[key]
    key = int(leaf) if isinstance(tree, list) else leaf
    tree[key] = tree[key] + value


def method_hooks(config, model, optimizer, total_steps: int, emit: Callable[[Any], None]) -> StepHooks:
    """The hooks the config's method needs (none for plain LoRA, DoRA and full fine-tuning)."""
    hooks = StepHooks()
    if config.adapter.fine_tune_type == "adalora":
        from mlx_lora.train.adalora import AdaLoRAHook

        hooks.append(AdaLoRAHook(model, config.adapter, total_steps, emit))
    if config.schedule.relora_every:
        from mlx_lora.train.relora import ReLoRAHook

        hooks.append(ReLoRAHook(model, optimizer, config.schedule.relora_every, total_steps, config.run.seed, emit))
    return hooks
