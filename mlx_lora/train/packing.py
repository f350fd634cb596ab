"""Sequence packing (``data.pack``): several examples end to end in each row, so a batch is
``batch_size`` rows of up to ``max_seq_length`` tokens with almost no padding.

An example of n tokens fills n − 1 positions of a row: its inputs ``tokens[:-1]``, its
targets ``tokens[1:]`` and its mask ``trained[1:]``, exactly what it fills unpacked, so no
position predicts across two examples and ``mask_prompt`` applies unchanged. Each position
also carries its example's slot in the row (``segments``, −1 for the pads at the end),
from which :mod:`mlx_lora.train.packed_attention` makes the model attend within each
example only. The loss over a packed batch is the loss over the same examples unpacked
(tests/core/test_packing.py).

Rows: per epoch the examples are shuffled with (seed, epoch), and each window of
``PACK_WINDOW`` of them is packed first-fit decreasing (longest first, each into the
first row it fits) into rows of ``max_seq_length − 1`` positions; the rows are shuffled and
cut into batches of ``batch_size`` rows. So an epoch's batches are a function of (seed,
epoch), as unpacked, and a checkpoint's :class:`~mlx_lora.train.batches.Cursor` resumes
them. A packed batch is a (rows, slots) int array of example indices, −1 where a row
has fewer examples than the fullest; ``max_batch_tokens`` cuts it into passes of whole
rows (:func:`~mlx_lora.train.batches.micro_batches`).

What changes with packing on: ``batch_size`` counts rows, so a step holds about
``batch_size × max_seq_length`` tokens, as many examples as fill them (the run's first
event says how many on average), and an epoch has fewer steps.
"""

from __future__ import annotations

import numpy as np

from mlx_lora.train.batches import BatchPlan, Example

PACK_WINDOW = 1024  # examples packed together: the first-fit runs over one window at a time


def row_capacity(row_length: int) -> int:
    """Positions of a row of ``row_length`` tokens (inputs are one shorter than the tokens)."""
    return max(1, row_length - 1)


def pack_rows(order: np.ndarray, lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """The examples ``order`` (indices into ``lengths``, in tokens) packed first-fit decreasing
    into rows of ``capacity`` positions (an example of n tokens takes n − 1); an example longer
    than a row gets a row of its own."""
    order = np.asarray(order)
    need = lengths[order] - 1
    rows: list[list[int]] = []
    free = np.zeros(len(order), np.int64)  # free positions of each row so far
    for i, n in zip(order[np.argsort(-need, kind="stable")], -np.sort(-need, kind="stable")):
        fits = np.flatnonzero(free[:len(rows)] >= n)
        if len(fits):
            rows[fits[0]].append(int(i))
            free[fits[0]] -= n
        else:
            free[len(rows)] = capacity - n
            rows.append([int(i)])
    return rows


def as_table(rows: list[list[int]]) -> np.ndarray:
    """Rows of example indices as one (rows, slots) int64 array, −1 in the empty slots."""
    table = np.full((len(rows), max(len(r) for r in rows)), -1, np.int64)
    for r, row in enumerate(rows):
        table[r, :len(row)] = row
    return table


def row_lengths(table: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each packed row's length in the unpacked batches' unit: positions + 1 tokens."""
    need = np.where(table >= 0, lengths[np.maximum(table, 0)] - 1, 0)
    return need.sum(axis=1) + 1


def real_tokens(table: np.ndarray, lengths: np.ndarray) -> int:
    """The dataset tokens of a packed batch (its examples' whole lengths)."""
    return int(lengths[table[table >= 0]].sum())


class PackedPlan(BatchPlan):
    """The packed batches of every epoch (see the module docstring); ``stream`` and the
    cursor are :class:`BatchPlan`'s. ``len()`` is epoch 0's batch count (another epoch's
    packing may differ by a row or two)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, row_length: int) -> None:
        super().__init__(lengths, batch_size, seed)
        self.row_length = row_length

    def __len__(self) -> int:
        return len(self.epoch(0))

    def epoch(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._cache:
            rng = np.random.default_rng([self.seed, epoch, 1])
            order = rng.permutation(len(self.lengths))
            rows = []
            for start in range(0, len(order), PACK_WINDOW):
                rows += pack_rows(order[start:start + PACK_WINDOW], self.lengths, row_capacity(self.row_length))
            rows = [rows[i] for i in rng.permutation(len(rows))]
            self._cache = {epoch: [as_table(rows[i:i + self.batch_size])
                                   for i in range(0, len(rows), self.batch_size)]}
        return self._cache[epoch]

    def padding_fraction(self, epoch: int = 0) -> float:
        """Share of the batches' positions that are padding (each batch as wide as its longest row)."""
        padded = real = 0
        for table in self.epoch(epoch):
            widths = row_lengths(table, self.lengths) - 1
            padded += int(widths.max()) * len(table)
            real += int(widths.sum())
        return 1 - real / padded if padded else 0.0

    def examples_per_row(self, epoch: int = 0) -> float:
        tables = self.epoch(epoch)
        return sum(int((t >= 0).sum()) for t in tables) / max(sum(len(t) for t in tables), 1)


def make_packed_batch(examples: list[Example], table: np.ndarray, multiple: int = 1) -> tuple[np.ndarray, ...]:
    """(inputs, targets, mask, segments) each (B, L), and positions (N,) the flat indices where
    mask is 1, returned as (inputs, targets, mask, positions, segments); B = rows of ``table``,
    L = the fullest row's positions rounded up to ``multiple``."""
    rows = [[int(i) for i in row if i >= 0] for row in table]
    fill = [sum(len(examples[i].tokens) - 1 for i in row) for row in rows]
    width = -(-max(fill) // multiple) * multiple
    inputs = np.zeros((len(rows), width), np.int32)
    targets = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), np.float32)
    segments = np.full((len(rows), width), -1, np.int32)
    for r, row in enumerate(rows):
        start = 0
        for slot, i in enumerate(row):
            tokens, trained = examples[i].tokens, examples[i].trained
            stop = start + len(tokens) - 1
            inputs[r, start:stop] = tokens[:-1]
            targets[r, start:stop] = tokens[1:]
            mask[r, start:stop] = trained[1:]
            segments[r, start:stop] = slot
            start = stop
    return inputs, targets, mask, np.flatnonzero(mask).astype(np.int32), segments


def packed_eval_batches(examples: list[Example], batch_size: int, num_batches: int, seed: int,
                        row_length: int) -> list[np.ndarray]:
    """The examples :func:`~mlx_lora.train.batches.eval_batches` would pick, packed into batches of
    ``batch_size`` rows: the same examples, so the same validation loss."""
    from mlx_lora.train.batches import eval_batches

    chosen = np.concatenate(eval_batches(examples, batch_size, num_batches, seed)) if examples else []
    if not len(chosen):
        return []
    lengths = np.asarray([len(e.tokens) for e in examples])
    rows = pack_rows(chosen, lengths, row_capacity(row_length))
    return [as_table(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
