"""The loss: cross-entropy over the trained positions only; validation and test loss.

:class:`MaskedLoss` returns the *sum* over trained tokens and their count, so
gradient accumulation can divide by the tokens of the whole step (every trained
token weighs the same, however the examples fall into micro-batches).
:func:`evaluate_run` is ``mlx-lora eval``: a finished run's adapter on a split of
its own dataset, as loss and perplexity.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_lora.errors import Cancelled
from mlx_lora.events import NullReporter, Reporter, never_stop
from mlx_lora.train.batches import Example, eval_batches, make_batch


# Positions per chunk of the LM head + loss. Measured (bench/memory_check.py, CPU fp32,
# D=256 V=8192, 4 × 512 tokens, 1843 trained): peak 0.571 GB unchunked, 0.495 in chunks
# of 1024, 0.470 of 512, 0.390 of 256. The unchunked loss keeps ≈ 4.5 float32 rows of
# vocabulary size per trained position (demo model, 8 × 1024 at 80% trained: 5.2 GB).
DEFAULT_LOSS_CHUNK = 256


def _split_head(model: nn.Module):
    """(trunk, head) when the model is ``head(trunk(inputs))`` — mlx-lm's llama, mistral, qwen…
    ``Model.__call__`` — else None."""
    trunk = getattr(model, "model", None)
    if not isinstance(trunk, nn.Module):
        return None
    args = getattr(model, "args", None)
    if getattr(args, "tie_word_embeddings", False) and hasattr(getattr(trunk, "embed_tokens", None), "as_linear"):
        return trunk, trunk.embed_tokens.as_linear
    if isinstance(getattr(model, "lm_head", None), nn.Module):
        return trunk, model.lm_head
    return None


class MaskedLoss:
    """Cross-entropy over the trained positions only: ``loss(model, inputs, targets, mask,
    positions) -> (sum over trained tokens, their count)``; inputs/targets/mask are (B, L),
    positions (N,) the flat indices where mask is 1.

    Where the model splits into trunk and head, the head (a D × V matmul and a
    softmax over V) runs only at the N trained positions instead of all B·L.
    Measured on the demo model (batch 4 × 96, 40% of positions trained, LoRA on
    8 layers, CPU): 3.2 → 2.6 s per forward+backward; on the tiny test model
    (vocabulary 49152, hidden 64) 1.0 → 0.3 s. Whether the split reproduces
    ``model(inputs)`` is checked numerically once (:meth:`check`); models it
    does not fit (logit soft-capping, scaling…) use the full logits.
    """

    def __init__(self, chunk: int = None) -> None:
        self.split = None
        self.chunk = DEFAULT_LOSS_CHUNK if chunk is None else chunk  # 0: one piece

    def check(self, model: nn.Module, inputs: mx.array) -> bool:
        """Use the trained-positions path if it gives the same logits as the model on ``inputs``."""
        split = _split_head(model)
        if split is None:
            return False
        was_training = model.training
        model.eval()
        try:
            trunk, head = split
            full = model(inputs)
            parts = head(trunk(inputs))
            same = full.shape == parts.shape and mx.allclose(full, parts, rtol=1e-4, atol=1e-4).item()
        except Exception:  # an architecture whose trunk needs other arguments
            same = False
        finally:
            model.train(was_training)
        self.split = split if same else None
        return same

    def __call__(self, model: nn.Module, inputs: mx.array, targets: mx.array, mask: mx.array,
                 positions: mx.array | None = None, segments: mx.array | None = None) -> tuple[mx.array, mx.array]:
        """``positions`` None: the head runs at every position and the mask weighs the losses
        (fixed shapes for a compiled step, train/step.py); else only at ``positions``.
        ``segments`` (B, L): a packed batch, each position's example slot in its row; the
        model then attends within each example only (train/packed_attention.py)."""
        if segments is not None:
            from mlx_lora.train.packed_attention import packed_attention

            with packed_attention(model, segments):
                return self._loss(model, inputs, targets, mask, positions)
        return self._loss(model, inputs, targets, mask, positions)

    def _loss(self, model, inputs, targets, mask, positions):
        if self.split is None:
            logits = model(inputs)  # (B, L, V)
            losses = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * mask  # (B, L)
            return losses.sum(), mask.sum()
        trunk, head = self.split
        hidden = trunk(inputs)  # (B, L, D)
        hidden = hidden.reshape(-1, hidden.shape[-1])  # (B·L, D)
        if positions is None:
            weights = mask.reshape(-1)
            return _head_loss(head, hidden, targets.reshape(-1), self.chunk, model.training, weights), mask.sum()
        hidden = hidden[positions]  # (N, D)
        targets = targets.reshape(-1)[positions]  # (N,)
        return _head_loss(head, hidden, targets, self.chunk, model.training), mx.array(positions.size, mx.float32)


def _chunks(n: int, chunk: int):
    return [(start, min(n, start + chunk)) for start in range(0, n, chunk)] if chunk else [(0, n)]


def _head_loss(head, hidden: mx.array, targets: mx.array, chunk: int, training: bool = True,
               weights: mx.array | None = None) -> mx.array:
    """Summed cross-entropy of ``head(hidden)`` (N, V) against ``targets`` (N,), ``chunk``
    rows at a time, with the gradient for ``hidden`` computed in the same pass (the fused
    linear + cross-entropy of Liger and Unsloth): each chunk's logits live only while its
    loss and its (chunk, D) gradient are computed, so the loss holds one chunk's
    (chunk, V) rows instead of N, and the head is not run again in the backward.

    Measured against alternatives (bench/memory_check.py, D=256 V=8192, 4 × 512 tokens,
    1843 trained): unchunked 0.571 GB peak; ``mx.checkpoint`` per chunk 0.588 GB at 1024
    rows (MLX recomputed the chunks side by side in the backward), 0.408 at 256; this
    0.390 at 256. Without the ``mx.depends`` chain MLX also runs the chunks side by side
    (the head alone: 186 MB instead of 108 at 256 rows).
    """
    n = hidden.shape[0]
    if not training or not chunk or n <= chunk:  # no gradient wanted, or one piece: the plain loss
        total = None
        for start, stop in _chunks(n, chunk):
            h_chunk = hidden[start:stop] if total is None else mx.depends(hidden[start:stop], total)
            losses = nn.losses.cross_entropy(head(h_chunk).astype(mx.float32), targets[start:stop])
            if weights is not None:
                losses = losses * weights[start:stop]
            total = losses.sum() if total is None else total + losses.sum()
        return total

    @mx.custom_function
    def fused(h):
        pieces = []
        for start, stop in _chunks(n, chunk):
            h_chunk, t_chunk = h[start:stop], targets[start:stop]
            if pieces:  # start a chunk only when the previous one is done (else MLX runs several at once)
                h_chunk = mx.depends(h_chunk, pieces[-1])
            logits = head(h_chunk).astype(mx.float32)  # (C, V)
            lse = mx.logsumexp(logits, axis=-1, keepdims=True)  # (C, 1)
            picked = mx.take_along_axis(logits, t_chunk[:, None], axis=-1)  # (C, 1)
            # d loss / d logits = softmax − one-hot
            d_logits = mx.exp(logits - lse) - (mx.arange(logits.shape[-1])[None] == t_chunk[:, None])
            if weights is not None:
                w = weights[start:stop, None]  # (C, 1)
                d_logits, lse, picked = d_logits * w, lse * w, picked * w
            grad = mx.vjp(head, [h_chunk], [d_logits.astype(h_chunk.dtype)])[1][0]  # (C, D)
            # one array per chunk: the chunk's logits can go as soon as it exists
            pieces.append(mx.concatenate([lse - picked, grad.astype(mx.float32)], axis=1))  # (C, 1 + D)
        both = mx.concatenate(pieces)  # (N, 1 + D)
        return both[:, 0].sum(), both[:, 1:].astype(h.dtype)

    @fused.vjp
    def fused_vjp(primals, cotangents, outputs):
        return (cotangents[0] * outputs[1]).astype(primals[0].dtype)

    return fused(hidden)[0]


def dataset_loss(model: nn.Module, loss: MaskedLoss, examples: list[Example], batch_size: int, num_batches: int,
                 seed: int, should_stop: Callable[[], bool] = never_stop, pack_length: int = 0) -> tuple[float, int]:
    """(mean loss per trained token, trained tokens) over a fixed sample of batches.
    ``pack_length``: the same sample packed into rows of that many tokens (train/packing.py).

    Raises :class:`Cancelled` when ``should_stop`` says so between batches."""
    from mlx_lora.train.packing import packed_eval_batches

    was_training = model.training
    model.eval()
    total, count = mx.array(0.0), mx.array(0.0)
    batches = (packed_eval_batches(examples, batch_size, num_batches, seed, pack_length) if pack_length
               else eval_batches(examples, batch_size, num_batches, seed))
    try:
        for indices in batches:
            if should_stop():
                raise Cancelled()
            batch = make_batch(examples, indices)
            loss_sum, tokens = loss(model, *map(mx.array, batch))
            total, count = total + loss_sum, count + tokens
            mx.eval(total, count)
    finally:
        model.train(was_training)
    tokens = int(count.item())
    return (total.item() / tokens if tokens else float("nan")), tokens


@dataclasses.dataclass(frozen=True)
class EvalResult:
    split: str
    adapter: str
    loss: float
    perplexity: float
    examples: int
    tokens: int


def evaluate_run(run_dir: str | Path, split: str = "test", adapter: str = "final",
                 reporter: Reporter = NullReporter(), batch_size: int | None = None) -> EvalResult:
    """Loss and perplexity of a run's adapter (final, best, latest or step-N) on a split of its data
    (the same split the run made: same file, ratios and seed)."""
    from mlx_lm.tuner.utils import load_adapters

    from mlx_lora.data.dataset import load_splits
    from mlx_lora.errors import UserError
    from mlx_lora.train.batches import encode_records
    from mlx_lora.train.prepare import load_base
    from mlx_lora.run_folder import RunFolder

    run = RunFolder(run_dir)
    config = run.config()
    folder = run.adapter(adapter)
    data = config.data
    splits = load_splits(data.data, valid_ratio=data.valid_ratio, test_ratio=data.test_ratio, seed=config.run.seed)
    records = {"train": splits.train, "valid": splits.valid, "test": splits.test}[split]
    if not records:
        raise UserError(f"this run's data has no {split} split (test_ratio {data.test_ratio} and no {split}.jsonl); "
                        "use --split valid, or train with --test-ratio")
    model, tokenizer, _, _, _ = load_base(config, reporter)
    load_adapters(model, str(folder))
    encoded = encode_records(tokenizer, records, data.mask_prompt, data.max_seq_length, data.too_long)
    loss_fn = MaskedLoss()
    if encoded.examples:
        loss_fn.check(model, mx.array([encoded.examples[0].tokens]))
    loss, tokens = dataset_loss(model, loss_fn, encoded.examples, batch_size or data.batch_size, -1, config.run.seed)
    return EvalResult(split, str(folder), loss, math.exp(loss) if loss < 700 else float("inf"),
                      len(encoded.examples), tokens)
