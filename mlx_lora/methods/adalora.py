"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form whose rank per matrix is pruned, by
importance, toward a total budget while training (the tensor code and the reference
behaviour: :mod:`mlx_lora.methods.tensors.adalora`). Its adapter is saved as plain LoRA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from mlx_lora.errors import UserError
from mlx_lora.methods.base import Method, StepHook
from mlx_lora.methods.lora import lora_parameters_for

if TYPE_CHECKING:
    import mlx.nn as nn

    from mlx_lora.config import AdapterConfig, TrainConfig


class AdaLoRA(Method):
    name = "adalora"
    label = "AdaLoRA"
    help = "LoRA whose rank per layer is pruned toward a total budget by importance"
    order = 20

    @property
    def saves_as(self) -> str:
        return "lora"  # P · diag(λ) and Q of the kept triplets: a plain LoRA adapter

    def adapter_values(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]]) -> int:
        return sum(adapter.rank * (i + o + 1) for i, o in targeted.values())  # P, Q and λ (r,), at the initial rank

    def check_adapter(self, adapter: "AdapterConfig") -> None:
        if adapter.adalora_target_rank > adapter.rank:
            adapter.fail("adalora_target_rank", f"must be at most rank ({adapter.rank}): AdaLoRA prunes from "
                                                "rank down to it")

    def check(self, config: "TrainConfig") -> None:
        super().check(config)
        adapter, schedule = config.adapter, config.schedule
        if not schedule.epochs and adapter.adalora_tinit + adapter.adalora_tfinal >= schedule.iters:
            raise UserError(f"adalora_tinit + adalora_tfinal ({adapter.adalora_tinit} + {adapter.adalora_tfinal}) "
                            f"must be less than iters ({schedule.iters}): AdaLoRA prunes between them")

    def apply(self, model: "nn.Module", adapter: "AdapterConfig", num_layers: int,
              keys: list[str]) -> dict[str, Any] | None:
        from mlx_lora.methods.tensors.adalora import to_adalora_layers

        lora_parameters = lora_parameters_for(adapter, keys)
        to_adalora_layers(model, num_layers, keys, adapter.rank, lora_parameters["scale"], adapter.dropout)
        return lora_parameters

    def hooks(self, config: "TrainConfig", model: "nn.Module", optimizer, total_steps: int,
              emit: Callable[[Any], None]) -> list[StepHook]:
        from mlx_lora.methods.tensors.adalora import AdaLoRAHook

        return [AdaLoRAHook(model, config.adapter, total_steps, emit)]


METHOD = AdaLoRA()
