"""Examples → padded batches, in an order that is a pure function of (seed, epoch).

Encoding: each record goes through :func:`mlx_lora.data.render.encode_example`
(the chat template, every assistant turn trained). Then ``max_seq_length``:
``truncate`` cuts the end, ``drop`` leaves the example out; an example with no
trained token left is always left out. Both are counted and reported.

Batching: per epoch the examples are shuffled, cut into windows of
``WINDOW_BATCHES`` batches, sorted by length inside each window and cut into
batches, and the batches are shuffled. With ``max_batch_tokens`` a batch holds
fewer than ``batch_size`` examples where rows × its longest example would pass
the cap, so the peak memory follows the cap rather than batch_size ×
max_seq_length (on a long-tailed set only the few longest batches shrink). Examples of similar length share a batch,
so little compute goes to padding, while each epoch still mixes differently.
(mlx-lm sorts by a length that is always 1 — ``CacheDataset.itemlen`` — so its
batches are padded to the longest of random examples.) Because an epoch's
order is recomputed from (seed, epoch), the data position of a checkpoint is
two integers, :class:`Cursor`.

A batch is ``inputs`` (B, L) int32, ``targets`` (B, L) int32 and ``mask``
(B, L) float32 with L = the longest example's length − 1;
``mask[b, t]`` is 1 where token t+1 of example b is trained; ``positions`` (N,)
int32 are the flat indices of those ones.
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

    def __init__(self, lengths: list[int], batch_size: int, seed: int, max_tokens: int = 0) -> None:
        if not lengths:
            raise UserError("the training set has no usable example (all were empty, or dropped by max_seq_length)")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.max_tokens = max_tokens  # 0: no cap on rows × longest
        self._cache: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller; with a token cap, epoch 0's count)."""
        if self.max_tokens:
            return len(self.epoch(0))
        return math.ceil(len(self.lengths) / self.batch_size)

    def _cut(self, part: np.ndarray) -> list[np.ndarray]:
        """A window's examples, longest first, cut into batches of ``batch_size`` — fewer where
        rows × the longest would pass ``max_tokens`` (a long example gets a smaller batch)."""
        if not self.max_tokens:
            return [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        batches, start = [], 0
        while start < len(part):
            rows = min(self.batch_size, max(1, self.max_tokens // int(self.lengths[part[start]])))
            batches.append(part[start:start + rows])
            start += rows
        return batches

    def epoch(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.lengths))
            window = self.batch_size * WINDOW_BATCHES
            batches = []
            for start in range(0, len(order), window):
                part = order[start:start + window]
                part = part[np.argsort(-self.lengths[part], kind="stable")]
                batches += self._cut(part)
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


def make_batch(examples: list[Example], indices, multiple: int = 1, limit: int = 0) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, mask) each (B, L), and positions (N,): the flat indices where mask is 1.
    ``multiple``: L + 1 is rounded up to it, but not past ``limit`` (a GPU builds kernels per
    shape; see train/step.py)."""
    chosen = [examples[i] for i in indices]
    longest = max(len(e.tokens) for e in chosen)
    width = -(-longest // multiple) * multiple
    if limit:
        width = max(longest, min(width, limit))
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
