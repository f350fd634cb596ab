"""The built-in rewards. Each is ``f(completion, *, row, pattern, tokens, max_tokens) -> float``.

- ``exact_match``: 1.0 when the completion's final answer equals ``row["answer"]``, else 0.0.
  The final answer is the last number in the completion (``-3``, ``1,200``, ``2.5``) when the
  answer is a number, else the last word; numbers compare by value (``18.0`` = ``18``),
  words without case or surrounding punctuation.
- ``format``: 1.0 when ``pattern`` is found in the completion (``re.search``; anchor it with
  ``^…$`` for the whole completion), else 0.0.
- ``length``: ``-tokens / max_tokens``, from 0 (empty) to -1 (the whole budget): shorter wins.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def final_answer(completion: str, numeric: bool) -> str | None:
    """The last number (``numeric``) or the last word of the completion; None when there is none."""
    found = (_NUMBER if numeric else _WORD).findall(completion)
    return found[-1] if found else None


def exact_match(completion: str, *, row: dict[str, Any], **_: Any) -> float:
    answer = str(row["answer"]).strip()
    expected = _as_number(answer)
    got = final_answer(completion, numeric=expected is not None)
    if got is None:
        return 0.0
    if expected is not None:
        value = _as_number(got)
        return float(value is not None and value == expected)
    return float(got.casefold() == answer.strip(".,;:!?\"'").casefold())


def format_match(completion: str, *, pattern: str, **_: Any) -> float:
    return float(re.search(pattern, completion) is not None)


def length_penalty(completion: str, *, tokens: int, max_tokens: int, **_: Any) -> float:
    return -tokens / max(max_tokens, 1)


BUILTINS = {"exact_match": exact_match, "format": format_match, "length": length_penalty}
