"""Attention confined to each example of a packed row, in mlx-lm's own models.

A packed row (:mod:`mlx_lora.train.packing`) holds several examples end to end; each
position carries its example's ``segment`` number (pads: -1). mlx-lm's models take no
per-token positions and build their own mask, ``create_attention_mask(h, cache,
window_size=…)`` → ``"causal"`` (or an array), once per forward, and hand it to every
layer. :func:`packed_attention` is a context manager that makes that call, in each
supported family's module, return the block-diagonal causal mask of the row instead,
(B, 1, L, L) bool: ``segment[q] == segment[k] and k <= q`` (and ``q - k < window`` where the
model asks for a sliding window: gemma3's local layers, a llama/mistral with
``sliding_window``; mlx-lm's gemma2 asks for none, and applies none unpacked either).
The models are not forked or copied: the one function each imports from
``mlx_lm.models.base`` is wrapped, once, and the wrapper defers to the original unless a
packed forward is running in this thread (a :class:`contextvars.ContextVar`), so a chat
generating in another thread of the app is untouched.

Positions are not restarted per example: an example that starts at offset p of its row
has its queries and keys rotated by positions p, p+1, … instead of 0, 1, …. RoPE rotates
a query at position m and a key at position n by angles m·θᵢ and n·θᵢ of the same
frequencies, so q·k depends on m − n only, and within an example m − n is the same
wherever it starts. That holds for every rope mlx-lm builds for the supported families:
plain (``default``), ``linear``, ``llama3``, ``yarn`` (its mscale is a constant factor) and
Phi-3's ``longrope``/``su`` (mlx-lm's SuScaledRoPE always uses the long factors, fixed
when the model is built, not chosen per sequence length as transformers does), and
trivially for SmolLM3's NoPE layers. ``dynamic`` NTK scaling changes its base with the
row's length once that passes max_position_embeddings, so it holds there only while
max_seq_length (the longest row) stays within it. It does not hold for learned absolute position tables (none of the
supported families has one). tests/core/test_packing.py checks it: every family's
per-token losses packed at an offset equal the example's own, unpacked, to float32
rounding (RoPE's cos/sin at larger angles round a little differently). Restarting
positions would need a per-token offset in ``mx.fast.rope``, which takes one offset per
sequence, so every family's rope call would have to be replaced; not done.

Cost: the mask replaces the fused causal attention's implicit mask with an array, and the
masked-out blocks are still computed (no variable-length kernel): attention work per row
is L² however many examples share it. bench/packing.py measures whether packing pays.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn

from mlx_lora.errors import UserError

# mlx-lm's modules whose models call create_attention_mask from their own namespace; mistral
# is built by llama.py (mlx-lm's MODEL_REMAPPING) and smollm3 runs llama's LlamaModel.
PATCHED_MODULES = ("llama", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "phi3")
# The model classes' modules that packing supports (the class's own module).
SUPPORTED_MODULES = PATCHED_MODULES + ("smollm3",)

_ACTIVE: contextvars.ContextVar["_PackedMasks | None"] = contextvars.ContextVar("mlx_lora_packed", default=None)
_INSTALLED: set[str] = set()


def block_causal_mask(segments: mx.array, window: int | None = None) -> mx.array:
    """(B, 1, L, L) bool from ``segments`` (B, L): True where query q may see key k — same
    segment, k ≤ q, and q − k < ``window`` when one is given."""
    length = segments.shape[1]
    query = mx.arange(length)[:, None]
    key = mx.arange(length)[None]
    allowed = query >= key  # (L, L)
    if window is not None:
        allowed = allowed & (query - key < window)
    same = segments[:, :, None] == segments[:, None, :]  # (B, L, L)
    return (same & allowed)[:, None]


class _PackedMasks:
    """The masks of one packed forward, built once per window size."""

    def __init__(self, segments: mx.array, extra_axis: bool) -> None:
        self.segments = segments
        self.extra_axis = extra_axis  # gemma2 with grouped keys: scores are (B, kv, repeats, L, L)
        self._masks: dict[int | None, mx.array] = {}

    def mask(self, window: int | None) -> mx.array:
        if window not in self._masks:
            mask = block_causal_mask(self.segments, window)
            self._masks[window] = mx.expand_dims(mask, 1) if self.extra_axis else mask
        return self._masks[window]


def _wrap(original):
    def create_attention_mask(h, cache=None, window_size=None, return_array=False):
        packed = _ACTIVE.get()
        if packed is None or cache is not None:
            return original(h, cache, window_size=window_size, return_array=return_array)
        return packed.mask(window_size)

    create_attention_mask.__wrapped__ = original
    create_attention_mask._mlx_lora_packed = True
    return create_attention_mask


def install() -> None:
    """Wrap each supported family's ``create_attention_mask`` (once per process)."""
    for name in PATCHED_MODULES:
        if name in _INSTALLED:
            continue
        module = importlib.import_module(f"mlx_lm.models.{name}")
        current = module.create_attention_mask
        if not getattr(current, "_mlx_lora_packed", False):
            module.create_attention_mask = _wrap(current)
        _INSTALLED.add(name)


def family(model: nn.Module) -> str:
    """The mlx-lm module name of ``model``'s class (``llama``, ``gemma2``…)."""
    return type(model).__module__.rsplit(".", 1)[-1]


def check_supported(model: nn.Module) -> None:
    """A :class:`UserError` unless packing knows ``model``'s family."""
    name = family(model)
    if name not in SUPPORTED_MODULES or not type(model).__module__.startswith("mlx_lm.models."):
        raise UserError(f"pack (data.pack, --pack): sequence packing is supported for the "
                        f"{', '.join(SUPPORTED_MODULES)} families, not this model's ({name}); "
                        "train it with --no-pack")


def _extra_axis(model: nn.Module) -> bool:
    if family(model) != "gemma2":
        return False
    layers = getattr(getattr(model, "model", None), "layers", None) or []
    return bool(layers) and getattr(layers[0].self_attn, "repeats", 1) > 1


@contextlib.contextmanager
def packed_attention(model: nn.Module, segments: mx.array) -> Iterator[None]:
    """Within the block, ``model``'s forward attends within each segment of ``segments`` (B, L)
    only (see the module docstring)."""
    install()
    token = _ACTIVE.set(_PackedMasks(segments, _extra_axis(model)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
