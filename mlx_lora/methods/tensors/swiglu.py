"""SwiGLU with a backward that keeps only its two inputs.

mlx-lm's models compute their MLP as ``down(swiglu(gate(x), up(x)))`` with
``swiglu(g, u) = silu(g) * u`` (``mlx_lm.models.activations``, compiled). Differentiated
as it is, the backward keeps ``sigmoid(g)`` and ``silu(g)`` beside ``g`` and ``u``: two
more (tokens × intermediate) arrays per layer, the widest activations of a transformer
layer. Here the same forward (mlx-lm's own compiled function) carries a custom VJP that
recomputes ``sigmoid(g)`` from ``g`` in the backward, as Liger's fused SwiGLU does in torch:

    d/dg = dy · u · σ(g) · (1 + g · (1 − σ(g))),    d/du = dy · g · σ(g)

Measured on this CPU with the trainer's own step (``bench/memory_check.py --configs
demo-r8-l8-2x512,demo-r16-all-4x1024 --mlx-lm-swiglu``, the demo model in float32): the peak
went from 11.55 GB to 10.04 GB at 4 × 1024 (rank 16, every layer; the step's own memory
× 0.86) and from 1.48 to 1.38 GB at 2 × 512 (8 layers; × 0.89), the step no slower (182 s
against 206 s, on a loaded machine). The memory estimate counts 3 intermediate-wide arrays a
token for these models instead of 5 (:data:`mlx_lora.train.memory.LEAN_INTERMEDIATE_PER_TOKEN`).
Not yet measured on a GPU.

Swapped in by name: each mlx-lm model module that imported ``swiglu`` gets this one
(:func:`use_lean_swiglu`), so the models are not forked and their outputs are bit for bit
mlx-lm's (the forward is mlx-lm's function). Gemma's GeGLU is not a SwiGLU and is left alone.
"""

from __future__ import annotations

import sys

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import activations

# The model types whose MLP mlx-lm computes with activations.swiglu (llama's MLP also serves
# mistral and smollm3; qwen3_moe's experts through switch_layers.SwiGLU): the memory estimate
# counts 3 intermediate-wide arrays a token for these while training, 5 for the others.
SWIGLU_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "phi3", "smollm3")

_MLX_LM_SWIGLU = activations.swiglu


@mx.custom_function
def lean_swiglu(gate, x):
    return _MLX_LM_SWIGLU(gate, x)


@lean_swiglu.vjp
def _lean_swiglu_vjp(primals, cotangent, output):
    gate, x = primals
    sigmoid = mx.sigmoid(gate)
    d_gate = cotangent * x * (sigmoid * (1 + gate * (1 - sigmoid)))
    d_x = cotangent * gate * sigmoid
    return d_gate.astype(gate.dtype), d_x.astype(x.dtype)


def use_lean_swiglu(model: nn.Module) -> list[str]:
    """Point every mlx-lm module that ``model``'s layers come from, and that computes
    ``swiglu`` with mlx-lm's function, at :func:`lean_swiglu`; returns those modules' names.
    Process-wide and idempotent: the forward is unchanged, so a model loaded later (chat in
    the same process) computes the same values."""
    names = {type(module).__module__ for _, module in model.named_modules()}
    patched = []
    for name in sorted(names):
        module = sys.modules.get(name)
        if module is not None and name.startswith("mlx_lm.") and getattr(module, "swiglu", None) is _MLX_LM_SWIGLU:
            module.swiglu = lean_swiglu
            patched.append(name)
        elif module is not None and getattr(module, "swiglu", None) is lean_swiglu:
            patched.append(name)
    return patched
