"""Dequantising an MLX-quantised model exactly: in float32, rounded once to the target dtype.

``mx.dequantize`` computes ``scale * q + bias`` in the dtype of the scales. A GGUF's
Q4_0/Q4_1/Q8_0 tensors arrive with float16 scales and biases (the file's own ``d`` and
``m``), so mlx-lm's ``dequantize_model`` rounded every weight to float16, and the
"float32" base the CPU trains on differed from the file's exact values (``d·q + m``, as
gguf-py and transformers compute them) by up to 0.0039 a weight on the demo model.
In float32 the result is exact: ``d·q`` needs at most 11 + 8 bits of mantissa, so the
product is exact and only the sum with ``m`` can round, once, as in gguf-py
(tests/core/test_gguf_dequant.py checks it bit for bit).
"""

from __future__ import annotations

from typing import Any

__all__ = ["dequantize_exact", "dequantize_model"]


def dequantize_exact(weight, scales, biases, group_size: int, bits: int, mode: str = "affine", dtype=None):
    """``mx.dequantize`` with float32 scales and biases; cast to ``dtype`` (default: the
    scales' own dtype, as ``mx.dequantize`` returns) after the exact float32 result."""
    import mlx.core as mx

    target = scales.dtype if dtype is None else dtype
    kwargs: dict[str, Any] = {"group_size": group_size, "bits": bits}
    if mode != "affine":
        kwargs["mode"] = mode
    exact = mx.dequantize(weight, scales.astype(mx.float32),
                          None if biases is None else biases.astype(mx.float32), **kwargs)
    return exact if target == mx.float32 else exact.astype(target)


def dequantize_model(model, dtype=None):
    """mlx-lm's ``dequantize_model``, in float32: every quantised layer becomes its dense
    twin with exact weights, rounded once to ``dtype`` (default: the layer's scales' dtype).
    Layer by layer, so the float32 copy of one layer is the only extra memory."""
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    dense = []
    for name, module in model.named_modules():
        has_bias = "bias" in module
        if isinstance(module, nn.QuantizedLinear):
            cls, kwargs = nn.Linear, {"bias": has_bias}
        elif isinstance(module, nn.QuantizedEmbedding):
            cls, kwargs = nn.Embedding, {}
        elif isinstance(module, QuantizedSwitchLinear):
            cls, kwargs = SwitchLinear, {"bias": has_bias}
        else:
            continue
        weight = dequantize_exact(module.weight, module.scales, module.get("biases"), module.group_size,
                                  module.bits, getattr(module, "mode", "affine"), dtype)
        layer = cls(*weight.shape[::-1], **kwargs)
        if has_bias:
            layer.bias = module.bias
        layer.weight = weight
        dense.append((name, layer))
    if dense:
        model.update_modules(tree_unflatten(dense))
    return model
