"""The generation evaluation job: a run's base and tuned model answer the held-out
examples, each answer is scored against the reference, and the reference's loss per
token is measured under both models.

    result = evaluate_generation(run_dir, GenerationSettings(limit=20, max_tokens=64),
                                 reporter, should_stop)

ONE model is in memory: the run's base with its adapter (loaded as the Chat page loads
it, :func:`mlx_lora.chat.load_chat_model`), switched off for the base's answers
(:func:`mlx_lora.adapters.adapter_disabled`). Answers come from
:class:`mlx_lora.chat.ChatSession` — the model's chat template, its end-of-turn stop
tokens, greedy decoding — so they are the answers a person gets on the Chat page at
temperature 0. The examples and their problems are checked before the model is loaded.
``should_stop`` is asked between every two generated tokens; a stop raises
:class:`~mlx_lora.errors.Cancelled` and nothing is written. The result is written once,
whole, at the end (``generation_eval.json`` in the run folder). With
``settings.judge`` a judge model (the base, or another local model) then rates each
tuned answer against the base's (:mod:`mlx_lora.evaluation.judge`).
"""

from __future__ import annotations

import dataclasses
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from mlx_lora.data.records import CHAT, COMPLETION, PREFERENCE, check_record
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.evaluation.metrics import exact_match, rouge_l, token_f1
from mlx_lora.evaluation.results import (
    AnswerScore, EvaluationProgress, ExampleResult, GenerationEval, GenerationSettings, ModelSummary,
)
from mlx_lora.events import NullReporter, Reporter, never_stop
from mlx_lora.run_folder import RunFolder

JOB = "evaluate"


@dataclasses.dataclass(frozen=True)
class EvalItem:
    """One example as the evaluation uses it."""

    index: int  # position in its split
    messages: tuple[dict[str, Any], ...]  # the conversation up to the answer
    reference: str  # the answer the data gives
    record: dict[str, Any]  # prompt + reference as a training record: its loss is the reference's


def eval_item(index: int, record: dict[str, Any]) -> EvalItem | None:
    """The prompt and reference answer of a chat, completion or preference (its chosen answer)
    record; None for a chat without an assistant turn in text. A text or prompt-only record
    has no reference answer: a UserError."""
    fmt, reasons = check_record(record)
    if reasons:
        raise UserError(f"example {index + 1}: {'; '.join(reasons)}")
    if fmt == PREFERENCE:
        from mlx_lora.data.pairs import side_record

        record = side_record(record, "chosen")
        fmt = COMPLETION if "completion" in record else CHAT
    if fmt == COMPLETION:
        messages = ({"role": "user", "content": record["prompt"]},)
        return EvalItem(index, messages, record["completion"], record)
    if fmt != CHAT:
        raise UserError(f"the examples are in the {fmt} format, which has no reference answer to compare an "
                        "answer with; generation evaluation needs chat, completion or preference records")
    messages = record["messages"]
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"
                 and isinstance(messages[i].get("content"), str) and messages[i]["content"].strip()), None)
    if last is None or last == 0:
        return None
    # the reference is the last assistant turn; earlier assistant turns are part of the prompt
    # (and, with the chat template's masking, of the loss: it is over every assistant turn)
    prompt = tuple(messages[:last])
    scored = {"messages": [*prompt, messages[last]], **({"tools": record["tools"]} if "tools" in record else {})}
    return EvalItem(index, prompt, messages[last]["content"], scored)


def choose_examples(run: RunFolder, settings: GenerationSettings) -> tuple[str, str, int, list[tuple[int, dict]]]:
    """(split, note, size of the split, [(index, record)]): the run's own split (same file,
    ratios and seed as training), sampled down to ``settings.limit`` with ``settings.seed``."""
    from mlx_lora.data.dataset import load_splits

    config = run.config()
    data = config.data
    splits = load_splits(data.data, valid_ratio=data.valid_ratio, test_ratio=data.test_ratio, seed=config.run.seed)
    parts = {"train": splits.train, "valid": splits.valid, "test": splits.test}
    split = settings.split or ("test" if splits.test else "valid")
    records = parts[split]
    if not records:
        hint = "use --split valid, or train with --test-ratio" if split == "test" else "choose another split"
        raise UserError(f"{run.path}: this run's data has no {split} split; {hint}")
    indices = list(range(len(records)))
    if settings.limit and len(records) > settings.limit:
        indices = sorted(random.Random(settings.seed).sample(indices, settings.limit))
    names = {"test": "test", "valid": "validation", "train": "training"}
    note = f"{len(indices)} of {len(records)} {names[split]} examples"
    if split == "valid" and settings.split is None:
        note += " (the run has no test split: validation examples are held out from training, but picked best/)"
    elif split == "train":
        note += " (the model trained on these)"
    return split, note, len(records), [(i, records[i]) for i in indices]


def _loss_of(model, tokenizer, items: list[EvalItem], max_seq_length: int, too_long: str,
             should_stop: Callable[[], bool], progress: Callable[[int], None]) -> list[tuple[float | None, int]]:
    """(mean loss per reference token, reference tokens) of each item under ``model`` as it is now."""
    import mlx.core as mx

    from mlx_lora.train.batches import encode_records, make_batch
    from mlx_lora.train.evaluate import MaskedLoss

    loss_fn = MaskedLoss()  # no check(): the full logits of one short example are cheap
    out = []
    for i, item in enumerate(items):
        if should_stop():
            raise Cancelled()
        progress(i)
        encoded = encode_records(tokenizer, [item.record], True, max_seq_length, too_long).examples
        if not encoded:  # dropped as too long, or nothing left to score after truncation
            out.append((None, 0))
            continue
        total, count = loss_fn(model, *map(mx.array, make_batch(encoded, [0])))
        tokens = int(count.item())
        out.append((total.item() / tokens if tokens else None, tokens))
    return out


def evaluate_generation(run_dir: str | Path, settings: GenerationSettings = GenerationSettings(),
                        reporter: Reporter = NullReporter(), should_stop: Callable[[], bool] = never_stop,
                        save: bool = True) -> GenerationEval:
    """Base vs tuned answers on a split of the run's data, scored; saved in the run folder
    when ``save`` (module docstring)."""
    from mlx_lora.adapters import adapter_disabled
    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model

    started = time.monotonic()
    run = RunFolder(run_dir)
    config = run.config()
    adapter_dir = run.adapter(settings.adapter)
    split, note, split_size, chosen = choose_examples(run, settings)
    items = [item for item in (eval_item(i, r) for i, r in chosen) if item is not None]
    skipped = len(chosen) - len(items)
    if not items:
        raise UserError(f"{run.path}: none of the {len(chosen)} {split} examples has an assistant answer in text")
    n = len(items)

    def emit(phase: str, message: str, done: int = 0, side: str = "") -> None:
        reporter.emit(EvaluationProgress(JOB, message, done, n if phase in ("generating", "scoring", "judging") else 0,
                                         phase=phase, side=side))

    emit("loading", "loading the model")
    if should_stop():
        raise Cancelled()
    chat = load_chat_model(adapter=adapter_dir, reporter=reporter)
    session = ChatSession(chat.model, chat.tokenizer)
    chat_settings = ChatSettings(temperature=0.0, max_tokens=settings.max_tokens, seed=0)
    answers: dict[str, list] = {"base": [], "tuned": []}
    losses: dict[str, list] = {}
    for side, use_adapter in (("base", False), ("tuned", True)):
        for i, item in enumerate(items):
            if should_stop():
                raise Cancelled()
            emit("generating", f"generating {i + 1}/{n} ({side})", i, side)
            answer = session.answer(list(item.messages), chat_settings, should_stop, use_adapter)
            if answer.finish_reason == "cancelled":
                raise Cancelled()
            answers[side].append(answer)
        with adapter_disabled(chat.model) if not use_adapter else nullcontext():
            losses[side] = _loss_of(chat.model, chat.tokenizer, items, config.data.max_seq_length,
                                    config.data.too_long, should_stop,
                                    lambda i, side=side: emit("scoring", f"scoring {i + 1}/{n} ({side})", i, side))
    scored = {side: [AnswerScore(a.text, exact_match(a.text, item.reference), token_f1(a.text, item.reference),
                                 rouge_l(a.text, item.reference), loss, tokens, a.token_count, a.finish_reason)
                     for a, item, (loss, tokens) in zip(answers[side], items, losses[side])]
              for side in answers}
    verdicts = _judge(chat, session, items, answers, settings, should_stop, emit, reporter) if settings.judge \
        else [(None, ())] * n
    examples = tuple(ExampleResult(item.index, _last_user(item.messages), item.reference, base, tuned, *verdict)
                     for item, base, tuned, verdict in zip(items, scored["base"], scored["tuned"], verdicts))
    result = GenerationEval(str(run.path), settings.adapter, split, note, split_size, settings,
                            ModelSummary.of(scored["base"]), ModelSummary.of(scored["tuned"]), examples, skipped,
                            time.monotonic() - started, time.time())
    if should_stop():  # the last moment a stop can leave nothing written
        raise Cancelled()
    if save:
        emit("saving", "saving the results")
        run.write_generation_eval(result.to_dict())
    return result


def _judge(chat, session, items, answers, settings: GenerationSettings, should_stop, emit, reporter) -> list:
    """(verdict, replies) per item from the judge: the base (this model, adapter off) or another model."""
    from mlx_lora.chat import ChatSession, load_chat_model
    from mlx_lora.evaluation.judge import judge_pair, session_asker

    if settings.judge == "base":
        ask = session_asker(session, should_stop, use_adapter=False)
    else:
        emit("loading", f"loading the judge {settings.judge}")
        judge = load_chat_model(model=settings.judge, reporter=reporter)
        ask = session_asker(ChatSession(judge.model, judge.tokenizer), should_stop, use_adapter=True)
    out = []
    for i, item in enumerate(items):
        if should_stop():
            raise Cancelled()
        emit("judging", f"judging {i + 1}/{len(items)}", i)
        out.append(judge_pair(ask, settings.judge_template, _last_user(item.messages), item.reference,
                              answers["tuned"][i].text, answers["base"][i].text))
    return out


def _last_user(messages: tuple[dict[str, Any], ...]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"
                 and isinstance(m.get("content"), str)), "")
