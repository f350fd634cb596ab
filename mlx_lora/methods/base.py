"""What a fine-tuning method is: :class:`Method`, one subclass per ``fine_tune_type``
(one module each in :mod:`mlx_lora.methods`), and the step hooks a method adds to the
training loop.

A :class:`Method` says, for its ``fine_tune_type``: its label and help (the config's help
text, the CLI's ``--fine-tune-type`` and the app's form), which settings it cannot be used
with (:meth:`Method.check`), how it adapts a model (:meth:`Method.apply`), the hooks it adds
to the loop (:meth:`Method.hooks`), what its adapter is saved as (``saves_as``), its PEFT
``adapter_config.json`` fields (:meth:`Method.peft_config`) and its terms in the memory
estimate (:meth:`Method.trainable_values`, :meth:`Method.activation_bytes_per_token`).

This module and every method module import no MLX at the top: the config reads the
registry to know its choices, and a config is read where MLX is not loaded (listing runs).
The tensor code lives in :mod:`mlx_lora.methods.tensors`, imported when a model is adapted.

Step hooks: the loop (:mod:`mlx_lora.train.loop`) holds one :class:`StepHooks` list and calls it

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

from typing import TYPE_CHECKING, Any, Callable

from mlx_lora.errors import UserError

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_lora.config import AdapterConfig, TrainConfig


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


class Method:
    """One fine-tuning method. Subclass it in a new module of :mod:`mlx_lora.methods` that sets
    ``METHOD = YourMethod()``; the registry finds it. The defaults are LoRA's."""

    name: str = ""       # the fine_tune_type, as written in configs and adapter_config.json
    label: str = ""      # what the app and the CLI call it
    help: str = ""       # one sentence for the config's help
    order: int = 100     # where it comes in the choices (the first is not the default: lora is)
    has_adapter: bool = True  # False: it trains the base's own weights (full), no adapter to switch off
    relora: bool = False      # ReLoRA's restarts (schedule.relora_every) can run on it
    dequantize_reason: str | None = None  # why a quantised base is dequantised for it on any device
    use_dora: bool = False    # its adapter layers are mlx-lm's DoRA layers

    @property
    def saves_as(self) -> str:
        """The fine_tune_type its saved adapter_config.json says (what mlx-lm loads)."""
        return self.name

    # -- config --------------------------------------------------------------
    def check_adapter(self, adapter: "AdapterConfig") -> None:
        """Checks within the adapter section; fail with ``adapter.fail(field, message)``."""

    def check(self, config: "TrainConfig") -> None:
        """Checks across sections; raise :class:`UserError` naming the setting."""
        if not self.has_adapter and config.model.quantize_bits:
            raise UserError(f"quantize_bits (model.quantize_bits, --quantize-bits): {self.label.lower()} trains "
                            "every weight, so the base cannot be quantised; use --fine-tune-type lora for QLoRA")
        if not self.has_adapter and config.preference.objective == "dpo":
            raise UserError(f"objective (preference.objective, --objective): DPO's reference model is the base with "
                            f"the adapter switched off, and {self.label.lower()} has no adapter; use "
                            "--fine-tune-type lora or dora, or --objective orpo (no reference model)")
        if config.schedule.relora_every and not self.relora:
            raise UserError(f"relora_every (schedule.relora_every, --relora-every): ReLoRA restarts a plain LoRA "
                            f"adapter; it cannot be used with fine_tune_type {self.name}")

    # -- training ------------------------------------------------------------
    def apply(self, model: "nn.Module", adapter: "AdapterConfig", num_layers: int,
              keys: list[str]) -> dict[str, Any] | None:
        """Put the method's trainable weights on the last ``num_layers`` layers of a frozen
        model, on the linear layers ``keys``; returns the adapter's ``lora_parameters``
        (None when there is no adapter)."""
        raise NotImplementedError

    def hooks(self, config: "TrainConfig", model: "nn.Module", optimizer, total_steps: int,
              emit: Callable[[Any], None]) -> list["StepHook"]:
        """The step hooks it adds to the loop (none by default)."""
        return []

    # -- export --------------------------------------------------------------
    def peft_config(self) -> dict[str, Any]:
        """Fields of a PEFT LoRA adapter_config.json particular to it."""
        if not self.has_adapter:
            raise UserError(f"a {self.name} fine-tune is not an adapter: export it with --format mlx, hf or gguf")
        return {"use_dora": self.use_dora}

    # -- memory estimate (mlx_lora.train.memory) -----------------------------
    def adapter_values(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]]) -> int:
        """Trained values per adapted layer, given the targeted linears' (in, out) sizes."""
        return sum(adapter.rank * (i + o) for i, o in targeted.values())

    def trainable_bytes(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]], layers: int,
                        layer_parameters: int, compute_bytes: int) -> float:
        """Bytes of trained weights on ``layers`` adapted layers of ``layer_parameters`` values each."""
        return layers * self.adapter_values(adapter, targeted) * 4  # mlx-lm makes lora_a / lora_b float32

    def activation_bytes_per_token(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]],
                                   compute_bytes: int) -> float:
        """Activation bytes per token and layer it keeps beyond the base model's."""
        return 0.0
