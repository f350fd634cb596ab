"""LoRA-FA (Zhang et al. 2023), a throwaway to show that a method is one file: LoRA whose
A matrices stay at their random initialisation; only B trains."""

from __future__ import annotations

from mlx_lora.methods.lora import LoRA


class LoRAFA(LoRA):
    name = "lora_fa"
    label = "LoRA-FA"
    help = "LoRA with the A matrices frozen (only B trains)"
    order = 5
    relora = False

    def apply(self, model, adapter, num_layers, keys):
        lora_parameters = super().apply(model, adapter, num_layers, keys)
        for _, module in model.named_modules():
            if hasattr(module, "lora_a"):
                module.freeze(keys=["lora_a"], recurse=False)
        return lora_parameters

    def hooks(self, config, model, optimizer, total_steps, emit):
        return []

    def adapter_values(self, adapter, targeted):
        return sum(adapter.rank * o for _, o in targeted.values())

    @property
    def saves_as(self):
        return "lora"


METHOD = LoRAFA()
