"""Examples → padded batches, in an order that is a pure function of (seed, epoch).

Encoding: each record goes through :func:`mlx_lora.data.render.encode_example`
(the chat template, every assistant turn trained). Then ``max_seq_length``:
``truncate`` cuts the end, ``drop`` leaves the example out; an example with no
trained token left is always left out. Both are counted and reported.

Batching: per epoch the examples are shuffled, cut into windows of
``WINDOW_BATCHES`` batches, sorted by length inside each window and cut into
batches, and the batches are shuffled. Examples of similar length share a batch,
so little compute goes to padding, while each epoch still mixes differently.
(mlx-lm sorts by a length that is always 1 — ``CacheDataset.itemlen`` — so its
batches are padded to the longest of random examples.) Because an epoch's
order is recomputed from (seed, epoch), the data position of a checkpoint is
two integers, :class:`Cursor`.

``max_batch_tokens``: :func:`micro_batches` cuts a batch whose rows × longest
example would pass the cap into pieces that run one after the other, their
gradients summed into the same step (so the peak memory follows the cap while
the step, and so the training, stays what it was; on a long-tailed set only the
few batches of long examples are cut). Session 2 shrank those batches instead,
which changed the steps; on the H200 that measured 1.95× mlx-lm's examples/s at
0.98× its memory (bench/RESULTS.md).

A batch is ``inputs`` (B, L) int32, ``targets`` (B, L) int32 and ``mask``
(B, L) float32 with L = the longest example's length − 1;
``mask[b, t]`` is 1 where token t+1 of example b is trained; ``positions`` (N,)
int32 are the flat indices of those ones. With ``data.pack`` the batches are packed rows
instead (:mod:`mlx_lora.train.packing`); the functions here take either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Iterator

import numpy as np

from mlx_lora.errors import UserError

WINDOW_BATCHES = 32


@dataclasses.dataclass(frozen=True)
class Example:
    tokens: tuple[int, ...]
    trained: tuple[bool, ...]

    @property
    def trained_targets(self) -> int:
        """Tokens that carry the loss: trained tokens after the first (the first is never a target)."""
        return sum(self.trained[1:])


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    examples: list[Example]
    truncated: int = 0
    dropped: int = 0
    _fingerprint: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def tokens(self) -> int:
        return sum(len(e.tokens) for e in self.examples)

    @property
    def trained_tokens(self) -> int:
        return sum(e.trained_targets for e in self.examples)

    def fingerprint(self) -> str:
        """A hash of the examples' tokens and masks: a resume can tell whether its data changed."""
        if self._fingerprint is None:
            digest = hashlib.sha1()
            for example in self.examples:
                digest.update(np.asarray(example.tokens, np.int64).tobytes())
                digest.update(np.packbits(np.asarray(example.trained, bool)).tobytes())
            object.__setattr__(self, "_fingerprint", digest.hexdigest()[:16])
        return self._fingerprint


def fit_examples(encoded: list[tuple[list[int], list[bool]]], max_seq_length: int, too_long: str) -> EncodedSplit:
    """Apply the ``max_seq_length`` policy; leave out examples with nothing to learn."""
    kept, truncated, dropped = [], 0, 0
    for tokens, trained in encoded:
        if len(tokens) > max_seq_length:
            if too_long == "drop":
                dropped += 1
                continue
            tokens, trained = tokens[:max_seq_length], trained[:max_seq_length]
            truncated += 1
        example = Example(tuple(tokens), tuple(bool(t) for t in trained))
        if len(tokens) < 2 or example.trained_targets == 0:
            dropped += 1
            continue
        kept.append(example)
    return EncodedSplit(kept, truncated, dropped)


def encode_records(tokenizer, records: list[dict], mask_prompt: bool, max_seq_length: int,
                   too_long: str) -> EncodedSplit:
    from mlx_lora.data.render import encode_example

    encoded = []
    for record in records:
        example = encode_example(tokenizer, record, mask_prompt=mask_prompt)
        encoded.append((example.tokens, example.trained))
    return fit_examples(encoded, max_seq_length, too_long)


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the data stream is: the next batch is batch ``index`` of epoch ``epoch``."""

    epoch: int = 0
    index: int = 0


class BatchPlan:
    """The batches of every epoch, as lists of example indices; see the module docstring."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        if not lengths:
            raise UserError("the training set has no usable example (all were empty, or dropped by max_seq_length)")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self._cache: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return math.ceil(len(self.lengths) / self.batch_size)

    def epoch(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.lengths))
            window = self.batch_size * WINDOW_BATCHES
            batches = []
            for start in range(0, len(order), window):
                part = order[start:start + window]
                part = part[np.argsort(-self.lengths[part], kind="stable")]
                batches += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
            self._cache = {epoch: [batches[i] for i in rng.permutation(len(batches))]}
        return self._cache[epoch]

    def stream(self, cursor: Cursor) -> Iterator[tuple[Cursor, np.ndarray]]:
        """(cursor after this batch, batch) forever, starting at ``cursor``."""
        epoch, index = cursor.epoch, cursor.index
        while True:
            batches = self.epoch(epoch)
            while index < len(batches):
                batch = batches[index]
                index += 1
                yield Cursor(epoch, index), batch
            epoch, index = epoch + 1, 0

    def padding_fraction(self, epoch: int = 0) -> float:
        padded = real = 0
        for batch in self.epoch(epoch):
            lengths = self.lengths[batch]
            padded += int(lengths.max()) * len(batch)
            real += int(lengths.sum())
        return 1 - real / padded if padded else 0.0


def rows_per_pass(length: int, max_tokens: int) -> int:
    """Rows of ``length``-token examples one pass holds under ``max_tokens`` (at least one)."""
    return max(1, max_tokens // length)


def row_lengths(batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row's length in tokens: an example's, or a packed row's (positions + 1;
    :mod:`mlx_lora.train.packing`, whose batches are 2-D tables of example indices)."""
    batch = np.asarray(batch)
    if batch.ndim == 2:
        from mlx_lora.train.packing import row_lengths as packed_row_lengths

        return packed_row_lengths(batch, lengths)
    return lengths[batch]


def batch_tokens(batch: np.ndarray, lengths: np.ndarray) -> int:
    """The dataset tokens (no padding) of a batch, packed or not."""
    batch = np.asarray(batch)
    return int(lengths[batch[batch >= 0]].sum()) if batch.ndim == 2 else int(lengths[batch].sum())


def padded_tokens(batch: np.ndarray, lengths: np.ndarray) -> int:
    """Rows × the longest row, in tokens: what one pass of ``batch`` holds."""
    return len(batch) * int(row_lengths(batch, lengths).max())


def micro_batches(indices: np.ndarray, lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """``indices`` in pieces, longest first, where rows × the piece's longest row stays within
    ``max_tokens`` (at least one row each); ``[indices]`` when there is no cap or it fits.
    A packed batch (2-D) is cut into whole rows."""
    indices = np.asarray(indices)
    rows = row_lengths(indices, lengths)
    if not max_tokens or len(indices) * int(rows.max()) <= max_tokens:
        return [indices]
    order = np.argsort(-rows, kind="stable")
    pieces, start = [], 0
    while start < len(order):
        count = rows_per_pass(int(rows[order[start]]), max_tokens)
        pieces.append(indices[order[start:start + count]])
        start += count
    return pieces


def make_batch(examples: list[Example], indices, multiple: int = 1) -> tuple[np.ndarray, ...]:
    """(inputs, targets, mask) each (B, L), and positions (N,): the flat indices where mask is 1.
    ``multiple``: L (the inputs' width, the longest example − 1) is rounded up to it, the
    tokens padded to L + 1 (a GPU builds kernels per shape, and its fused attention and
    matmuls want aligned lengths; see train/step.py). A packed batch (a 2-D table of example
    indices) is laid out by :func:`mlx_lora.train.packing.make_packed_batch`, which adds
    ``segments`` (B, L) as a fifth array."""
    if np.ndim(indices) == 2:
        from mlx_lora.train.packing import make_packed_batch

        return make_packed_batch(examples, indices, multiple)
    chosen = [examples[i] for i in indices]
    longest = max(len(e.tokens) for e in chosen)
    width = -(-(longest - 1) // multiple) * multiple + 1
    tokens = np.zeros((len(chosen), width), np.int32)
    trained = np.zeros((len(chosen), width), np.float32)
    for row, example in enumerate(chosen):
        tokens[row, :len(example.tokens)] = example.tokens
        trained[row, :len(example.tokens)] = example.trained
    mask = trained[:, 1:]
    return tokens[:, :-1], tokens[:, 1:], mask, np.flatnonzero(mask).astype(np.int32)


def eval_batches(examples: list[Example], batch_size: int, num_batches: int, seed: int) -> list[np.ndarray]:
    """A fixed sample of ``num_batches`` batches (-1: all), sorted by length to limit padding."""
    order = np.random.default_rng([seed, 1_000_003]).permutation(len(examples))
    if num_batches != -1:
        order = order[:num_batches * batch_size]
    lengths = np.asarray([len(examples[i].tokens) for i in order])
    order = order[np.argsort(-lengths, kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
