"""A judge model rating the tuned answer against the base's, pairwise (optional part of
the generation evaluation: ``mlx-lora eval --generate --judge``).

The judge — the run's base by default, or any local model — reads :data:`DEFAULT_PROMPT`
(or a person's own, with the same placeholders) and answers with one letter. Each pair
is asked twice with the answers swapped, because small judges favour one position (the
first, mostly); the tuned answer wins only when the two verdicts agree or one of them is
a tie. Greedy, a few tokens. A judge as small as the demo model is close to chance: the
prompt and the replies are saved with the results so a person can see why.
"""

from __future__ import annotations

import re
import string
from typing import Callable

from mlx_lora.errors import Cancelled, UserError

PLACEHOLDERS = ("prompt", "reference", "answer_a", "answer_b")
DEFAULT_PROMPT = """You compare two answers to the same question with a reference answer.

Question:
{prompt}

Reference answer:
{reference}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is closer to the reference answer in meaning and in style? Reply with one letter: A, B, or T for a tie."""
JUDGE_MAX_TOKENS = 8


def check_prompt(template: str) -> None:
    """A UserError unless ``template`` uses exactly the known placeholders ({answer_a} and
    {answer_b} at least); literal braces are written {{ and }}."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UserError(f"judge prompt: {exc} (write a literal brace as {{{{ or }}}})") from exc
    unknown = names - set(PLACEHOLDERS)
    if unknown:
        raise UserError(f"judge prompt: unknown placeholder(s) {', '.join('{' + n + '}' for n in sorted(unknown))}; "
                        f"use {', '.join('{' + n + '}' for n in PLACEHOLDERS)}")
    missing = {"answer_a", "answer_b"} - names
    if missing:
        raise UserError(f"judge prompt: it must show both answers ({', '.join('{' + n + '}' for n in sorted(missing))} "
                        "missing)")


def parse_verdict(reply: str) -> str | None:
    """"A", "B" or "T" — the first of them the reply names as a word ("Answer B", "B.", "tie") —
    or None when it names none. A lone letter counts in capitals only ("a tie" is a tie)."""
    for word in re.findall(r"[A-Za-z]+", reply):
        if word in ("A", "B", "T"):
            return word
        if word.upper() == "TIE":
            return "T"
    return None


def combine(tuned_first: str | None, tuned_second: str | None) -> str:
    """The verdict for tuned vs base from the two orders: ``tuned_first`` is the letter the
    judge gave with the tuned answer as A, ``tuned_second`` with it as B. "tuned", "base" or "tie"."""
    votes = [{"A": 1, "B": -1}.get(tuned_first, 0), {"B": 1, "A": -1}.get(tuned_second, 0)]
    if min(votes) >= 0 and max(votes) > 0:
        return "tuned"
    if max(votes) <= 0 and min(votes) < 0:
        return "base"
    return "tie"


def judge_pair(ask: Callable[[str], str], template: str, prompt: str, reference: str, tuned: str,
               base: str) -> tuple[str, tuple[str, str]]:
    """(verdict, (reply with tuned as A, reply with tuned as B)); ``ask(text)`` is the judge's
    greedy answer to one user message."""
    replies = (ask(template.format(prompt=prompt, reference=reference, answer_a=tuned, answer_b=base)),
               ask(template.format(prompt=prompt, reference=reference, answer_a=base, answer_b=tuned)))
    return combine(parse_verdict(replies[0]), parse_verdict(replies[1])), replies


def session_asker(session, should_stop: Callable[[], bool], use_adapter: bool) -> Callable[[str], str]:
    """``ask`` for :func:`judge_pair` over a :class:`mlx_lora.chat.ChatSession` (greedy, a few tokens)."""
    from mlx_lora.chat import ChatSettings

    settings = ChatSettings(temperature=0.0, max_tokens=JUDGE_MAX_TOKENS, seed=0)

    def ask(text: str) -> str:
        answer = session.answer([{"role": "user", "content": text}], settings, should_stop, use_adapter)
        if answer.finish_reason == "cancelled":
            raise Cancelled()
        return answer.text

    return ask
