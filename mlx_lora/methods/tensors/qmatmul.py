"""QLoRA's base matmul as dequantise-then-matmul, recomputed in the backward.

MLX's ``QuantizedLinear`` multiplies by the packed weight directly (``mx.quantized_matmul``);
for decoding (a few rows) that is the fast path, but a training step multiplies thousands
of rows, and on CUDA (MLX 0.32.4, H200) the quantised kernels ran a 1B LoRA step at 0.45× the
bf16 speed (bench/RESULTS.md, "QLoRA on the GPU"). Here a quantised layer instead
dequantises its weight to the compute dtype for the one product and lets the dense matmul
(cuBLAS, Metal's GEMM) do the work — as bitsandbytes' QLoRA does in torch. The backward
needs ``dy @ W``: a custom VJP dequantises again instead of keeping the dense copy, so only
the packed weights stay resident (what QLoRA is for) and the dense weight lives for one
product at a time.

``forward="kernel"`` keeps MLX's quantised kernel for the forward product and dequantises
only for the backward's ``dy @ W``: MLX 0.32's CUDA backend has fast tensor-core kernels
(sm80/sm90) for ``x @ W.T`` with the packed weight, but none for the untransposed product the
input gradient needs, which falls to its naive kernel (``supports_qmm_sm90`` / ``_sm80``
return false for ``transpose=False``, mlx/backend/cuda/quantized/qmm/qmm.cu) — that is where
the quantised step's time goes on the GPU (bench/gpu_qmm_probe.py).

Only the base layers' forward and the input gradient are changed: the base is frozen, so the
weight cotangents are never asked for (zeros, never evaluated). Swapped in by class, like
:func:`~mlx_lora.methods.tensors.layers.cast_lora_layers`, so saving and fusing see mlx-lm's
``QuantizedLinear`` unchanged.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def _dequantized(weight, scales, biases, group_size: int, bits: int, mode: str, dtype):
    return mx.dequantize(weight, scales, biases, group_size=group_size, bits=bits, mode=mode).astype(dtype)


def _product(group_size: int, bits: int, mode: str, forward: str = "dequantize"):
    @mx.custom_function
    def product(x, weight, scales, biases):
        if forward == "kernel":
            return mx.quantized_matmul(x, weight, scales, biases, transpose=True, group_size=group_size,
                                       bits=bits, mode=mode)
        return x @ _dequantized(weight, scales, biases, group_size, bits, mode, x.dtype).T

    @product.vjp
    def product_vjp(primals, cotangent, output):
        x, weight, scales, biases = primals
        dx = cotangent @ _dequantized(weight, scales, biases, group_size, bits, mode, cotangent.dtype)
        return dx, mx.zeros_like(weight), mx.zeros_like(scales), mx.zeros_like(biases)

    return product


_PRODUCTS: dict = {}


class DequantizedMatmulLinear(nn.QuantizedLinear):
    """``QuantizedLinear`` whose forward dequantises the weight for a dense product."""

    FORWARD = "dequantize"

    def __call__(self, x):
        mode = self.mode
        key = (self.group_size, self.bits, mode, self.FORWARD)
        if key not in _PRODUCTS:
            _PRODUCTS[key] = _product(*key)
        biases = self.get("biases")
        if biases is None:  # modes without biases (mxfp4): dequantise takes None
            y = x @ _dequantized(self["weight"], self["scales"], None, self.group_size, self.bits, mode, x.dtype).T
        else:
            y = _PRODUCTS[key](x, self["weight"], self["scales"], biases)
        if "bias" in self:
            y = y + self["bias"]
        return y


class DequantizedBackwardLinear(DequantizedMatmulLinear):
    """``QuantizedLinear`` whose forward is MLX's quantised kernel and whose input gradient
    is a dense product with the weight dequantised for it (module docstring)."""

    FORWARD = "kernel"


def dequantized_matmul_layers(model: nn.Module, forward: str = "dequantize") -> int:
    """Swap every ``QuantizedLinear`` of ``model`` (adapted or not) to
    :class:`DequantizedMatmulLinear` (``forward="kernel"``: :class:`DequantizedBackwardLinear`);
    returns how many."""
    cls = DequantizedBackwardLinear if forward == "kernel" else DequantizedMatmulLinear
    swapped = 0
    for _, module in model.named_modules():
        if type(module) is nn.QuantizedLinear:
            module.__class__ = cls
            swapped += 1
    return swapped
