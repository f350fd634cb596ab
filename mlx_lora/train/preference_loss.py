"""DPO and ORPO on adapters: pairs → batches, the two losses, the adapter-off reference,
and the validation metrics (loss, reward margin, reward accuracy).

A batch of B pairs is one padded batch of 2B rows, the chosen answers in rows
``[0, B)`` and the rejected ones in ``[B, 2B)`` (:func:`make_pair_batch`), so one
forward pass scores both. A sequence's score is the sum of the log-probabilities of
its answer tokens (the prompt is masked; :mod:`mlx_lora.data.pairs`).

DPO (Rafailov et al. 2023), per pair, with policy π (base + adapter) and reference
π_ref::

    loss = -log σ(β · [(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))])

The reference is the same model with its adapter layers swapped for the base layers
they wrap (:func:`mlx_lora.adapters.adapter_disabled`, what Chat's "base" side
uses): no second copy of the weights, and exact for LoRA, DoRA and a quantised base. Its log-probabilities are computed under
``stop_gradient``. At the start, when the adapter's B matrices are zero, π = π_ref
and the loss is log 2. The reward of an answer is β(log π − log π_ref).

ORPO (Hong et al. 2024), per pair, with the *mean* log-probability per answer
token ``ℓ`` (no reference)::

    odds(ℓ) = ℓ - log(1 - e^ℓ)
    loss = -ℓ(c) + λ · -log σ(odds(ℓ(c)) - odds(ℓ(r)))

Its reward is λ·ℓ, as TRL reports it. The loss a step reports and the validation
loss are means per pair (not per token).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import never_stop
from mlx_lora.train.batches import EncodedSplit, Example, eval_batches, make_batch
from mlx_lora.train.evaluate import MaskedLoss


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """The chosen and rejected answers of one prompt, encoded. ``tokens`` and ``trained``
    are both sides one after the other: what the batch plan (length buckets), the speed
    figure and the resume fingerprint read."""

    chosen: Example
    rejected: Example

    @property
    def tokens(self) -> tuple[int, ...]:
        return self.chosen.tokens + self.rejected.tokens

    @property
    def trained(self) -> tuple[bool, ...]:
        return self.chosen.trained + self.rejected.trained

    @property
    def trained_targets(self) -> int:
        return self.chosen.trained_targets + self.rejected.trained_targets


def _fit(tokens: list[int], trained: list[bool], max_seq_length: int) -> Example:
    return Example(tuple(tokens[:max_seq_length]), tuple(bool(t) for t in trained[:max_seq_length]))


def encode_pairs(tokenizer, records: list[dict], max_seq_length: int, too_long: str) -> EncodedSplit:
    """Encode each pair's two sides (answer tokens trained). ``max_seq_length`` applies to
    each side: ``truncate`` cuts its end, ``drop`` leaves the pair out; a pair where a side
    has no answer token left is left out."""
    from mlx_lora.data.pairs import encode_side

    kept, truncated, dropped = [], 0, 0
    for record in records:
        sides = [encode_side(tokenizer, record, side) for side in ("chosen", "rejected")]
        if any(len(s.tokens) > max_seq_length for s in sides):
            if too_long == "drop":
                dropped += 1
                continue
            truncated += 1
        chosen, rejected = (_fit(s.tokens, s.trained, max_seq_length) for s in sides)
        if min(len(chosen.tokens), len(rejected.tokens)) < 2 or not (chosen.trained_targets
                                                                     and rejected.trained_targets):
            dropped += 1
            continue
        kept.append(PreferencePair(chosen, rejected))
    return EncodedSplit(kept, truncated, dropped)


def make_pair_batch(pairs: list[PreferencePair], indices) -> tuple[np.ndarray, ...]:
    """:func:`~mlx_lora.train.batches.make_batch` of the 2B rows: chosen first, then rejected."""
    chosen = [pairs[i].chosen for i in indices]
    rows = chosen + [pairs[i].rejected for i in indices]
    return make_batch(rows, range(len(rows)))


# -- scores and losses -------------------------------------------------------------------
def sequence_logps(model: nn.Module, split, inputs: mx.array, targets: mx.array, mask: mx.array,
                   positions: mx.array) -> tuple[mx.array, mx.array]:
    """(sum of the trained tokens' log-probabilities, their count), both (R,) for R rows.

    ``split`` is :class:`MaskedLoss`'s (trunk, head) or None; with it the head runs on the
    N trained positions only."""
    rows, width = inputs.shape
    counts = mask.sum(axis=1)  # (R,)
    if split is None:
        logits = model(inputs).astype(mx.float32)  # (R, L, V)
        return -(nn.losses.cross_entropy(logits, targets) * mask).sum(axis=1), counts
    trunk, head = split
    hidden = trunk(inputs)  # (R, L, D)
    hidden = hidden.reshape(-1, hidden.shape[-1])[positions]  # (N, D)
    token_logps = -nn.losses.cross_entropy(head(hidden).astype(mx.float32),
                                           targets.reshape(-1)[positions])  # (N,)
    owner = positions // width  # (N,) the row of each position
    one_hot = (owner[None, :] == mx.arange(rows)[:, None]).astype(mx.float32)  # (R, N)
    return one_hot @ token_logps, counts


def dpo_terms(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):
    """(loss, chosen reward, rejected reward), each (B,), from sequence log-probabilities."""
    chosen_reward = beta * (policy_chosen - reference_chosen)
    rejected_reward = beta * (policy_rejected - reference_rejected)
    return -nn.log_sigmoid(chosen_reward - rejected_reward), chosen_reward, rejected_reward


def log_odds(mean_logp: mx.array) -> mx.array:
    """log(p / (1 - p)) of p = exp(mean_logp) < 1; ``log(-expm1(x))`` is log(1 - e^x), accurate near 0."""
    return mean_logp - mx.log(-mx.expm1(mx.minimum(mean_logp, -1e-6)))


def orpo_terms(sum_chosen, count_chosen, sum_rejected, count_rejected, orpo_lambda: float):
    """(loss, chosen reward, rejected reward), each (B,), from sums and counts of answer log-probs."""
    mean_chosen, mean_rejected = sum_chosen / count_chosen, sum_rejected / count_rejected
    odds_ratio = -nn.log_sigmoid(log_odds(mean_chosen) - log_odds(mean_rejected))
    return -mean_chosen + orpo_lambda * odds_ratio, orpo_lambda * mean_chosen, orpo_lambda * mean_rejected


class PreferenceLoss:
    """``loss(model, inputs, targets, mask, positions) -> (sum of per-pair losses, pairs)``
    on a :func:`make_pair_batch` batch; :meth:`terms` also gives the rewards."""

    def __init__(self, objective: str, beta: float = 0.1, orpo_lambda: float = 0.1) -> None:
        if objective not in ("dpo", "orpo"):
            raise ValueError(objective)
        self.objective, self.beta, self.orpo_lambda = objective, beta, orpo_lambda
        self.masked = MaskedLoss()

    def check(self, model: nn.Module, inputs: mx.array) -> bool:
        """Whether the trunk/head split fits (see MaskedLoss.check); DPO needs adapter layers."""
        from mlx_lora.adapters import adapter_layers

        if self.objective == "dpo" and not adapter_layers(model):
            from mlx_lora.methods import METHODS

            raise UserError("objective dpo: the model has no adapter layers to switch off for the reference "
                            f"model; use fine_tune_type {' or '.join(n for n, m in METHODS.items() if m.has_adapter)}")
        return self.masked.check(model, inputs)

    def reference_logps(self, model: nn.Module, *batch) -> mx.array:
        """Sequence log-probabilities of the base (the adapters switched off), (2B,), no gradient."""
        from mlx_lora.adapters import adapter_disabled

        with adapter_disabled(model):
            sums, _ = sequence_logps(model, self.masked.split, *batch)
        return mx.stop_gradient(sums)

    def terms(self, model: nn.Module, inputs, targets, mask, positions):
        half = inputs.shape[0] // 2
        sums, counts = sequence_logps(model, self.masked.split, inputs, targets, mask, positions)
        if self.objective == "dpo":
            reference = self.reference_logps(model, inputs, targets, mask, positions)
            return dpo_terms(sums[:half], sums[half:], reference[:half], reference[half:], self.beta)
        return orpo_terms(sums[:half], counts[:half], sums[half:], counts[half:], self.orpo_lambda)

    def __call__(self, model: nn.Module, inputs, targets, mask, positions) -> tuple[mx.array, mx.array]:
        losses, _, _ = self.terms(model, inputs, targets, mask, positions)
        return losses.sum(), mx.array(losses.shape[0], mx.float32)


def evaluate_pairs(model: nn.Module, loss: PreferenceLoss, pairs: list[PreferencePair], batch_size: int,
                   num_batches: int, seed: int, should_stop: Callable[[], bool] = never_stop
                   ) -> tuple[float, dict[str, float]]:
    """(mean loss per pair, {"reward_margin", "reward_accuracy"}) over a fixed sample of batches."""
    was_training = model.training
    model.eval()
    total = margin = wins = mx.array(0.0)
    count = 0
    try:
        for indices in eval_batches(pairs, batch_size, num_batches, seed):
            if should_stop():
                raise Cancelled()
            losses, chosen, rejected = loss.terms(model, *map(mx.array, make_pair_batch(pairs, indices)))
            total, margin = total + losses.sum(), margin + (chosen - rejected).sum()
            wins = wins + (chosen > rejected).astype(mx.float32).sum()
            count += len(indices)
            mx.eval(total, margin, wins)
    finally:
        model.train(was_training)
    if not count:
        return float("nan"), {}
    return total.item() / count, {"reward_margin": margin.item() / count, "reward_accuracy": wins.item() / count}


class PreferenceObjective:
    """The loop's interface (see :mod:`mlx_lora.train.objectives`) for dpo and orpo."""

    def __init__(self, config) -> None:
        settings = config.preference
        self.name = settings.objective
        self.beta, self.orpo_lambda = settings.beta, settings.orpo_lambda
        if self.name == "dpo":
            self.notes = [f"DPO (beta {self.beta:g}): the reference is the base model with the adapter switched "
                          "off; losses are means per pair, the loss starts at log 2 = 0.693"]
        else:
            self.notes = [f"ORPO (lambda {self.orpo_lambda:g}): the chosen answer's loss plus the odds-ratio "
                          "term; losses are means per pair"]
        if not config.data.mask_prompt:
            self.notes.append("mask_prompt is off, but preference objectives always score the answers only")

    def encode(self, tokenizer, records, data) -> EncodedSplit:
        return encode_pairs(tokenizer, records, data.max_seq_length, data.too_long)

    @staticmethod
    def make_batch(examples, indices):
        return make_pair_batch(examples, indices)

    def make_loss(self) -> PreferenceLoss:
        return PreferenceLoss(self.name, self.beta, self.orpo_lambda)

    def evaluate(self, model, loss, examples, batch_size, num_batches, seed, should_stop):
        return evaluate_pairs(model, loss, examples, batch_size, num_batches, seed, should_stop)

