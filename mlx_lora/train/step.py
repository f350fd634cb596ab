"""How a micro-batch's forward + backward runs on this device.

CPU: the loss and its gradient run eagerly, with the LM head only at the trained
positions (their number changes every batch). ``mx.compile`` did not pay there
(demo model 4.7 vs 3.6 s/step uncompiled, on the busy 2-core build machine).

GPU: a kernel is built per shape, and mlx-lm's trainer compiles its step, so
the step here is compiled too, with shapes that repeat: the inputs' width rounded
up to ``GPU_WIDTH_MULTIPLE`` (few distinct shapes, and lengths the fused attention
and matmul kernels like: 1023-wide inputs ran the 1B model at fixed length at
0.55–0.6× the speed of 1024-wide ones), and the LM head run at every position in fixed chunks, weighed
by the mask (its count varies; the mask's shape does not). On the H200 (1B
llama, batch 8 × ≤1024, RESULTS.md) the first, uncompiled version ran at 0.64×
mlx-lm's tokens/s with 1.8× its memory.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_lora import backend

GPU_WIDTH_MULTIPLE = 128


def on_gpu() -> bool:
    return backend.device_kind() != "cpu"


def for_objective(model: nn.Module, loss, objective, compiled: bool | None = None) -> tuple[Callable, Callable]:
    """``(loss_and_grad, make_batch)`` for the loop. The cross-entropy objective on a GPU gets
    the compiled step and input widths rounded up to ``GPU_WIDTH_MULTIPLE``; other objectives
    and the CPU run eagerly on the objective's batches. ``compiled`` overrides the device's
    choice (``train(..., compiled=False)``: bench/gpu_train_vs_mlx_lm.py's not-compiled run)."""
    from mlx_lora.train.batches import make_batch
    from mlx_lora.train.evaluate import MaskedLoss

    if (on_gpu() if compiled is None else compiled) and type(loss) is MaskedLoss:
        return (loss_and_grad(model, loss, compiled=True),
                lambda examples, indices: make_batch(examples, indices, GPU_WIDTH_MULTIPLE))
    return loss_and_grad(model, loss, compiled=False), objective.make_batch


def loss_and_grad(model: nn.Module, loss, compiled: bool | None = None) -> Callable:
    """``f(model, inputs, targets, mask, positions[, segments]) -> ((loss sum, tokens), grads)``,
    compiled on a GPU (``compiled`` overrides); ``segments``: a packed batch (train/packing.py)."""
    value_and_grad = nn.value_and_grad(model, loss)
    if not (on_gpu() if compiled is None else compiled):
        return value_and_grad
    state = [model.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(inputs, targets, mask):
        return value_and_grad(model, inputs, targets, mask, None)

    @partial(mx.compile, inputs=state, outputs=state)
    def packed_step(inputs, targets, mask, segments):  # the packed mask is built inside, from segments
        return value_and_grad(model, inputs, targets, mask, None, segments)

    def run(_model, inputs, targets, mask, positions=None, segments=None):
        if segments is None:
            return step(inputs, targets, mask)
        return packed_step(inputs, targets, mask, segments)

    return run


def optimizer_update(model: nn.Module, optimizer, plain: bool, compiled: bool | None = None) -> Callable:
    """``update(model, grads)``: the optimiser's update, compiled on a GPU together with the
    model's and the optimiser's state (as mlx-lm compiles its whole step) when ``plain`` —
    no method hook (ReLoRA, AdaLoRA) replaces the state between steps. Uncompiled, Adam on
    16 layers × 7 adapted linears is ~2,000 small kernels and as many graph nodes a step."""
    inner = optimizer.inner
    if not (on_gpu() and plain if compiled is None else compiled):
        return inner.update
    state = [model.state, inner.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def update(grads):
        inner.update(model, grads)

    return lambda _model, grads: update(grads)
