"""LoRA (Hu et al. 2021), and QLoRA when the base is quantised: mlx-lm's low-rank layers
(``linear_to_lora_layers``), so an adapter saved here loads with
``mlx_lm.load(model, adapter_path=run)``; the scale is ``alpha / rank``, or
``alpha / sqrt(rank)`` with rsLoRA. ReLoRA's restarts (``schedule.relora_every``,
:mod:`mlx_lora.methods.tensors.relora`) run on it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from mlx_lora.errors import UserError
from mlx_lora.methods.base import Method, StepHook

if TYPE_CHECKING:
    import mlx.nn as nn

    from mlx_lora.config import AdapterConfig, TrainConfig

# True: LoRA layers become CastLoRALinear (mlx_lora.methods.tensors.layers); False: mlx-lm's
# layers as they are (bench/gpu_train_vs_mlx_lm.py --variants fp32-lora)
CAST_LORA = True


class LoRA(Method):
    name = "lora"
    label = "LoRA"
    help = "low-rank adapters (QLoRA on a quantised base)"
    order = 0
    relora = True

    def apply(self, model: "nn.Module", adapter: "AdapterConfig", num_layers: int,
              keys: list[str]) -> dict[str, Any] | None:
        from mlx_lm.tuner.utils import linear_to_lora_layers

        from mlx_lora.methods.tensors.layers import cast_lora_layers

        lora_parameters = lora_parameters_for(adapter, keys)
        try:
            linear_to_lora_layers(model, num_layers, lora_parameters, use_dora=self.use_dora)
        except ValueError as exc:  # e.g. DoRA on a mixture-of-experts layer
            raise UserError(f"fine_tune_type (adapter.fine_tune_type, --fine-tune-type): {exc}") from exc
        if CAST_LORA:
            cast_lora_layers(model)
        return lora_parameters

    def hooks(self, config: "TrainConfig", model: "nn.Module", optimizer, total_steps: int,
              emit: Callable[[Any], None]) -> list[StepHook]:
        if not config.schedule.relora_every:
            return []
        from mlx_lora.methods.tensors.relora import ReLoRAHook

        return [ReLoRAHook(model, optimizer, config.schedule.relora_every, total_steps, config.run.seed, emit)]


def lora_scale(adapter: "AdapterConfig") -> float:
    import math

    return adapter.alpha / (math.sqrt(adapter.rank) if adapter.rslora else adapter.rank)


def lora_parameters_for(adapter: "AdapterConfig", keys: list[str]) -> dict[str, Any]:
    """mlx-lm's ``lora_parameters`` of adapter_config.json."""
    return {"rank": adapter.rank, "scale": lora_scale(adapter), "dropout": adapter.dropout, "keys": keys}


METHOD = LoRA()
