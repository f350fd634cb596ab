"""The adapter layer classes of this project, beside mlx-lm's, and which classes count as
adapter layers.

mlx-lm's ``LoRALinear``, ``LoRASwitchLinear``, ``LoRAEmbedding``, ``DoRALinear`` and
``DoRAEmbedding`` are used as they are; two of ours join them:

- :class:`CastLoRALinear`: mlx-lm's ``LoRALinear`` with A and B cast to the input's dtype
  inside the product (the trainer swaps it in: :func:`cast_lora_layers`);
- :class:`AdaLoRALinear`: LoRA in SVD form, ``W + scale · (P · diag(λ) · Q)ᵀ``, whose
  rank per matrix AdaLoRA prunes while training (:mod:`mlx_lora.methods.tensors.adalora`; saved
  AdaLoRA adapters are plain LoRA).

:func:`adapter_layer_classes` is what attaching, switching off and stripping adapters
(:mod:`mlx_lora.adapters.attach`) and the DPO reference (the base with its adapter
switched off) recognise as an adapter layer wrapping a base layer (``.linear`` or
``.embedding``).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.lora import LoRALinear

INIT_STD = 0.02  # PEFT's init of AdaLoRA's lora_A / lora_B


class CastLoRALinear(LoRALinear):
    """mlx-lm's ``LoRALinear`` with A and B cast to the input's dtype inside the product.

    mlx-lm keeps ``lora_a``/``lora_b`` in float32 and computes ``x @ lora_a`` with ``x`` in
    the compute dtype, so on a bfloat16 model the product promotes ``x`` to float32 and
    keeps that copy for the backward — per adapted linear and token, twice the bytes of the
    input the layer keeps anyway (on the H200, 1B llama, bf16: 211–228 KB per layer and
    token against 108 KB; bench/RESULTS.md). Casting the weights instead keeps the
    float32 master weights, their float32 gradients and the adapter files as they were;
    the product runs in the compute dtype (as torch autocast runs PEFT's). On a float32
    model the casts are no-ops. The class is swapped in on mlx-lm's layers
    (:func:`cast_lora_layers`), so fuse, save and load stay mlx-lm's.
    """

    def __call__(self, x):
        y = self.linear(x)
        z = (self.dropout(x) @ self.lora_a.astype(x.dtype)) @ self.lora_b.astype(x.dtype)
        return y + (self.scale * z).astype(x.dtype)


def cast_lora_layers(model: nn.Module) -> int:
    """Swap mlx-lm's ``LoRALinear`` layers of ``model`` to :class:`CastLoRALinear`; returns how many."""
    swapped = 0
    for _, module in model.named_modules():
        if type(module) is LoRALinear:
            module.__class__ = CastLoRALinear
            swapped += 1
    return swapped


class AdaLoRALinear(nn.Module):
    """``y = x Wᵀ + scale · ((dropout(x) P) ⊙ λ) Q`` with P (in, r), λ (r,), Q (r, out).

    As in PEFT's ``AdaLoraModel``, λ starts at zero (the adapter starts as the identity)
    and P, Q at N(0, 0.02²); ``scale`` is ``alpha / rank``, fixed while pruning."""

    @staticmethod
    def from_base(linear: nn.Module, r: int, scale: float, dropout: float = 0.0) -> "AdaLoRALinear":
        output_dims, input_dims = linear.weight.shape
        if isinstance(linear, nn.QuantizedLinear):
            input_dims = input_dims * 32 // linear.bits
        layer = AdaLoRALinear(input_dims, output_dims, r, scale, dropout)
        layer.linear = linear
        return layer

    def __init__(self, input_dims: int, output_dims: int, r: int, scale: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dims, output_dims, bias=False)
        self.dropout = nn.Dropout(p=dropout)
        self.scale = scale
        self.lora_a = mx.random.normal((input_dims, r)) * INIT_STD  # (in, r)
        self.lora_e = mx.zeros((r,))  # (r,): the adapter starts as the identity
        self.lora_b = mx.random.normal((r, output_dims)) * INIT_STD  # (r, out)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.linear(x)
        # A·diag(E) and B in the input's dtype (see CastLoRALinear: no float32 copy of x)
        z = (self.dropout(x) @ (self.lora_a * self.lora_e).astype(x.dtype)) @ self.lora_b.astype(x.dtype)
        return y + (self.scale * z).astype(x.dtype)

    def to_lora(self) -> LoRALinear:
        """The same function as an mlx-lm ``LoRALinear`` of rank r (pruned columns are zero)."""
        lora = LoRALinear.from_base(self.linear, r=self.lora_e.shape[0], scale=self.scale)
        lora.lora_a, lora.lora_b = self.lora_a * self.lora_e, self.lora_b
        return lora

    def fuse(self, dequantize: bool = False) -> nn.Module:
        return self.to_lora().fuse(dequantize=dequantize)


def adapter_layer_classes() -> tuple[type, ...]:
    """Every class that is an adapter layer around a base layer (``.linear`` or ``.embedding``)."""
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRASwitchLinear

    # CastLoRALinear is a LoRALinear; AdaLoRALinear exists only while an AdaLoRA run trains
    return (LoRALinear, LoRASwitchLinear, LoRAEmbedding, DoRALinear, DoRAEmbedding, AdaLoRALinear)
