"""The three record formats mlx-lm trains on, and the checks one record must pass.

- chat: ``{"messages": [{"role": ..., "content": ...}, ...], "tools": [...]}``
  (``tools`` optional; roles system/user/assistant/tool; an assistant message may
  carry ``tool_calls`` instead of text);
- completion: ``{"prompt": ..., "completion": ...}``;
- text: ``{"text": ...}``;
- preference: ``{"prompt": ..., "chosen": ..., "rejected": ...}`` (plain or chat form;
  the rules are in :mod:`mlx_lora.data.pairs`), for DPO and ORPO;
- prompt: ``{"prompt": ..., <any fields the rewards read, e.g. "answer">}`` (a string or
  chat messages; :mod:`mlx_lora.data.prompts`), for GRPO, which writes the completions.

Keys other than these are allowed and ignored, as mlx-lm ignores them. This
module knows nothing about files or lines: :mod:`mlx_lora.data.validate` adds
those. Every check returns reasons as plain sentences, so the same words reach
the CLI, the app and a :class:`~mlx_lora.errors.UserError`.
"""

from __future__ import annotations

import re
from typing import Any

CHAT, COMPLETION, TEXT, PREFERENCE, PROMPT = "chat", "completion", "text", "preference", "prompt"
FORMATS = (CHAT, COMPLETION, TEXT, PREFERENCE, PROMPT)
ROLES = ("system", "user", "assistant", "tool")

# what each format needs, for "missing keys" messages
FORMAT_KEYS = {CHAT: "'messages'", COMPLETION: "'prompt' and 'completion'", TEXT: "'text'",
               PREFERENCE: "'chosen' and 'rejected'", PROMPT: "'prompt' only (no 'completion')"}


# JSON nested deeper than this is refused. Real records reach about 10 levels (a
# tool's JSON schema inside tools[] inside the record), 30 at the very most; Python's
# json parser stops near 1,000 with a RecursionError, and code downstream (json.dumps,
# chat templates) recurses too, so the limit sits well below that.
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_string(text: str) -> bool:
    # a lone surrogate (JSON "\ud800") is a Python str but not UTF-8: the tokenizer
    # fails on it long after loading (the model's weights included)
    return not text.isascii() and _SURROGATE.search(text) is not None


def _find_bad_string(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, e.g. messages[0].content."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if _bad_string(node):
                return where or "a string"
        elif isinstance(node, dict):
            for key, item in reversed(node.items()):
                if _bad_string(key):
                    return f"a key of {where}" if where else "a key"
                stack.append((item, f"{where}.{key}" if where else key))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(node))))
    return None


def value_problem(record: Any) -> str | None:
    """Why a parsed JSON value cannot be trained on whatever its format: nested
    deeper than :data:`MAX_DEPTH`, or a string with a lone surrogate. Walks the
    value once, without recursion."""
    stack = [(record, 1)]
    bad = False
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            bad = bad or _bad_string(node)
        elif isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep"
            if isinstance(node, dict):
                bad = bad or any(_bad_string(k) for k in node)
                node = node.values()
            stack.extend((item, depth + 1) for item in node)
    if bad:  # walk again for the place, which costs more than the check
        where = _find_bad_string(record, "")
        return f"{where}: a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text"
    return None


def record_format(record: dict[str, Any]) -> str | None:
    """The format a record is written in, judged by its keys; None when no key fits.

    The order follows mlx-lm's ``create_dataset`` (prompt and completion first),
    except that one of the pair is enough when there is no ``messages``: a record
    missing its prompt is reported as an incomplete completion record rather
    than as an unknown one. ``chosen`` or ``rejected`` makes a preference record;
    ``prompt`` alone a prompt record (GRPO), which in a file of completion records is
    reported as missing its completion (:mod:`mlx_lora.data.validate`).
    """
    if "chosen" in record or "rejected" in record:
        return PREFERENCE
    if "prompt" in record and "completion" in record:
        return COMPLETION
    if "messages" in record:
        return CHAT
    if "prompt" in record and "completion" not in record:
        return PROMPT  # prompt-only: GRPO samples the completions
    if "completion" in record:
        return COMPLETION
    if "text" in record:
        return TEXT
    return None


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _check_text_field(record: dict[str, Any], key: str) -> list[str]:
    if key not in record:
        return [f"missing key '{key}'"]
    value = record[key]
    if not isinstance(value, str):
        return [f"'{key}' must be a string, got {type_name(value)}"]
    if not value.strip():
        return [f"'{key}' is empty"]
    return []


def _check_tool_calls(calls: Any, where: str) -> list[str]:
    if not isinstance(calls, list) or not calls:
        return [f"{where}: 'tool_calls' must be a non-empty list, got {type_name(calls)}"]
    problems = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            problems.append(f"{where}: tool_calls[{j}] must be an object with "
                            "'function': {'name': ..., 'arguments': ...}")
    return problems


def check_message(message: Any, i: int) -> list[str]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        return [f"{where} must be an object, got {type_name(message)}"]
    role = message.get("role")
    if role is None:
        return [f"{where}: missing key 'role'"]
    if role not in ROLES:
        return [f"{where}: unknown role {role!r} (expected one of {', '.join(ROLES)})"]
    problems = []
    has_tool_calls = role == "assistant" and message.get("tool_calls") is not None
    if has_tool_calls:
        problems += _check_tool_calls(message["tool_calls"], where)
    content = message.get("content")
    if "content" not in message and not has_tool_calls:
        problems.append(f"{where}: missing key 'content'")
    elif content is None or content == "":
        # an assistant turn that only calls tools has no text, as in OpenAI's format
        if not has_tool_calls:
            problems.append(f"{where}: empty content")
    elif not isinstance(content, str):
        problems.append(f"{where}: 'content' must be a string, got {type_name(content)}")
    elif not content.strip() and not has_tool_calls:
        problems.append(f"{where}: empty content (only whitespace)")
    return problems


def check_chat(record: dict[str, Any]) -> list[str]:
    if "messages" not in record:
        return ["missing key 'messages'"]
    messages = record["messages"]
    if not isinstance(messages, list):
        return [f"'messages' must be a list, got {type_name(messages)}"]
    if not messages:
        return ["'messages' is empty"]
    problems = []
    for i, message in enumerate(messages):
        problems += check_message(message, i)
    tools = record.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        problems.append(f"'tools' must be a list of objects, got {type_name(tools)}")
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") in ROLES and last.get("role") != "assistant":
        # mlx-lm trains on what follows the last non-assistant turn: nothing here
        problems.append(f"the conversation ends with a '{last['role']}' turn; "
                        "it must end with an 'assistant' turn (the reply to learn)")
    return problems


def check_completion(record: dict[str, Any]) -> list[str]:
    return _check_text_field(record, "prompt") + _check_text_field(record, "completion")


def check_text(record: dict[str, Any]) -> list[str]:
    return _check_text_field(record, "text")


def check_preference(record: dict[str, Any]) -> list[str]:
    from mlx_lora.data.pairs import check_pair

    return check_pair(record)


def check_prompt_record(record: dict[str, Any]) -> list[str]:
    from mlx_lora.data.prompts import check_prompt_record as check

    return check(record)


CHECKS = {CHAT: check_chat, COMPLETION: check_completion, TEXT: check_text, PREFERENCE: check_preference,
          PROMPT: check_prompt_record}


def check_record(record: Any) -> tuple[str | None, list[str]]:
    """(the record's format or None, reasons it is invalid); no reasons means valid."""
    if not isinstance(record, dict):
        hint = " (JSONL wants one JSON object per line, not one array)" if isinstance(record, list) else ""
        return None, [f"expected a JSON object, got {type_name(record)}{hint}"]
    fmt = record_format(record)
    problem = value_problem(record)
    if problem:
        return fmt, [problem]
    if fmt is None:
        keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
        return None, ["missing keys: a record needs 'messages' (chat), 'prompt' and 'completion' "
                      "(completion), 'text' (text), 'chosen' and 'rejected' (preference) or 'prompt' alone "
                      f"(prompt, for grpo); found keys: {keys}"]
    return fmt, CHECKS[fmt](record)
