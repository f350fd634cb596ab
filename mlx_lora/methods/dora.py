"""DoRA (Liu et al. 2024): weight-decomposed LoRA, mlx-lm's ``DoRALinear``: a LoRA update
whose direction and magnitude (``m``, one value per output) are trained apart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlx_lora.methods.lora import LoRA

if TYPE_CHECKING:
    from mlx_lora.config import AdapterConfig

# The float32 input copies of mlx-lm's DoRA products on a bf16/fp16 model (fitted on the H200).
LORA_PROMOTION_FACTOR = 1.3


class DoRA(LoRA):
    name = "dora"
    label = "DoRA"
    help = "weight-decomposed LoRA"
    order = 10
    relora = False
    use_dora = True

    def hooks(self, config, model, optimizer, total_steps, emit):
        return []

    def adapter_values(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]]) -> int:
        return sum(adapter.rank * (i + o) + o for i, o in targeted.values())  # + the magnitude m (out,)

    def activation_bytes_per_token(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]],
                                   compute_bytes: int) -> float:
        # mlx-lm's DoRA computes x @ lora_a with A in float32: each adapted linear keeps a float32
        # copy of its input for the backward (measured on the H200, 1B llama, bf16: 211–228 KB
        # per layer and token against 108 KB from the counts without it). Our LoRA layers cast
        # A and B instead (methods/tensors/layers.CastLoRALinear).
        if compute_bytes >= 4:
            return 0.0
        return 4 * LORA_PROMOTION_FACTOR * sum(i for i, _ in targeted.values())


METHOD = DoRA()
