"""What a generation evaluation found, its JSON form, and the text the CLI prints.

:class:`GenerationEval` holds, for each example, the base's and the tuned model's answers
with their scores against the reference (:mod:`mlx_lora.evaluation.metrics`) and the
reference's loss per token under each model; :class:`ModelSummary` the means over the
examples. Examples are ranked by the tuned-minus-base ROUGE-L (then token F1, then the
drop in loss): :meth:`GenerationEval.best` and :meth:`~GenerationEval.worst`. The result is
saved whole, once, in the run folder (``generation_eval.json``, written temp-then-rename by
:meth:`mlx_lora.run_folder.RunFolder.write_generation_eval`); reading it back needs no MLX.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError
from mlx_lora.events import Progress
from mlx_lora.run_folder import RunFolder

METRIC_LABELS = {"exact_match": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L",
                 "loss": "reference loss/token"}


@dataclasses.dataclass(frozen=True)
class EvaluationProgress(Progress):
    """What the evaluation is doing now: ``phase`` loading | generating | scoring | judging | saving,
    ``side`` base | tuned (or ""), ``done`` of ``total`` examples; ``message`` says it in words
    ("generating 3/20 (tuned)")."""

    phase: str = ""
    side: str = ""


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How to evaluate. ``split`` None: the test split, or — when the run has none — a sample of
    its validation split. Answers are greedy (temperature 0), so base and tuned differ only by
    the adapter."""

    split: str | None = None  # "test" | "valid" | "train" | None (test, else validation)
    limit: int = 20  # examples at most (a seeded sample of the split when it has more); 0: all
    max_tokens: int = 64  # new tokens per answer at most
    adapter: str = "final"  # final, best, latest or step-N
    seed: int = 0  # which examples the sample takes
    judge: str | None = None  # None: no judge; "base": the run's base rates tuned vs base; else a local model
    judge_prompt: str | None = None  # None: mlx_lora.evaluation.judge.DEFAULT_PROMPT

    def __post_init__(self) -> None:
        if self.split not in (None, "test", "valid", "train"):
            raise UserError(f"split must be test, valid or train, not {self.split!r}")
        if self.limit < 0:
            raise UserError("limit must be 0 (every example) or more")
        if self.max_tokens < 1:
            raise UserError("max_tokens must be at least 1")
        if self.judge_prompt is not None:
            from mlx_lora.evaluation.judge import check_prompt

            check_prompt(self.judge_prompt)

    @property
    def judge_template(self) -> str:
        from mlx_lora.evaluation.judge import DEFAULT_PROMPT

        return self.judge_prompt if self.judge_prompt is not None else DEFAULT_PROMPT


@dataclasses.dataclass(frozen=True)
class AnswerScore:
    """One model's answer to one example, scored against the reference."""

    text: str
    exact_match: float
    token_f1: float
    rouge_l: float
    loss: float | None  # the reference answer's mean cross-entropy per token under this model (nats)
    loss_tokens: int  # the reference tokens that loss is over
    generated_tokens: int
    finish_reason: str  # stop (end of turn) | length (max_tokens reached)


@dataclasses.dataclass(frozen=True)
class ExampleResult:
    index: int  # the example's position in its split
    prompt: str  # the last user turn (the whole conversation went to the model)
    reference: str
    base: AnswerScore
    tuned: AnswerScore
    judge: str | None = None  # the judge's verdict: tuned | base | tie (None: not judged)
    judge_replies: tuple[str, ...] = ()  # its replies, tuned as answer A then as answer B

    @property
    def delta(self) -> tuple[float, float, float]:
        """Tuned minus base: ROUGE-L, token F1, and how much the reference's loss dropped."""
        drop = (self.base.loss - self.tuned.loss) if self.base.loss is not None and self.tuned.loss is not None \
            else 0.0
        return (self.tuned.rouge_l - self.base.rouge_l, self.tuned.token_f1 - self.base.token_f1, drop)


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    exact_match: float
    token_f1: float
    rouge_l: float
    loss: float | None  # token-weighted mean over every example's reference tokens
    perplexity: float | None

    @classmethod
    def of(cls, answers: list[AnswerScore]) -> "ModelSummary":
        n = max(len(answers), 1)
        tokens = sum(a.loss_tokens for a in answers if a.loss is not None)
        loss = sum(a.loss * a.loss_tokens for a in answers if a.loss is not None) / tokens if tokens else None
        return cls(sum(a.exact_match for a in answers) / n, sum(a.token_f1 for a in answers) / n,
                   sum(a.rouge_l for a in answers) / n, loss,
                   (math.exp(loss) if loss < 700 else float("inf")) if loss is not None else None)


@dataclasses.dataclass(frozen=True)
class GenerationEval:
    run_dir: str
    adapter: str  # which of the run's adapters was the tuned model
    split: str  # the split the examples came from
    split_note: str  # why that split, and how many of it ("4 of 4 test examples")
    split_size: int  # examples in the split (before the limit)
    settings: GenerationSettings
    base: ModelSummary
    tuned: ModelSummary
    examples: tuple[ExampleResult, ...]
    skipped: int = 0  # records of the split without a text answer to compare with
    elapsed_s: float = 0.0
    created: float = 0.0  # seconds since the epoch

    @property
    def judge_counts(self) -> dict[str, int] | None:
        """{"tuned": wins, "base": wins, "tie": n} when a judge rated the pairs."""
        verdicts = [e.judge for e in self.examples if e.judge is not None]
        if not verdicts:
            return None
        return {side: verdicts.count(side) for side in ("tuned", "base", "tie")}

    def ranked(self) -> list[ExampleResult]:
        """Best first: by tuned-minus-base ROUGE-L, then token F1, then the drop in loss."""
        return sorted(self.examples, key=lambda e: e.delta, reverse=True)

    def best(self, k: int = 3) -> list[ExampleResult]:
        return self.ranked()[:k]

    def worst(self, k: int = 3) -> list[ExampleResult]:
        return list(reversed(self.ranked()))[:k]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationEval":
        def answer(d):
            return AnswerScore(**d)

        examples = tuple(ExampleResult(e["index"], e["prompt"], e["reference"], answer(e["base"]), answer(e["tuned"]),
                                       e.get("judge"), tuple(e.get("judge_replies") or ()))
                         for e in data["examples"])
        fields = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        return cls(**{**fields, "settings": GenerationSettings(**data["settings"]),
                      "base": ModelSummary(**data["base"]), "tuned": ModelSummary(**data["tuned"]),
                      "examples": examples})


def read_generation_eval(run_dir: str | Path) -> GenerationEval | None:
    """The run's saved evaluation, or None when it has none (or the file does not parse)."""
    data = RunFolder(run_dir).read_generation_eval()
    if data is None:
        return None
    try:
        return GenerationEval.from_dict(data)
    except (KeyError, TypeError, ValueError):  # written by another version
        return None


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summary_rows(result: GenerationEval) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, tuned − base) for the summary table; for the loss, lower is better."""
    rows = []
    for name, label in METRIC_LABELS.items():
        base, tuned = getattr(result.base, name), getattr(result.tuned, name)
        change = None if base is None or tuned is None else tuned - base
        rows.append((label, _number(base), _number(tuned), "—" if change is None else f"{change:+.3f}"))
    counts = result.judge_counts
    if counts is not None:
        rows.append(("judge: preferred", str(counts["base"]), str(counts["tuned"]), f"{counts['tie']} ties"))
    return rows


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def format_result(result: GenerationEval, k: int = 3, width: int = 60) -> str:
    """The summary table and the best and worst examples, as the CLI prints them."""
    judge = (f"\njudge: {result.settings.judge} (prompt: {'default' if result.settings.judge_prompt is None else 'own'}"
             "; each pair asked in both orders)") if result.settings.judge else ""
    lines = [f"{result.split_note}; greedy answers of at most {result.settings.max_tokens} new tokens; "
             f"adapter {result.adapter}" + (f"; {result.skipped} without a text answer skipped" if result.skipped
                                            else "") + judge,
             "", f"{'metric':<22}{'base':>8}{'tuned':>8}{'change':>9}"]
    lines += [f"{label:<22}{base:>8}{tuned:>8}{change:>9}" for label, base, tuned, change in summary_rows(result)]
    for title, rows in (("best (tuned − base ROUGE-L)", result.best(k)), ("worst", result.worst(k))):
        lines += ["", f"{title}:"]
        for e in rows:
            lines += [f"  #{e.index}  ROUGE-L {e.base.rouge_l:.2f} → {e.tuned.rouge_l:.2f}  "
                      f"({e.delta[0]:+.2f})  loss {_number(e.base.loss, 2)} → {_number(e.tuned.loss, 2)}",
                      f"     prompt:    {_clip(e.prompt, width)}",
                      f"     reference: {_clip(e.reference, width)}",
                      f"     base:      {_clip(e.base.text, width)}",
                      f"     tuned:     {_clip(e.tuned.text, width)}"]
            if e.judge is not None:
                lines.append(f"     judge:     {e.judge} (replies {e.judge_replies[0].strip()!r} / "
                             f"{e.judge_replies[1].strip()!r})")
    return "\n".join(lines)
