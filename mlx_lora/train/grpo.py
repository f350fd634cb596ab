"""GRPO on adapters: sample a group of answers per prompt, score them, and update with
the clipped policy-gradient loss plus a KL term to the base.

Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath), as TRL's
``GRPOTrainer`` does it. For each prompt of the step's batch (``batch_size`` prompts):

1. sample G = ``group_size`` completions from the current policy (the model in eval
   mode, ``temperature``, at most ``max_completion_tokens``; :func:`sample_group`);
2. score each with the rewards (:mod:`mlx_lora.rewards`) and normalise within the
   group (:func:`group_advantages`): ``A = (r - mean) / (std + 1e-4)`` with the
   sample std (n − 1), or, Dr. GRPO (Liu et al. 2025), ``A = r - mean``;
3. record the per-token log-probabilities of the sampled tokens under the policy
   (``old``) and under the reference: the same model with its adapter switched off
   (:func:`mlx_lora.adapters.adapter_disabled`, as DPO does), no second copy;
4. take ``policy_updates`` optimiser steps on those samples with, per completion token
   (:func:`grpo_token_loss`)::

       ratio = exp(logp - old)
       loss  = -min(ratio · A, clip(ratio, 1 - ε, 1 + ε) · A) + β · KL
       KL    = exp(ref - logp) - (ref - logp) - 1         (the k3 estimator, ≥ 0)

   averaged over each completion's tokens (std) or summed and divided by
   ``max_completion_tokens`` (none), then averaged over the B·G completions.

A batch is R = B·G rows, row ``i·G + g`` being completion g of prompt i:
``inputs``/``targets`` (R, L) int32, ``mask`` (R, L) float32 (1 at completion tokens
up to and including the end-of-turn token), ``advantages`` (R,), ``old_logps`` and
``ref_logps`` (R, L).

Exact resume: the sampling draws from MLX's global key, which the loop re-seeds from
(seed, step) before every step (the checkpoint's ``rng`` entry), so a resumed step
samples what the uninterrupted one did. With ``policy_updates > 1`` the samples that
later steps reuse are kept in the checkpoint (``method_state.safetensors``,
:class:`GRPOHook`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import never_stop
from mlx_lora.train.batches import EncodedSplit, eval_batches
from mlx_lora.methods.base import StepHook

SHOWN_SAMPLES = 3  # completions a RewardReport carries, for the log and the app
BATCH_KEYS = ("inputs", "targets", "mask", "positions", "advantages", "old_logps", "ref_logps")


@dataclasses.dataclass(frozen=True)
class PromptExample:
    """One prompt record, encoded. ``tokens`` (the prompt) and ``trained`` (none) are what the
    batch plan and the resume fingerprint read; ``prompt`` and ``row`` go to the rewards."""

    tokens: tuple[int, ...]
    trained: tuple[bool, ...]
    prompt: Any
    row: dict[str, Any]
    where: str  # "train record 12", for reward errors

    @property
    def trained_targets(self) -> int:
        return 0


def encode_prompts(tokenizer, records: list[dict], split: str, max_seq_length: int, too_long: str) -> EncodedSplit:
    """The prompts' tokens; a prompt longer than ``max_seq_length`` keeps its end (truncate: the
    question is last) or is left out (drop)."""
    from mlx_lora.data.prompts import encode_prompt, reward_fields

    kept, truncated, dropped = [], 0, 0
    for number, record in enumerate(records, 1):
        tokens = encode_prompt(tokenizer, record)
        if len(tokens) > max_seq_length:
            if too_long == "drop":
                dropped += 1
                continue
            tokens, truncated = tokens[-max_seq_length:], truncated + 1
        kept.append(PromptExample(tuple(tokens), (False,) * len(tokens), record["prompt"], reward_fields(record),
                                  f"{split} record {number}"))
    return EncodedSplit(kept, truncated, dropped)


# -- sampling ------------------------------------------------------------------------
def sample_group(model: nn.Module, prompt: list[int], group_size: int, max_tokens: int, temperature: float,
                 end_ids: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (G, T) int32, lengths (G,)): G completions of one prompt, each cut after its
    first end token (which it keeps). ``temperature`` 0 is greedy.

    The G rows share the prompt, so they are one batch over one mlx-lm KV cache with no
    padding; mlx-lm's ``generate_step`` samples one sequence at a time, and its
    ``BatchGenerator`` pads and schedules prompts of different lengths, which this does
    not need. The sampler is mlx-lm's (``make_sampler``)."""
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    sampler = make_sampler(temp=temperature)
    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt] * group_size), cache=cache)[:, -1, :]  # (G, V)
    stop = mx.array(sorted(end_ids)) if end_ids else None
    out, done = [], mx.zeros((group_size,), mx.bool_)
    for _ in range(max_tokens):
        logprobs = logits.astype(mx.float32)
        logprobs = logprobs - mx.logsumexp(logprobs, axis=-1, keepdims=True)
        token = sampler(logprobs)  # (G,)
        out.append(token)
        if stop is not None:
            done = done | (token[:, None] == stop[None, :]).any(axis=1)
        mx.eval(token, done)
        if done.all().item() or len(out) == max_tokens:
            break
        logits = model(token[:, None], cache=cache)[:, -1, :]
    tokens = np.array(mx.stack(out, axis=1), dtype=np.int32)  # (G, T)
    lengths = np.full(group_size, tokens.shape[1], dtype=np.int32)
    for g in range(group_size):
        ends = np.flatnonzero(np.isin(tokens[g], list(end_ids))) if end_ids else []
        if len(ends):
            lengths[g] = ends[0] + 1
    return tokens, lengths


# -- advantages and the loss ---------------------------------------------------------------
def group_advantages(rewards: np.ndarray, group_size: int, normalization: str) -> np.ndarray:
    """(R,) advantages of (R,) rewards in groups of ``group_size`` consecutive rows."""
    groups = np.asarray(rewards, np.float64).reshape(-1, group_size)  # (B, G)
    centred = groups - groups.mean(axis=1, keepdims=True)
    if normalization == "std":
        centred = centred / (groups.std(axis=1, ddof=1, keepdims=True) + 1e-4)
    return centred.reshape(-1).astype(np.float32)


def grpo_token_loss(logps: mx.array, old_logps: mx.array, ref_logps: mx.array, advantages: mx.array,
                    clip_epsilon: float, beta: float) -> tuple[mx.array, mx.array]:
    """(per-token loss, per-token KL), both (R, L), from (R, L) log-probabilities and (R,) advantages."""
    ratio = mx.exp(logps - old_logps)
    advantage = advantages[:, None] if advantages.ndim == 1 else advantages
    surrogate = mx.minimum(ratio * advantage, mx.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * advantage)
    delta = ref_logps - logps
    kl = mx.exp(delta) - delta - 1
    return -surrogate + beta * kl, kl


def token_logps(model: nn.Module, split, inputs: mx.array, targets: mx.array, positions: mx.array) -> mx.array:
    """(N,) log-probability of the target token at each of the N flat ``positions`` of (R, L).

    ``split`` is :class:`~mlx_lora.train.evaluate.MaskedLoss`'s (trunk, head) or None; with it
    the head (576 × 49,152 on the demo model) runs at the answer tokens only, not at every
    prompt token."""
    flat_targets = targets.reshape(-1)[positions]  # (N,)
    if split is None:
        logits = model(inputs).astype(mx.float32)  # (R, L, V)
        return -nn.losses.cross_entropy(logits.reshape(-1, logits.shape[-1])[positions], flat_targets)
    trunk, head = split
    hidden = trunk(inputs)  # (R, L, D)
    hidden = hidden.reshape(-1, hidden.shape[-1])[positions]  # (N, D)
    return -nn.losses.cross_entropy(head(hidden).astype(mx.float32), flat_targets)


def _per_row(values: mx.array, positions: mx.array, rows: int, width: int) -> mx.array:
    """(R,) sums of (N,) per-position values by the row each position lies in."""
    owner = positions // width  # (N,)
    one_hot = (owner[None, :] == mx.arange(rows)[:, None]).astype(mx.float32)  # (R, N)
    return one_hot @ values


class GRPOLoss:
    """``loss(model, inputs, targets, mask, positions, advantages, old_logps, ref_logps) -> (sum
    over answers, answers)``. Per position (N,): ``old_logps`` (empty when every sampling is
    followed by one update: then old = the current log-probabilities, stop_gradient, ratio 1)
    and ``ref_logps`` (empty when ``beta`` is 0). :attr:`last_kl` is the mean KL per answer
    token of the last call (lazy; evaluated with the loss), for the RewardReport."""

    def __init__(self, clip_epsilon: float, beta: float, normalization: str, max_tokens: int) -> None:
        from mlx_lora.train.evaluate import MaskedLoss

        self.clip_epsilon, self.beta, self.normalization, self.max_tokens = clip_epsilon, beta, normalization, max_tokens
        self.masked = MaskedLoss()
        self.last_kl: mx.array | None = None

    def check(self, model: nn.Module, inputs: mx.array) -> bool:
        from mlx_lora.adapters import adapter_layers

        if not adapter_layers(model):
            raise UserError("objective grpo: the model has no adapter layers to switch off for the reference "
                            "model; use fine_tune_type lora or dora")
        return self.masked.check(model, inputs)

    @property
    def split(self):
        return self.masked.split

    def __call__(self, model, inputs, targets, mask, positions, advantages, old_logps, ref_logps):
        rows, width = inputs.shape
        logps = token_logps(model, self.split, inputs, targets, positions)  # (N,)
        old = mx.stop_gradient(logps) if old_logps.size == 0 else old_logps
        ref = mx.stop_gradient(logps) if ref_logps.size == 0 else ref_logps
        owner = positions // width
        per_token, kl = grpo_token_loss(logps[None], old[None], ref[None], advantages[owner][None], self.clip_epsilon,
                                        self.beta if ref_logps.size else 0.0)
        self.last_kl = mx.stop_gradient(kl.mean()) if ref_logps.size else None
        totals = _per_row(per_token[0], positions, rows, width)  # (R,)
        if self.normalization == "std":
            losses = totals / mx.maximum(mask.sum(axis=1), 1)
        else:
            losses = totals / self.max_tokens
        return losses.sum(), mx.array(rows, mx.float32)


# -- one generation batch ---------------------------------------------------------------
@dataclasses.dataclass
class Generation:
    """The sampled, scored batch of one step, and what its RewardReport says about it."""

    batch: tuple[np.ndarray, ...]  # BATCH_KEYS
    rewards: np.ndarray  # (R,) summed
    per_function: dict[str, np.ndarray]  # name -> (R,)
    lengths: np.ndarray  # (R,) completion tokens
    samples: list[tuple[str, str, float]]  # (prompt, completion, reward)
    seconds: float


def _pad(rows: list[list[int]], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return out


class GRPOObjective:
    """The loop's interface (:mod:`mlx_lora.train.objectives`) for grpo; :meth:`bind` gives it
    the model and returns the :class:`GRPOHook` that reports rewards and keeps reused samples."""

    name = "grpo"

    def __init__(self, config) -> None:
        from mlx_lora.rewards import RewardSet

        self.settings = settings = config.grpo
        self.rewards = RewardSet.from_config(settings)
        self.notes = [f"GRPO: {settings.group_size} answers per prompt (up to {settings.max_completion_tokens} "
                      f"tokens, temperature {settings.temperature:g}), rewards {', '.join(self.rewards.names)}; "
                      f"KL beta {settings.grpo_beta:g} to the base with the adapter switched off; the loss is per "
                      "answer and the validation loss is minus the mean reward of greedy answers"]
        if settings.reward_file:
            self.notes.append(f"running your reward function from {settings.reward_file} in a separate process "
                              f"({settings.reward_timeout:g} s per call)")
        self.model = self.tokenizer = self.loss = None
        self.end_ids: set[int] = set()
        self.cache: list[Generation] = []  # the current generation batch's pieces, reused by later updates
        self.pending: list[Generation] = []
        self.updates_done = 0  # optimiser steps taken (the loop's step)
        self.piece = 0  # micro-batch calls within the current step
        self.splits_encoded = 0

    # -- the loop's interface ----------------------------------------------------------
    def encode(self, tokenizer, records, data) -> EncodedSplit:
        # the loop encodes the training split first, then the validation split: the names are
        # for reward errors ("valid record 3")
        split = ("train", "valid")[min(self.splits_encoded, 1)]
        self.splits_encoded += 1
        self.rewards.check_records(records, split)
        return encode_prompts(tokenizer, records, split, data.max_seq_length, data.too_long)

    def make_loss(self) -> GRPOLoss:
        s = self.settings
        self.loss = GRPOLoss(s.clip_epsilon, s.grpo_beta, s.advantage_normalization, s.max_completion_tokens)
        return self.loss

    def bind(self, model, tokenizer, total_steps: int, steps_per_report: int, emit) -> "GRPOHook":
        from mlx_lora.data.render import end_token_ids

        self.model, self.tokenizer = model, tokenizer
        self.end_ids = end_token_ids(tokenizer)
        return GRPOHook(self, total_steps, steps_per_report, emit)

    def make_batch(self, examples, indices) -> tuple[np.ndarray, ...]:
        """The step's batch of ``indices``' prompts: sampled and scored now, or, within
        ``policy_updates`` of the last sampling, that sampling's batch again."""
        piece, self.piece = self.piece, self.piece + 1
        if self.updates_done % self.settings.policy_updates and piece < len(self.cache):
            return self.cache[piece].batch
        generation = self.generate([examples[i] for i in indices])
        self.pending.append(generation)
        return generation.batch

    def evaluate(self, model, loss, examples, batch_size, num_batches, seed, should_stop):
        """(minus the mean reward, {"val_reward"}) of one greedy answer per validation prompt."""
        total, count = 0.0, 0
        for indices in eval_batches(examples, batch_size, num_batches, seed):
            for i in indices:
                if should_stop():
                    raise Cancelled()
                example = examples[i]
                tokens, lengths = self._sample(example.tokens, 1, 0.0)
                completion = self._decode(tokens[0, :lengths[0]])
                total += sum(self.rewards.score(example.prompt, completion, int(lengths[0]), example.row,
                                                example.where).values())
                count += 1
        if not count:
            return float("nan"), {}
        return -total / count, {"val_reward": total / count}

    # -- sampling and scoring ---------------------------------------------------------------
    def _sample(self, prompt, group_size: int, temperature: float):
        model = self.model
        was_training = model.training
        model.eval()  # no dropout while sampling
        try:
            return sample_group(model, list(prompt), group_size, self.settings.max_completion_tokens, temperature,
                                self.end_ids)
        finally:
            model.train(was_training)

    def _decode(self, tokens) -> str:
        ids = [int(t) for t in tokens if int(t) not in self.end_ids]
        return self.tokenizer.decode(ids)

    def generate(self, prompts: list[PromptExample]) -> Generation:
        start = time.perf_counter()
        s = self.settings
        G = s.group_size
        rows, starts, lengths, scores, samples = [], [], [], [], []
        for example in prompts:
            tokens, group_lengths = self._sample(example.tokens, G, s.temperature)
            for g in range(G):
                completion_ids = tokens[g, :group_lengths[g]]
                completion = self._decode(completion_ids)
                score = self.rewards.score(example.prompt, completion, int(group_lengths[g]), example.row,
                                           example.where)
                scores.append(score)
                rows.append(list(example.tokens) + completion_ids.tolist())
                starts.append(len(example.tokens))
                lengths.append(int(group_lengths[g]))
                if g == 0 and len(samples) < SHOWN_SAMPLES:
                    text = example.prompt if isinstance(example.prompt, str) else example.prompt[-1].get("content", "")
                    samples.append((str(text), completion, float(sum(score.values()))))
        names = self.rewards.names
        per_function = {n: np.array([sc[n] for sc in scores], np.float32) for n in names}
        rewards = np.sum([per_function[n] for n in names], axis=0).astype(np.float32)
        advantages = group_advantages(rewards, G, s.advantage_normalization)
        width = max(len(r) for r in rows) - 1
        full = _pad(rows, width + 1)
        inputs, targets = full[:, :-1], full[:, 1:]
        mask = np.zeros((len(rows), width), np.float32)
        for r, (begin, n) in enumerate(zip(starts, lengths)):
            mask[r, begin - 1:begin - 1 + n] = 1.0  # targets[t] is token t + 1
        positions = np.flatnonzero(mask.reshape(-1)).astype(np.int32)  # (N,)
        x, y, at = mx.array(inputs), mx.array(targets), mx.array(positions)
        split = self.loss.split if self.loss is not None else None
        empty = np.zeros(0, np.float32)
        old = ref = empty
        if s.policy_updates > 1:  # later updates need the sampling policy's log-probabilities
            old = np.array(mx.stop_gradient(token_logps(self.model, split, x, y, at)))
        if s.grpo_beta > 0:
            from mlx_lora.adapters import adapter_disabled

            with adapter_disabled(self.model):
                ref = np.array(mx.stop_gradient(token_logps(self.model, split, x, y, at)))
        batch = (inputs, targets, mask, positions, advantages, old, ref)
        return Generation(batch, rewards, per_function, np.array(lengths), samples, time.perf_counter() - start)

    # -- after each update (the hook) ---------------------------------------------------------
    def step_done(self) -> tuple[list[Generation], float | None]:
        """(the step's fresh generations (none when it reused the cached ones), the KL of its
        last micro-batch (None without a reference, beta 0))."""
        kl = self.loss.last_kl if self.loss is not None else None
        kl = None if kl is None else float(kl.item())
        fresh, self.pending = self.pending, []
        if fresh:
            self.cache = fresh
        self.updates_done += 1
        self.piece = 0
        return fresh, kl


class GRPOHook(StepHook):
    """Reports the rewards (one :class:`~mlx_lora.run_events.RewardReport` per report,
    averaged since the last one) and keeps reused samples in the checkpoint."""

    def __init__(self, objective: GRPOObjective, total_steps: int, steps_per_report: int,
                 emit: Callable[[Any], None]) -> None:
        self.objective, self.total_steps, self.steps_per_report, self.emit = (objective, total_steps,
                                                                             steps_per_report, emit)
        self.window: list[Generation] = []
        self.kls: list[float] = []

    def after_update(self, step: int, grads: dict) -> None:
        fresh, kl = self.objective.step_done()
        self.window += fresh
        if kl is not None:
            self.kls.append(kl)
        if (step % self.steps_per_report == 0 or step == self.total_steps) and self.window:
            self.emit(reward_report(step, self.window, self.kls))
            self.window, self.kls = [], []

    def state(self) -> dict[str, mx.array]:
        objective = self.objective
        out = {"grpo.updates_done": mx.array(objective.updates_done)}
        if objective.settings.policy_updates > 1 and objective.updates_done % objective.settings.policy_updates:
            for k, generation in enumerate(objective.cache):
                for key, value in zip(BATCH_KEYS, generation.batch):
                    out[f"grpo.cache.{k}.{key}"] = mx.array(value)
        return out

    def restore(self, weights: dict, state: dict[str, mx.array]) -> dict:
        objective = self.objective
        if "grpo.updates_done" in state:
            objective.updates_done = int(state["grpo.updates_done"].item())
        pieces = sorted({int(k.split(".")[2]) for k in state if k.startswith("grpo.cache.")})
        objective.cache = [Generation(tuple(np.array(state[f"grpo.cache.{k}.{key}"]) for key in BATCH_KEYS),
                                      np.zeros(0), {}, np.zeros(0), [], 0.0) for k in pieces]
        return weights


def reward_report(step: int, generations: list[Generation], kls: list[float]):
    from mlx_lora.run_events import RewardReport

    rewards = np.concatenate([g.rewards for g in generations])
    names = list(generations[-1].per_function)
    per_function = {n: round(float(np.concatenate([g.per_function[n] for g in generations]).mean()), 6)
                    for n in names}
    lengths = np.concatenate([g.lengths for g in generations])
    samples = generations[-1].samples
    return RewardReport(
        step=step, mean_reward=round(float(rewards.mean()), 6), reward_std=round(float(rewards.std()), 6),
        rewards=per_function, kl=round(float(np.mean(kls)), 6) if kls else None,
        completion_tokens=round(float(lengths.mean()), 3),
        generation_s=round(float(np.mean([g.seconds for g in generations])), 3),
        sample_prompts=tuple(p for p, _, _ in samples), samples=tuple(c for _, c, _ in samples),
        sample_rewards=tuple(round(r, 6) for _, _, r in samples))
