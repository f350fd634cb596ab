"""One record → the tokens the model trains on, and which of them carry the loss.

Chat records are rendered by the tokenizer's own chat template, so the training
text is exactly what chat sends the model later (a test holds
``encode_example(...).tokens == tokenizer.apply_chat_template(messages)``).
With ``mask_prompt`` the loss is taken on *every* assistant turn of a
multi-turn chat — its content and its end-of-turn token (``<|im_end|>``) — and
nowhere else: system and user turns, tool results and the headers such as
``<|im_start|>assistant\\n`` are masked. (mlx-lm masks by one offset, so it
trains only the last turn, plus everything after it.)

How the turns are found: each assistant turn ``i`` spans from the end of
``render(messages[:i], add_generation_prompt=True)`` to the end of
``render(messages[:i+1])`` in the full render; text after the turn's
end-of-turn token (the ``\\n`` ChatML puts between turns) is not trained. Where a
template does not render prefixes that way (some drop reasoning from earlier
turns), the turn's content is searched for in the full render instead. The full
text is tokenized once with character offsets (Hugging Face fast tokenizers),
and a token is trained when its characters overlap a turn's span.

Completion records are a chat [user: prompt, assistant: completion] when the
tokenizer has a chat template (as mlx-lm does), else ``prompt + completion``
with the completion trained. Text records are trained whole. A preference record
is its prompt and chosen answer here (supervised training on pairs); DPO and ORPO
encode both answers through :mod:`mlx_lora.data.pairs`. Every example
ends its trained part with an end-of-turn/EOS token: where the template leaves
it out, one is appended and ``appended_eos`` says so.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from mlx_lora.data.records import CHAT, COMPLETION, PREFERENCE, PROMPT, TEXT, check_record
from mlx_lora.data.template import apply_template, has_chat_template
from mlx_lora.errors import UserError

NO_OFFSET = (-1, -1)  # the character span of a token that is not in the text (an appended EOS)


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """Tokens of one example and where the loss is taken; all lists have one item per token."""

    tokens: list[int]
    trained: list[bool]  # True where the loss is taken
    text: str = ""  # the rendered text the tokens come from
    offsets: list[tuple[int, int]] | None = None  # each token's characters in ``text``; None when unknown
    appended_eos: bool = False  # an EOS was added because the render did not end the reply with one
    missing_eos_turns: int = 0  # assistant turns whose render has no end-of-turn token

    @property
    def trained_count(self) -> int:
        return sum(self.trained)


@dataclasses.dataclass(frozen=True)
class Span:
    """A run of consecutive tokens that are all trained or all masked, for display."""

    text: str
    trained: bool
    token_count: int


def hf_tokenizer(tokenizer):
    """The Hugging Face tokenizer inside mlx-lm's ``TokenizerWrapper`` (or the tokenizer itself)."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    # not getattr(tokenizer, "_tokenizer"): HF fast tokenizers name their Rust tokenizer that too
    return tokenizer._tokenizer if isinstance(tokenizer, TokenizerWrapper) else tokenizer


def end_token_ids(tokenizer) -> set[int]:
    """Tokens that end a reply: the EOS and, with mlx-lm, the model's other stop tokens
    (such as Llama 3's ``<|eot_id|>``, from generation_config.json)."""
    extra = getattr(tokenizer, "eos_token_ids", None)  # a set with mlx-lm; HF tokenizers may give an int
    ids = {extra} if isinstance(extra, int) else set(extra or ())
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _tokenize(tokenizer, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]] | None]:
    """Token ids of ``text`` and each token's character span (None when the tokenizer has no offsets)."""
    hf = hf_tokenizer(tokenizer)
    try:
        encoding = hf(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    except NotImplementedError:
        # slow (pure Python) tokenizers have no offsets
        return list(hf.encode(text, add_special_tokens=add_special_tokens)), None
    return list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]


def _mark(tokenizer, text: str, tokens: list[int], offsets, spans: list[tuple[int, int]],
          add_special_tokens: bool) -> list[bool]:
    """True for each token whose characters overlap one of ``spans`` (sorted, disjoint)."""
    if offsets is None:
        # no offsets: a boundary's token index is the length of the text before it, tokenized
        # (exact wherever the tokenization does not merge across the boundary)
        trained = [False] * len(tokens)
        for start, end in spans:
            a = len(_tokenize(tokenizer, text[:start], add_special_tokens)[0])
            b = len(_tokenize(tokenizer, text[:end], add_special_tokens)[0])
            trained[a:b] = [True] * (b - a)
        return trained
    trained = []
    k = 0  # the first span that ends after the current token starts (offsets only grow)
    for s, e in offsets:
        while k < len(spans) and spans[k][1] <= s:
            k += 1
        # overlap; a zero-width token counts when it sits inside the span
        trained.append(k < len(spans) and (e > spans[k][0] if e > s else s >= spans[k][0]))
    return trained


def _end_strings(tokenizer) -> list[str]:
    hf = hf_tokenizer(tokenizer)
    return [s for s in (hf.decode([i]) for i in sorted(end_token_ids(tokenizer))) if s]


def _trim_after_end(text: str, start: int, end: int, ends: list[str]) -> tuple[int, bool]:
    """(span end, whether the turn has an end-of-turn token): the span stops after the last
    end-of-turn token when only whitespace follows it inside the turn."""
    piece = text[start:end]
    best = -1
    for marker in ends:
        at = piece.rfind(marker)
        if at >= 0 and not piece[at + len(marker):].strip():
            best = max(best, at + len(marker))
    if best < 0:
        return end, False
    return start + best, True


def _assistant_spans(tokenizer, messages, tools, full: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in ``full`` (content + end-of-turn token)."""
    ends = _end_strings(tokenizer)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        try:
            before = apply_template(tokenizer, messages[:i], tools, add_generation_prompt=True) if i else ""
            through = apply_template(tokenizer, messages[: i + 1], tools)
        except UserError:  # some templates refuse a cut conversation (say, "must end with a user turn")
            before = through = ""
        if before and through.startswith(before) and full.startswith(through) and len(through) > len(before):
            start, end = len(before), len(through)
        else:
            start, end = _find_turn(full, message, cursor, ends, i)
        spans.append((start, end))
        cursor = end
    return spans


def _find_turn(full: str, message: dict[str, Any], cursor: int, ends: list[str], i: int) -> tuple[int, int]:
    """The turn located by its content, from ``cursor`` on, up to its end-of-turn token."""
    content = message.get("content") or ""
    at = full.find(content, cursor) if content else -1
    if at < 0:
        raise UserError(f"messages[{i}]: cannot find this assistant turn in the chat template's output, "
                        "so its tokens cannot be marked for training; turn prompt masking off for this data")
    end = at + len(content)
    if ends:
        follow = re.match(r"\s*(?:" + "|".join(map(re.escape, ends)) + ")", full[end:])
        if follow:
            end += follow.end()
    return at, end


def _with_eos(tokenizer, tokens, trained, offsets, at: int) -> tuple[list, list, list | None]:
    """Insert the EOS token at index ``at``, trained."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token, so examples cannot teach the model to stop")
    tokens = tokens[:at] + [eos] + tokens[at:]
    trained = trained[:at] + [True] + trained[at:]
    if offsets is not None:
        offsets = offsets[:at] + [NO_OFFSET] + offsets[at:]
    return tokens, trained, offsets


def encode_chat(tokenizer, messages, tools, mask_prompt: bool) -> EncodedExample:
    full = apply_template(tokenizer, messages, tools)
    spans = _assistant_spans(tokenizer, messages, tools, full)
    ends = _end_strings(tokenizer)
    trimmed, missing = [], 0
    for start, end in spans:
        end, has_end = _trim_after_end(full, start, end, ends)
        missing += not has_end
        trimmed.append((start, end))
    tokens, offsets = _tokenize(tokenizer, full, add_special_tokens=False)
    in_turn = _mark(tokenizer, full, tokens, offsets, trimmed, add_special_tokens=False)
    trained = in_turn if mask_prompt else [True] * len(tokens)
    appended = False
    last_turn_tokens = [k for k, t in enumerate(in_turn) if t]
    if last_turn_tokens and tokens[last_turn_tokens[-1]] not in end_token_ids(tokenizer):
        tokens, trained, offsets = _with_eos(tokenizer, tokens, trained, offsets, last_turn_tokens[-1] + 1)
        appended = True
        missing = max(missing, 1)
    return EncodedExample(tokens, trained, full, offsets, appended, missing)


def encode_plain(tokenizer, text: str, trained_from: int, mask_prompt: bool) -> EncodedExample:
    """``text`` tokenized as mlx-lm's text datasets do (with the tokenizer's BOS), trained
    from character ``trained_from`` on, ending with EOS."""
    tokens, offsets = _tokenize(tokenizer, text, add_special_tokens=True)
    if mask_prompt and trained_from > 0:
        trained = _mark(tokenizer, text, tokens, offsets, [(trained_from, len(text))], add_special_tokens=True)
    else:
        trained = [True] * len(tokens)
    appended = not tokens or tokens[-1] not in end_token_ids(tokenizer)
    if appended:
        tokens, trained, offsets = _with_eos(tokenizer, tokens, trained, offsets, len(tokens))
    return EncodedExample(tokens, trained, text, offsets, appended, 0)


def encode_example(tokenizer, record: dict[str, Any], mask_prompt: bool = True) -> EncodedExample:
    """Tokens of one valid record and where the loss is taken (see the module docstring).

    Raises :class:`UserError` for an invalid record or a chat template that fails.
    """
    fmt, reasons = check_record(record)
    if reasons:
        raise UserError(f"invalid record: {'; '.join(reasons)}")
    if fmt == PREFERENCE:  # supervised training on a preference pair learns the chosen answer
        from mlx_lora.data.pairs import side_record

        return encode_example(tokenizer, side_record(record, "chosen"), mask_prompt)
    if fmt == PROMPT:  # grpo: the prompt only, nothing trained (the policy writes the completions)
        from mlx_lora.data.prompts import prompt_text

        text = prompt_text(tokenizer, record)
        tokens, offsets = _tokenize(tokenizer, text, add_special_tokens=not has_chat_template(tokenizer))
        return EncodedExample(tokens, [False] * len(tokens), text, offsets)
    if fmt == CHAT:
        return encode_chat(tokenizer, record["messages"], record.get("tools"), mask_prompt)
    if fmt == COMPLETION:
        if has_chat_template(tokenizer):
            messages = [{"role": "user", "content": record["prompt"]},
                        {"role": "assistant", "content": record["completion"]}]
            return encode_chat(tokenizer, messages, record.get("tools"), mask_prompt)
        return encode_plain(tokenizer, record["prompt"] + record["completion"], len(record["prompt"]), mask_prompt)
    assert fmt == TEXT
    return encode_plain(tokenizer, record["text"], 0, mask_prompt=False)


def preview(tokenizer, record: dict[str, Any], mask_prompt: bool = True) -> list[Span]:
    """The example as runs of trained and masked text, for colouring in the app."""
    return example_spans(tokenizer, encode_example(tokenizer, record, mask_prompt))


def example_spans(tokenizer, example: EncodedExample) -> list[Span]:
    """An encoded example as runs of trained and masked text."""
    hf = hf_tokenizer(tokenizer)
    # groups of consecutive tokens with the same flag: [start, end)
    groups: list[tuple[int, int]] = []
    for k, flag in enumerate(example.trained):
        if groups and example.trained[groups[-1][0]] == flag:
            groups[-1] = (groups[-1][0], k + 1)
        else:
            groups.append((k, k + 1))
    offsets = example.offsets
    spans = []
    for g, (a, b) in enumerate(groups):
        ids = example.tokens[a:b]
        if offsets is None:
            spans.append(Span(hf.decode(ids, skip_special_tokens=False), example.trained[a], b - a))
            continue
        real = [offsets[k][0] for k in range(a, b) if offsets[k] != NO_OFFSET]
        # slice the rendered text from this run's start to the next run's, so that characters
        # no token covers (some tokenizers drop spaces) still show
        text = ""
        if real:
            start = real[0] if g else 0
            later = [offsets[k][0] for k in range(b, len(offsets)) if offsets[k] != NO_OFFSET]
            text = example.text[start:later[0] if later else len(example.text)]
        appended = [example.tokens[k] for k in range(a, b) if offsets[k] == NO_OFFSET]
        if appended:  # tokens that are not in the text: the EOS added at the end of a reply
            text += hf.decode(appended, skip_special_tokens=False)
        spans.append(Span(text, example.trained[a], b - a))
    return spans
