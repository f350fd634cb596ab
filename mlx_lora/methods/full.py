"""Full fine-tuning: every weight of the last ``num_layers`` layers trains (as mlx-lm's
``fine_tune_type: full``); there is no adapter, so the base is dequantised and the
adapter file holds those layers' weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlx_lora.methods.base import Method

if TYPE_CHECKING:
    import mlx.nn as nn

    from mlx_lora.config import AdapterConfig


class Full(Method):
    name = "full"
    label = "Full fine-tuning"
    help = "every weight of the chosen layers"
    order = 90
    has_adapter = False
    dequantize_reason = "for full fine-tuning"

    def apply(self, model: "nn.Module", adapter: "AdapterConfig", num_layers: int,
              keys: list[str]) -> dict[str, Any] | None:
        for layer in model.layers[len(model.layers) - num_layers:]:
            layer.unfreeze()
        return None

    def trainable_bytes(self, adapter: "AdapterConfig", targeted: dict[str, tuple[int, int]], layers: int,
                        layer_parameters: int, compute_bytes: int) -> float:
        return layers * layer_parameters * compute_bytes

METHOD = Full()
