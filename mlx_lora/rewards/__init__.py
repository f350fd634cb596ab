"""Reward functions for GRPO: the built-in ones and the user's own file, behind one
:class:`RewardSet` that scores a completion of a prompt record.

- :mod:`mlx_lora.rewards.builtin`: ``exact_match`` (the completion's final number or word
  against the record's ``answer``), ``format`` (a regular expression), ``length`` (minus
  the completion's share of the token budget);
- :mod:`mlx_lora.rewards.user`: ``reward(prompt, completion, **row) -> float`` from a Python
  file the user named, run in a child process with a time limit per call. This is the one
  place where code of the user's runs.

A reward that fails (raises, runs past its limit, returns NaN or something that is not a
number) stops the run with a :class:`~mlx_lora.errors.UserError` naming the reward and the
record (``train record 12``), never a hung run.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from mlx_lora.errors import UserError
from mlx_lora.rewards.builtin import BUILTINS


class RewardSet:
    """The run's rewards, summed with their weights. ``names`` keeps the order of the config;
    the user's file, when given, is last and called ``user``."""

    def __init__(self, rewards: tuple[str, ...], pattern: str, max_tokens: int, reward_file: str = "",
                 timeout: float = 5.0) -> None:
        self.functions: list[tuple[str, float, Callable[..., float]]] = []
        for entry in rewards:
            name, _, weight = entry.partition(":")
            self.functions.append((name, float(weight) if weight else 1.0, BUILTINS[name]))
        self.pattern, self.max_tokens = pattern, max_tokens
        self.user = None
        if reward_file:
            from mlx_lora.rewards.user import UserReward

            self.user = UserReward(reward_file, timeout)

    @classmethod
    def from_config(cls, grpo) -> "RewardSet":
        return cls(grpo.rewards, grpo.reward_pattern, grpo.max_completion_tokens, grpo.reward_file,
                   grpo.reward_timeout)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.functions] + (["user"] if self.user else [])

    def needs(self) -> set[str]:
        """Record fields the built-in rewards read (exact_match reads ``answer``)."""
        return {"answer"} if any(name == "exact_match" for name, _, _ in self.functions) else set()

    def check_records(self, records: list[dict[str, Any]], split: str) -> None:
        """Every record carries the fields the rewards read: checked before the model loads."""
        for field in sorted(self.needs()):
            missing = [i for i, r in enumerate(records, 1) if field not in r]
            if missing:
                shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
                raise UserError(f"rewards (grpo.rewards, --rewards): exact_match compares with the record's "
                                f"'{field}', but {len(missing)} {split} record(s) have none ({split} record "
                                f"{shown}); add it, or drop exact_match")

    def score(self, prompt: Any, completion: str, completion_tokens: int, row: dict[str, Any],
              where: str) -> dict[str, float]:
        """{name: reward} of one completion (weights applied); ``where`` names the record in errors."""
        scores: dict[str, float] = {}
        for name, weight, function in self.functions:
            value = function(completion, row=row, pattern=self.pattern, tokens=completion_tokens,
                             max_tokens=self.max_tokens)
            scores[name] = weight * value
        if self.user is not None:
            scores["user"] = self.user(prompt, completion, row, where)
        for name, value in scores.items():
            if not math.isfinite(value):
                raise UserError(f"reward {name}: returned {value} for {where}; a reward must be a finite number")
        return scores

    def close(self) -> None:
        if self.user is not None:
            self.user.close()
