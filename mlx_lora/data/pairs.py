"""Preference pairs (for DPO and ORPO): the record rules, one record's checks, and a pair
→ the tokens of its chosen and its rejected answer, with only the answer trained.

A preference record holds a prompt and two answers to it, ``chosen`` (the better one)
and ``rejected``. The forms follow TRL's preference datasets:

- plain: ``{"prompt": str, "chosen": str, "rejected": str}``. With a chat template
  (every chat model) the pair is rendered as the chats [user: prompt, assistant:
  answer], as completion records are; without one, as ``prompt + answer``.
- chat, explicit prompt: ``prompt`` a list of messages (system/user/assistant/tool;
  it must not end with an assistant turn) or a string (one user turn); ``chosen`` and
  ``rejected`` each a string (the assistant's reply) or a list of messages ending
  with an assistant turn, usually ``[{"role": "assistant", "content": ...}]``.
- chat, implicit prompt: no ``prompt``; ``chosen`` and ``rejected`` are whole
  conversations ending with an assistant turn, and the prompt is the messages they
  share from the start (TRL's ``extract_prompt``).

``tools`` (optional) is passed to the template as in chat records. The loss of a
pair is taken on the answer's tokens only (and its end-of-turn token), never on
the prompt, whatever ``mask_prompt`` says: DPO and ORPO compare the probabilities
of the two answers given the same prompt. Plain supervised training (objective
``sft``) on preference data trains on prompt + chosen, like a chat record.

Every pair helper the engine uses is public here (:data:`SIDES`, :func:`check_pair`,
:func:`conversation`, :func:`side_record`, :func:`encode_side`, :func:`preview_pair`); it
builds on the public :func:`~mlx_lora.data.records.check_message` /
:func:`~mlx_lora.data.records.type_name` and :func:`~mlx_lora.data.render.encode_chat` /
:func:`~mlx_lora.data.render.encode_plain`, and no other module reaches into its privates.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlx_lora.data.records import check_message, type_name
from mlx_lora.errors import UserError

SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class Conversation:
    """One side of a pair, normalised: ``prompt`` messages and the answer's ``tail`` messages,
    or, for the plain form, ``prompt_text`` and ``answer_text``."""

    prompt: list[dict[str, Any]] | None
    tail: list[dict[str, Any]] | None
    tools: list[dict[str, Any]] | None = None
    prompt_text: str | None = None
    answer_text: str | None = None

    @property
    def plain(self) -> bool:
        return self.prompt is None

    def messages(self) -> list[dict[str, Any]]:
        if self.plain:
            return [{"role": "user", "content": self.prompt_text},
                    {"role": "assistant", "content": self.answer_text}]
        return list(self.prompt) + list(self.tail)


# -- checks -------------------------------------------------------------------------
def _check_messages(value: list, key: str) -> list[str]:
    problems = []
    for i, message in enumerate(value):
        problems += [p.replace("messages[", f"{key}[", 1) for p in check_message(message, i)]
    return problems


def _check_text(value: Any, key: str) -> list[str]:
    if not value.strip():
        return [f"'{key}' is empty"]
    return []


def _check_answer(record: dict[str, Any], key: str, has_prompt: bool) -> list[str]:
    if key not in record:
        return [f"missing key '{key}'"]
    value = record[key]
    if isinstance(value, str):
        if not has_prompt:
            return [f"'{key}' is a string but the record has no 'prompt': without one, '{key}' must be a whole "
                    "conversation (a list of messages)"]
        return _check_text(value, key)
    if not isinstance(value, list):
        return [f"'{key}' must be a string or a list of messages, got {type_name(value)}"]
    if not value:
        return [f"'{key}' is empty"]
    problems = _check_messages(value, key)
    last = value[-1]
    if not problems and last.get("role") != "assistant":
        problems.append(f"'{key}' ends with a '{last.get('role')}' turn; it must end with an 'assistant' turn "
                        "(the answer being judged)")
    return problems


def _check_prompt(record: dict[str, Any]) -> list[str]:
    value = record["prompt"]
    if isinstance(value, str):
        return _check_text(value, "prompt")
    if not isinstance(value, list):
        return [f"'prompt' must be a string or a list of messages, got {type_name(value)}"]
    if not value:
        return ["'prompt' is empty"]
    problems = _check_messages(value, "prompt")
    if not problems and value[-1].get("role") == "assistant":
        problems.append("'prompt' ends with an 'assistant' turn; the answers to compare go in 'chosen' and "
                        "'rejected'")
    return problems


def check_pair(record: dict[str, Any]) -> list[str]:
    """Reasons a preference record is invalid (none: valid). See the module docstring."""
    has_prompt = "prompt" in record
    problems = _check_prompt(record) if has_prompt else []
    for key in SIDES:
        problems += _check_answer(record, key, has_prompt)
    tools = record.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        problems.append(f"'tools' must be a list of objects, got {type_name(tools)}")
    if problems:
        return problems
    chosen, rejected = conversation(record, "chosen"), conversation(record, "rejected")
    if not has_prompt and (not chosen.tail or not rejected.tail):
        return ["one of 'chosen' and 'rejected' is the start of the other; without a 'prompt' they must be two "
                "conversations that differ in their last turn(s)"]
    if chosen.messages() == rejected.messages():
        return ["'chosen' and 'rejected' are the same answer; a pair must differ (it would teach nothing)"]
    return []


# -- the conversation of each side ---------------------------------------------------
def _as_messages(value, role: str) -> list[dict[str, Any]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def conversation(record: dict[str, Any], side: str) -> Conversation:
    """The prompt and the ``side`` ("chosen" or "rejected") answer of a valid record."""
    tools = record.get("tools")
    prompt, chosen, rejected = record.get("prompt"), record["chosen"], record["rejected"]
    if all(isinstance(v, str) for v in (prompt, chosen, rejected)):
        return Conversation(None, None, tools, prompt, record[side])
    if prompt is not None:
        return Conversation(_as_messages(prompt, "user"), _as_messages(record[side], "assistant"), tools)
    shared = 0  # implicit prompt: the messages both conversations start with
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    return Conversation(list(chosen[:shared]), list(record[side][shared:]), tools)


def side_record(record: dict[str, Any], side: str = "chosen") -> dict[str, Any]:
    """One side of a pair as an ordinary record: completion for the plain form, else chat
    (what objective ``sft`` trains on, and what the data statistics count)."""
    conv = conversation(record, side)
    if conv.plain:
        return {"prompt": conv.prompt_text, "completion": conv.answer_text}
    out: dict[str, Any] = {"messages": conv.messages()}
    if conv.tools is not None:
        out["tools"] = conv.tools
    return out


# -- encoding -----------------------------------------------------------------------
def encode_side(tokenizer, record: dict[str, Any], side: str):
    """The :class:`~mlx_lora.data.render.EncodedExample` of one side, trained on the answer only
    (its content and end-of-turn token). Raises :class:`UserError` for an invalid record."""
    from mlx_lora.data import render
    from mlx_lora.data.template import apply_template, has_chat_template

    problems = check_pair(record)
    if problems:
        raise UserError(f"invalid preference record: {'; '.join(problems)}")
    conv = conversation(record, side)
    if conv.plain and not has_chat_template(tokenizer):
        return render.encode_plain(tokenizer, conv.prompt_text + conv.answer_text, len(conv.prompt_text), True)
    messages = conv.messages()
    prompt = messages[:-1] if conv.plain else conv.prompt
    example = render.encode_chat(tokenizer, messages, conv.tools, mask_prompt=True)
    before = apply_template(tokenizer, prompt, conv.tools, add_generation_prompt=True) if prompt else ""
    if example.offsets is not None and example.text.startswith(before):
        # the prompt renders as a prefix of the whole chat: train only what follows it
        trained = [t and (o == render.NO_OFFSET or o[0] >= len(before))
                   for t, o in zip(example.trained, example.offsets)]
    else:
        # no offsets, or a template that renders the prompt differently on its own:
        # train the last run of trained tokens (the final assistant turn)
        trained = list(example.trained)
        end = max((k for k, t in enumerate(trained) if t), default=-1)
        start = end
        while start > 0 and trained[start - 1]:
            start -= 1
        trained = [start <= k <= end for k in range(len(trained))]
    return dataclasses.replace(example, trained=trained)


def preview_pair(tokenizer, record: dict[str, Any]) -> tuple[list, list]:
    """(chosen spans, rejected spans): each side through the chat template as runs of
    trained and masked text, for the app's Data page."""
    from mlx_lora.data.render import example_spans

    return tuple(example_spans(tokenizer, encode_side(tokenizer, record, side)) for side in SIDES)
