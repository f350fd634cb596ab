"""Adam with its moments held in 8 bits, blockwise (``optimizer.state_bits: 8``).

Adam keeps two float32 moments per trained value: 8 bytes, twice the weights themselves for
full fine-tuning and large-rank LoRA. Here each moment is stored as 8-bit codes with a float32
scale and offset per block of 64 values (``mx.quantize``, affine): 1.125 bytes a moment, 0.28×
the state. Each update dequantises the block, updates it in float32 and quantises it again,
and the step uses the float32 values it just computed (as bitsandbytes' 8-bit Adam does).

The second moment is stored as log(v + 1e-30): its values in one block span many orders of
magnitude (a block with one large gradient), and a linear 8-bit code would round the small
ones to 0 — an update of m / eps, the failure 8-bit Adam avoids with its dynamic codes. In the
log domain the error is relative (a few % on √v), which is what the denominator needs. The
first moment is stored divided by √v: m / √v is the update's direction, bounded by
(1 - β1) / √(1 - β2) (≈ 3.2) whatever the gradients' scale, so a linear code per block loses
little of it; stored as is, the small entries of a block with one large one round to 0 ± a
code (measured on such gradients, 20 steps: a mean error of 74% of float32 Adam's movement
stored as is, 1.2% this way; tests/core/test_optim8bit.py).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.optimizers as optim

BLOCK = 64
_FLOOR = 1e-30  # v's zero in the log domain


def pack(x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """A float array as (codes, scales, biases): 8 bits a value, blocks of 64 of the flattened array."""
    flat = x.astype(mx.float32).reshape(-1)
    pad = -flat.size % BLOCK
    if pad:
        flat = mx.concatenate([flat, mx.zeros((pad,), mx.float32)])
    return mx.quantize(flat.reshape(-1, BLOCK), group_size=BLOCK, bits=8)


def unpack(codes: mx.array, scales: mx.array, biases: mx.array, shape) -> mx.array:
    flat = mx.dequantize(codes, scales, biases, group_size=BLOCK, bits=8).reshape(-1)
    return flat[:math.prod(shape)].reshape(shape)


class Adam8bit(optim.Adam):
    """mlx's Adam (same arguments, bias correction included) with 8-bit moments."""

    def init_single(self, parameter: mx.array, state: dict):
        zeros = mx.zeros(parameter.shape, mx.float32)
        state["m_codes"], state["m_scales"], state["m_biases"] = pack(zeros)  # m / √v
        state["v_codes"], state["v_scales"], state["v_biases"] = pack(mx.log(zeros + _FLOOR))  # log v

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict):
        g = gradient.astype(mx.float32)
        b1, b2 = self.betas
        v = mx.exp(unpack(state["v_codes"], state["v_scales"], state["v_biases"], parameter.shape)) - _FLOOR
        v = mx.maximum(v, 0.0)
        m = unpack(state["m_codes"], state["m_scales"], state["m_biases"], parameter.shape) * mx.sqrt(v + _FLOOR)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * mx.square(g)
        state["m_codes"], state["m_scales"], state["m_biases"] = pack(m / mx.sqrt(v + _FLOOR))
        state["v_codes"], state["v_scales"], state["v_biases"] = pack(mx.log(v + _FLOOR))
        lr = self.learning_rate.astype(mx.float32)
        if self.bias_correction:
            step = self.step
            update = (lr / (1 - b1**step)) * m / (mx.sqrt(v) * mx.rsqrt(1 - b2**step) + self.eps)
        else:
            update = lr * m / (mx.sqrt(v) + self.eps)
        return (parameter.astype(mx.float32) - update).astype(parameter.dtype)


class AdamW8bit(optim.AdamW, Adam8bit):
    """AdamW's decoupled weight decay, then :class:`Adam8bit`'s update (AdamW.apply_single's
    ``super()`` is Adam8bit here)."""
