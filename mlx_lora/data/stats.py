"""Token statistics of a dataset under a model's tokenizer, and train/valid overlap.

:func:`dataset_stats` encodes every record the way training will
(:func:`mlx_lora.data.render.encode_example`) and counts what a person needs
before training: how long the examples are (and the lengths themselves, for a
histogram), how many exceed ``max_seq_length`` and how many tokens truncation
would cut, how many tokens carry the loss, which replies lack an end-of-turn
token, and exact duplicates. Percentiles are nearest-rank: p50 of [1, 2, 3, 4]
is 2, always a length that occurs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable

from mlx_lora.data.render import encode_example
from mlx_lora.errors import Cancelled, UserError


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    examples: int
    total_tokens: int
    lengths: list[int]  # tokens per example, in record order
    p50_length: int
    p90_length: int
    max_length: int
    max_seq_length: int
    over_max_length: int  # examples longer than max_seq_length
    truncated_tokens: int  # tokens cut off those examples
    no_trained_tokens_left: int  # examples whose trained tokens all lie past max_seq_length
    prompt_tokens: int  # tokens without loss (system/user turns, headers)
    trained_tokens: int  # tokens with loss (replies and their end-of-turn tokens)
    missing_eos: int  # examples with an assistant turn that has no end-of-turn token
    duplicates: int  # records identical to an earlier record


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of ascending values (0 for none)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def record_key(record: dict[str, Any]) -> str:
    """A record's identity for duplicate checks: its JSON with sorted keys."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def dataset_stats(
    tokenizer,
    records: list[dict[str, Any]],
    max_seq_length: int = 2048,
    mask_prompt: bool = True,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetStats:
    """Statistics of ``records`` (valid ones) encoded for training.

    ``progress(done, total)`` is called every 100 records; ``should_stop`` is
    asked as often and raises :class:`Cancelled` when it says so.
    """
    lengths: list[int] = []
    trained_total = over = cut = lost = missing = 0
    seen: set[str] = set()
    duplicates = 0
    for i, record in enumerate(records):
        if i % 100 == 0:
            if should_stop is not None and should_stop():
                raise Cancelled("token statistics stopped")
            if progress is not None:
                progress(i, len(records))
        try:
            example = encode_example(tokenizer, record, mask_prompt)
        except UserError as exc:
            raise UserError(f"example {i + 1}: {exc}") from exc
        n = len(example.tokens)
        lengths.append(n)
        trained_total += example.trained_count
        if n > max_seq_length:
            over += 1
            cut += n - max_seq_length
            lost += not any(example.trained[:max_seq_length])
        missing += example.missing_eos_turns > 0
        key = record_key(record)
        if key in seen:
            duplicates += 1
        seen.add(key)
    if progress is not None:
        progress(len(records), len(records))
    ordered = sorted(lengths)
    total = sum(lengths)
    return DatasetStats(
        examples=len(records),
        total_tokens=total,
        lengths=lengths,
        p50_length=percentile(ordered, 50),
        p90_length=percentile(ordered, 90),
        max_length=ordered[-1] if ordered else 0,
        max_seq_length=max_seq_length,
        over_max_length=over,
        truncated_tokens=cut,
        no_trained_tokens_left=lost,
        prompt_tokens=total - trained_total,
        trained_tokens=trained_total,
        missing_eos=missing,
        duplicates=duplicates,
    )


def train_valid_overlap(train: list[dict[str, Any]], valid: list[dict[str, Any]]) -> list[int]:
    """Indices of the ``valid`` records that also appear, identical, in ``train``
    (validation loss on them measures memory, not learning)."""
    train_keys = {record_key(r) for r in train}
    return [i for i, r in enumerate(valid) if record_key(r) in train_keys]
