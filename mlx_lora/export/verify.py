"""Check an export against the model it came from: same prompts, compare logits.

The reference is the base with the adapter on it (as chat runs it), the export is
whatever was written (a fused folder loaded back with mlx-lm, a GGUF imported back,
PEFT tensors applied by PEFT's own convention…). All run in float32. Over every
position of :data:`PROMPTS` (32 fixed chats through the model's template), and over
every vocabulary entry there, three distances, each taken with the same statistics
(the mean and the max of |Δlogit| over those same positions and entries):

- the export's **error**: export − tuned (base+adapter);
- the **adapter's effect**: tuned − base;
- the export's **distance from the base**: export − base.

The pass rule (README, "Export"):

1. **top-1 agreement** of export and tuned model ≥ the kind's minimum (99 % unquantised);
2. **max error** ≤ the kind's tolerance (unquantised exports only);
3. **the adapter is in there**: mean error ≤ ½ × the adapter's mean effect. An export
   that dropped the adapter (mlx-lm #1172: fusing into a quantised base) is the base,
   so its error *is* the adapter's effect, and fails; rounding noise only adds to it.
   Quantised GGUF files replace this with **the adapter's effect kept** (below): they
   are refused when less than ``min_effect_kept`` of the fine-tune's shift survives.
4. When 3 fails and the adapter's mean effect is within the export's own rounding
   (≤ 2 × the kind's ``rounding``: the mean |Δlogit| that storing the weights in that
   dtype alone can cause), or below ``min_adapter_effect``, the check cannot tell the
   export from the base: its status is "the adapter's effect is too small to verify"
   (:data:`TOO_SMALL`), which is not a pass. An exact (float32) export or the adapter
   itself has no rounding to hide in and can still verify a weak adapter.

Quality figures, on the same positions (every check reports them; README, "GGUF"):

- **mean KL** (nats per position): KL(tuned ‖ export) of the next-token distributions —
  what quantising cost; and KL(tuned ‖ base), the adapter's effect in the same units;
- **the adapter's effect kept**: how much of the fine-tune's shift of the logits the export
  still makes, ``kept = Σ ⟨e − b, t − b⟩ / Σ ‖t − b‖²`` over every position, with t, b, e
  base+adapter's, the base's and the export's logits, each centred over the vocabulary
  (logits are defined up to a constant). 1: the shift is all there; 0: the export is the
  base. Rounding noise is uncorrelated with the shift, so it makes ``kept`` noisier without
  lowering it — unlike the mean error, which noise alone can push past half the effect on
  a tiny model at 4 bits. Its standard error is the jackknife's over the prompts;
- **the adapter's top-1 changes kept**: of the positions where the adapter changes the most
  likely next token, the share where the export makes the same change.

Thresholds are per kind of export (:data:`THRESHOLDS`): quantising the export adds
noise of its own, so 8- and 4-bit exports are held to looser agreement, never to a
looser adapter check.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Event, never_stop

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "How do I reverse a list in Python?",
    "Give me three tips for better sleep.",
    "What is 17 times 23?",
    "Translate 'good morning' into Spanish.",
    "Who wrote Pride and Prejudice?",
    "Describe a cat to someone who has never seen one.",
    "What causes the seasons on Earth?",
    "Suggest a name for a pet turtle.",
    "Summarise the plot of Romeo and Juliet.",
    "What is the boiling point of water at sea level?",
    "Tell me a short joke.",
    "How many legs does a spider have?",
    "What is the difference between weather and climate?",
    "Write a polite email declining a meeting.",
    "Why is the sky blue?",
    "List the planets of the solar system.",
    "What does a compiler do?",
    "Give me a recipe idea with eggs and spinach.",
    "What is the largest ocean?",
    "Explain what a neural network is to a child.",
    "How do you make a cup of tea?",
    "What year did the first person walk on the Moon?",
    "Name three primary colours.",
    "What is the square root of 144?",
    "Write one sentence about autumn.",
    "What should I pack for a beach holiday?",
    "How does a bicycle stay upright?",
    "What is the opposite of 'ancient'?",
    "Ahoy! Where be the treasure buried?",
)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    min_top1_agreement: float
    max_abs_logit_diff: float | None  # None: not checked (quantised exports)
    rounding: float = 1e-4  # mean |Δlogit| that storing the export in its dtype alone may cause
    max_error_share_of_effect: float = 0.5  # mean |export − tuned| ≤ this × mean |tuned − base|
    min_adapter_effect: float = 1e-4  # below this the adapter does nothing measurable
    # None: rule 3 as above; a share: rule 3 is "kept ≥ this" instead (quantised GGUF files)
    min_effect_kept: float | None = None
    # rule 2 leaves out this share of the positions, the worst (mixtures of experts: :func:`for_model`)
    max_diff_spared: float = 0.0


# A router picks each token's experts by their top-k scores: where two experts' scores are all
# but tied, the rounding of the stored weights (float16) can pick the other one at that position,
# a jump of the logits there that no other position shows. Measured on the tiny qwen3_moe
# (8 experts, 2 a token) as a float16 GGUF in llama.cpp: 548 of 552 positions within 0.06, then
# 0.11, 0.13, 0.39 and 0.57. Rule 2 is then taken over all positions but the worst 1 %; top-1
# agreement and the adapter's rule still count every position.
ROUTER_SPARED = 0.01


def routes_experts(config: dict) -> bool:
    """Whether a model's config.json describes a mixture of experts (a router picking k of n)."""
    n = max(int(config.get(key) or 0) for key in ("num_experts", "num_local_experts", "n_routed_experts"))
    return n > 1 and int(config.get("num_experts_per_tok") or 1) < n


def for_model(thresholds: Thresholds, config: dict) -> Thresholds:
    """``thresholds`` as they apply to this model: a mixture of experts spares :data:`ROUTER_SPARED`
    of the positions from the max rule (router near-ties, above); other models are checked everywhere."""
    if thresholds.max_abs_logit_diff is None or not routes_experts(config):
        return thresholds
    return dataclasses.replace(thresholds, max_diff_spared=max(thresholds.max_diff_spared, ROUTER_SPARED))


# Measured on the demo model with a 30-step LoRA (adapter effect: mean |Δlogit| 1.94):
# float16 fused weights gave max |Δ| 0.024 and 100 % top-1 agreement; q8_0 GGUF 96.9 %,
# MLX 8-bit (group 32) 89.4 % (mean |Δ| 0.15: near-ties flip, the adapter survives);
# 4-bit re-quantisation of the already-4-bit demo base 57-65 % with mean |Δ| 3.3-3.8 —
# more than the fine-tune itself, so those exports fail, as they should.
# ``rounding`` (mean |Δlogit|): float16's is the max |Δ| measured above (its mean is lower,
# so this errs towards "too small to verify"); bfloat16 keeps 3 fewer mantissa bits (× 8);
# q8 and q4 are the mean |Δ| measured above.
THRESHOLDS = {
    "exact": Thresholds(0.99, 1e-3, rounding=1e-4),  # float32 all the way (adapter-only, PEFT, float32 fused)
    "float16": Thresholds(0.99, 0.25, rounding=0.024),  # float16 storage of the fused weights
    "bfloat16": Thresholds(0.99, 1.0, rounding=0.2),  # bfloat16 keeps 3 fewer mantissa bits than float16
    "q8": Thresholds(0.85, None, rounding=0.15),
    "q4": Thresholds(0.75, None, rounding=3.8),
}
TOO_SMALL = "the adapter's effect is too small to verify"  # an ExportVerified status; not a pass


@dataclasses.dataclass(frozen=True)
class ExportVerified(Event):
    """The result of one check of an export; ``passed`` False fails the export."""

    check: str  # what was compared, e.g. "fused mlx folder (mlx_lm.load)", "GGUF f16 (imported back)"
    passed: bool
    prompts: int
    positions: int
    top1_agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    adapter_effect: float  # mean |logits(base+adapter) − logits(base)|: mean_abs_logit_diff's statistic
    distance_from_base: float  # mean |logits(export) − logits(base)|
    adapter_top1_changes: float  # share of positions whose top-1 the adapter changes
    thresholds: dict
    problems: tuple[str, ...] = ()
    status: str = "checked"  # "not run" (the reason in problems) or TOO_SMALL (not a pass)
    adapter_max_effect: float = 0.0  # max |logits(base+adapter) − logits(base)|: max_abs_logit_diff's
    mean_kl: float | None = None  # KL(tuned ‖ export), nats per position
    adapter_kl: float | None = None  # KL(tuned ‖ base): the adapter's effect in the same units
    adapter_effect_kept: float | None = None  # the share of the fine-tune's logit shift kept (module docstring)
    adapter_effect_kept_se: float | None = None  # its standard error (jackknife over the prompts)
    adapter_top1_changes_kept: float | None = None  # of the adapter's top-1 changes, the share the export makes
    # The run's validation loss (nats per trained token) through the export, base+adapter and the base,
    # on the same examples (None: not measured; the reason is in the export's notes)
    val_loss: float | None = None
    val_loss_tuned: float | None = None
    val_loss_base: float | None = None
    val_tokens: int = 0

    @property
    def val_loss_improvement_kept(self) -> float | None:
        """(base − export) / (base − tuned) of the validation loss: the fine-tune's gain the export keeps."""
        if self.val_loss is None or self.val_loss_tuned is None or self.val_loss_base is None:
            return None
        gain = self.val_loss_base - self.val_loss_tuned
        return (self.val_loss_base - self.val_loss) / gain if gain > 0 else None


@dataclasses.dataclass
class _Sums:
    positions: int = 0
    agree: int = 0
    adapter_changes: int = 0
    max_diff: float = 0.0
    max_effect: float = 0.0
    sum_diff: float = 0.0
    sum_effect: float = 0.0
    sum_from_base: float = 0.0
    sum_kl: float = 0.0
    sum_adapter_kl: float = 0.0
    changes_kept: int = 0
    kept_num: list = dataclasses.field(default_factory=list)  # per prompt: Σ ⟨e − b, t − b⟩ (centred)
    kept_den: list = dataclasses.field(default_factory=list)  # per prompt: Σ ‖t − b‖²
    position_max: list = dataclasses.field(default_factory=list)  # per position: max |Δlogit| over the vocabulary


def _kept(num: list[float], den: list[float]) -> tuple[float | None, float | None]:
    """Σ num / Σ den and its jackknife standard error over the prompts."""
    total_num, total_den, n = sum(num), sum(den), len(num)
    if total_den <= 0:
        return None, None
    kept = total_num / total_den
    if n < 2:
        return kept, None
    leave_one_out = [(total_num - a) / (total_den - b) for a, b in zip(num, den) if total_den - b > 0]
    mean = sum(leave_one_out) / len(leave_one_out)
    se = ((n - 1) / n * sum((x - mean) ** 2 for x in leave_one_out)) ** 0.5
    return kept, se


def prompt_token_ids(session, prompts: tuple[str, ...] = PROMPTS) -> list[list[int]]:
    """Each prompt as a one-turn chat through the model's template, with the assistant's
    turn opened (the positions where the tuned model's answer starts)."""
    from mlx_lora.chat.session import ChatSettings

    return [session.encode([{"role": "user", "content": p}], ChatSettings()) for p in prompts]


def _batches(prompts: list[list[int]], size: int):
    for start in range(0, len(prompts), size):
        chunk = prompts[start:start + size]
        length = max(len(p) for p in chunk)
        # right padding: causal attention keeps the real positions unaffected
        yield [p + [0] * (length - len(p)) for p in chunk], [len(p) for p in chunk]


def _logits(model, batch) -> Any:
    import mlx.core as mx

    out = model(mx.array(batch)).astype(mx.float32)  # (B, L, V)
    mx.eval(out)
    return out


def compare_logits(
    reference: Callable[[list[list[int]]], tuple[Any, Any]],
    export: Callable[[list[list[int]]], Any],
    prompts: list[list[int]],
    check: str,
    thresholds: Thresholds,
    should_stop: Callable[[], bool] = never_stop,
    batch_size: int = 4,
) -> ExportVerified:
    """``reference(batch)`` → (tuned logits, base logits), ``export(batch)`` → logits, each (B, L, V)."""
    import mlx.core as mx

    sums = _Sums()
    for batch, lengths in _batches(prompts, batch_size):
        if should_stop():
            raise Cancelled("export cancelled during verification")
        tuned, base = reference(batch)
        exported = export(batch)
        if exported.shape != tuned.shape:
            raise UserError(f"{check}: the export's logits have shape {tuple(exported.shape)}, the tuned "
                            f"model's {tuple(tuned.shape)} — not the same model")
        mask = mx.array([[i < n for i in range(len(batch[0]))] for n in lengths])  # (B, L)
        diff = mx.abs(exported - tuned).max(axis=-1)  # (B, L)
        mean_diff = mx.abs(exported - tuned).mean(axis=-1)
        effect = mx.abs(tuned - base).mean(axis=-1)  # (B, L): the same statistics as the error's
        max_effect = mx.abs(tuned - base).max(axis=-1)
        from_base = mx.abs(exported - base).mean(axis=-1)
        top_tuned, top_exported = tuned.argmax(axis=-1), exported.argmax(axis=-1)
        agree = (top_exported == top_tuned) & mask
        changes = (base.argmax(axis=-1) != top_tuned) & mask
        log_tuned = tuned - mx.logsumexp(tuned, axis=-1, keepdims=True)  # (B, L, V)
        kl = (mx.exp(log_tuned) * (log_tuned - (exported - mx.logsumexp(exported, axis=-1, keepdims=True))))
        adapter_kl = (mx.exp(log_tuned) * (log_tuned - (base - mx.logsumexp(base, axis=-1, keepdims=True))))
        shift = tuned - base
        shift = shift - shift.mean(axis=-1, keepdims=True)  # (B, L, V): centred
        moved = exported - base
        moved = moved - moved.mean(axis=-1, keepdims=True)
        num = mx.where(mask, (moved * shift).sum(axis=-1), 0).sum(axis=-1)  # (B,)
        den = mx.where(mask, (shift * shift).sum(axis=-1), 0).sum(axis=-1)
        sums.sum_kl += float(mx.where(mask, kl.sum(axis=-1), 0).sum().item())
        sums.sum_adapter_kl += float(mx.where(mask, adapter_kl.sum(axis=-1), 0).sum().item())
        sums.changes_kept += int((changes & (top_exported == top_tuned)).sum().item())
        sums.kept_num += num.tolist()
        sums.kept_den += den.tolist()
        sums.positions += int(sum(lengths))
        sums.agree += int(agree.sum().item())
        sums.adapter_changes += int(changes.sum().item())
        sums.max_diff = max(sums.max_diff, float(mx.where(mask, diff, 0).max().item()))
        sums.position_max += [d for row, n in zip(diff.tolist(), lengths) for d in row[:n]]
        sums.max_effect = max(sums.max_effect, float(mx.where(mask, max_effect, 0).max().item()))
        sums.sum_diff += float(mx.where(mask, mean_diff, 0).sum().item())
        sums.sum_effect += float(mx.where(mask, effect, 0).sum().item())
        sums.sum_from_base += float(mx.where(mask, from_base, 0).sum().item())
    n = max(sums.positions, 1)
    top1, mean_diff = sums.agree / n, sums.sum_diff / n
    effect, from_base = sums.sum_effect / n, sums.sum_from_base / n
    problems = []
    if top1 < thresholds.min_top1_agreement:
        problems.append(f"top-1 agreement {top1:.2%} is below {thresholds.min_top1_agreement:.0%}")
    spared = int(thresholds.max_diff_spared * len(sums.position_max))
    checked_max = sorted(sums.position_max, reverse=True)[spared] if len(sums.position_max) > spared else 0.0
    if thresholds.max_abs_logit_diff is not None and checked_max > thresholds.max_abs_logit_diff:
        over = sum(d > thresholds.max_abs_logit_diff for d in sums.position_max)
        problems.append(f"max |Δlogit| {checked_max:.4g} is above the tolerance {thresholds.max_abs_logit_diff:g}"
                        + (f" at {over} of {len(sums.position_max)} positions, more than the {spared} a router's "
                           "near-ties may account for (a mixture of experts)" if spared else ""))
    status = "checked"
    kept, kept_se = _kept(sums.kept_num, sums.kept_den)
    if thresholds.min_effect_kept is None:
        lost = mean_diff > thresholds.max_error_share_of_effect * effect
        cannot_tell = lost and effect <= 2 * thresholds.rounding
    else:
        # two standard errors either side: "lost" only when clearly below the minimum, a pass only
        # when clearly above it; in between the check cannot tell (too small to verify)
        margin = 2 * (kept_se or 0.0)
        lost = kept is None or kept + margin < thresholds.min_effect_kept
        cannot_tell = not lost and kept - margin < thresholds.min_effect_kept
    if effect < thresholds.min_adapter_effect or cannot_tell:
        status = TOO_SMALL
        noise = (f"within the export's own rounding (up to {thresholds.rounding:g} for this kind of export"
                 if thresholds.min_effect_kept is None or kept is None else
                 f"too little against the export's noise (it keeps {kept:.0%} ± {kept_se or 0:.0%} of it")
        problems.append(
            f"{TOO_SMALL}: it changes the logits by {effect:.2g} on average, {noise}; the export differs from the "
            f"tuned model by {mean_diff:.2g}, from the base by {from_base:.2g}), so the check cannot tell this "
            "export from the base — train longer or with a higher learning rate, or export it unquantised or as an "
            "adapter")
    elif lost and thresholds.min_effect_kept is not None:
        problems.append(
            f"the export lost the adapter's effect: it keeps {kept:.0%} (± {kept_se:.0%}) of the fine-tune's shift "
            f"of the logits, less than the {thresholds.min_effect_kept:.0%} required, and makes "
            f"{sums.changes_kept / max(sums.adapter_changes, 1):.0%} of the adapter's changes of the most likely "
            f"token — the adapter was lost (dropped by the fuse, or drowned in quantisation noise)")
    elif lost:
        problems.append(
            f"the export is not the tuned model: its logits differ from the tuned model's by {mean_diff:.4g} "
            f"on average, more than {thresholds.max_error_share_of_effect:g} × the adapter's own effect "
            f"({effect:.4g}); its distance from the base is {from_base:.4g} — the adapter was lost (dropped by the fuse, or drowned in quantisation noise)"
        )
    return ExportVerified(
        check=check, passed=not problems, prompts=len(prompts), positions=sums.positions,
        top1_agreement=top1, max_abs_logit_diff=sums.max_diff, mean_abs_logit_diff=mean_diff,
        adapter_effect=effect, distance_from_base=from_base, adapter_top1_changes=sums.adapter_changes / n,
        thresholds=dataclasses.asdict(thresholds), problems=tuple(problems), status=status,
        adapter_max_effect=sums.max_effect, mean_kl=sums.sum_kl / n, adapter_kl=sums.sum_adapter_kl / n,
        adapter_effect_kept=kept, adapter_effect_kept_se=kept_se,
        adapter_top1_changes_kept=sums.changes_kept / sums.adapter_changes if sums.adapter_changes else None,
    )


def reference_from_model(model) -> Callable[[list[list[int]]], tuple[Any, Any]]:
    """(tuned, base) logits from one model with its adapter on, switched off for the base."""
    from mlx_lora.adapters import adapter_disabled

    def run(batch):
        tuned = _logits(model, batch)
        with adapter_disabled(model):
            base = _logits(model, batch)
        return tuned, base

    return run


def logits_of(model) -> Callable[[list[list[int]]], Any]:
    return lambda batch: _logits(model, batch)


def not_run(check: str, reason: str) -> ExportVerified:
    return ExportVerified(check=check, passed=True, prompts=0, positions=0, top1_agreement=0.0,
                          max_abs_logit_diff=0.0, mean_abs_logit_diff=0.0, adapter_effect=0.0,
                          distance_from_base=0.0, adapter_top1_changes=0.0, thresholds={},
                          problems=(reason,), status="not run")
