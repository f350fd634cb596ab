"""Samplers that carry their own random key, so two answers can be interleaved.

mlx-lm's ``make_sampler`` draws from MLX's global key (``mx.random.categorical``
without ``key=``): two answers generated step by step in turn would take every
other key from one sequence, and each would differ from what it gives alone.
:class:`KeyedSampler` keeps the same chain of filters (top-p, min-p, top-k, in
mlx-lm's order, with mlx-lm's own functions) and splits its own key per draw:
``key, sub = split(key)`` is exactly what ``mx.random.seed(s)`` followed by
keyless draws does (checked in tests/core/test_chat_interleave.py), so a keyed
answer with seed ``s`` is the answer ``mx.random.seed(s)`` + mlx-lm gives.

The key is split when the sampler is *called*, which in mlx-lm's
``generate_step`` is while the next step's graph is built — lazily, before any
evaluation — so the sequence of keys per answer does not depend on when MLX
evaluates it or what else runs in between.
"""

from __future__ import annotations

from typing import Any


class KeyedSampler:
    """``sampler(logprobs) -> token`` for mlx-lm's ``generate_step``, with its own key."""

    def __init__(self, temperature: float, seed: int, *, top_p: float = 1.0, min_p: float = 0.0,
                 top_k: int = 0) -> None:
        import mlx.core as mx
        from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

        self.temperature = temperature
        self.key = mx.random.key(seed)
        self._filters: list[Any] = []  # the order of mlx_lm.sample_utils.make_sampler
        if 0 < top_p < 1.0:
            self._filters.append(lambda x: apply_top_p(x, top_p))
        if min_p != 0.0:
            self._filters.append(lambda x: apply_min_p(x, min_p, 1))
        if top_k > 0:
            self._filters.append(lambda x: apply_top_k(x, top_k))

    def __call__(self, logprobs):
        import mlx.core as mx

        if self.temperature == 0:
            return mx.argmax(logprobs, axis=-1)  # mlx-lm's greedy_sampler
        for apply in self._filters:
            logprobs = apply(logprobs)
        self.key, draw = mx.random.split(self.key)
        return mx.random.categorical(logprobs * (1.0 / self.temperature), key=draw)
