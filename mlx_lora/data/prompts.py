"""Prompt records (for GRPO): the record rules, one record's checks, and a prompt → the
tokens the model continues from.

A prompt record holds only the question; the policy writes the answers and the reward
functions (:mod:`mlx_lora.rewards`) score them, reading any other field of the record::

    {"prompt": "What is 17 plus one? Reply with just the number.", "answer": "18"}
    {"prompt": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}], "answer": "18"}

``prompt`` is a string (one user turn) or a list of chat messages that does not end with
an assistant turn; ``tools`` (optional) goes to the chat template as in chat records.
Every other key is kept as it is and handed to the rewards as ``**row``. With a chat
template the prompt is rendered with the generation prompt (the assistant's turn
opened); without one, the string is the text the model continues.
"""

from __future__ import annotations

from typing import Any

from mlx_lora.data.records import check_message, type_name
from mlx_lora.errors import UserError


def check_prompt_record(record: dict[str, Any]) -> list[str]:
    """Reasons a prompt record is invalid (none: valid)."""
    if "prompt" not in record:
        return ["missing key 'prompt'"]
    value = record["prompt"]
    problems: list[str] = []
    if isinstance(value, str):
        if not value.strip():
            problems.append("'prompt' is empty")
    elif isinstance(value, list):
        if not value:
            return ["'prompt' is empty"]
        for i, message in enumerate(value):
            problems += [p.replace("messages[", "prompt[", 1) for p in check_message(message, i)]
        if not problems and value[-1].get("role") == "assistant":
            problems.append("'prompt' ends with an 'assistant' turn; for grpo the prompt ends with the question "
                            "and the model writes the answer")
    else:
        problems.append(f"'prompt' must be a string or a list of messages, got {type_name(value)}")
    tools = record.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        problems.append(f"'tools' must be a list of objects, got {type_name(tools)}")
    return problems


def prompt_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    value = record["prompt"]
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def prompt_text(tokenizer, record: dict[str, Any]) -> str:
    """The text the model continues: the chat rendered up to the assistant's turn, or the plain prompt."""
    from mlx_lora.data.template import apply_template, has_chat_template

    problems = check_prompt_record(record)
    if problems:
        raise UserError(f"invalid prompt record: {'; '.join(problems)}")
    if has_chat_template(tokenizer):
        return apply_template(tokenizer, prompt_messages(record), record.get("tools"), add_generation_prompt=True)
    if not isinstance(record["prompt"], str):
        raise UserError("the model's tokenizer has no chat template, so it cannot render a prompt written as "
                        "messages; write 'prompt' as a string")
    return record["prompt"]


def encode_prompt(tokenizer, record: dict[str, Any]) -> list[int]:
    """Token ids of the prompt (a chat template's text carries its own special tokens)."""
    from mlx_lora.data.render import _tokenize
    from mlx_lora.data.template import has_chat_template

    tokens, _ = _tokenize(tokenizer, prompt_text(tokenizer, record), add_special_tokens=not has_chat_template(tokenizer))
    return tokens


def reward_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record's fields other than the prompt: what a reward function receives as ``**row``."""
    return {k: v for k, v in record.items() if k != "prompt"}
