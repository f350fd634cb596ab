"""The rewards: the built-ins on hand-made answers, and the user's reward file in its
child process — a call that sleeps past its limit, raises or returns NaN is a named
error with the record, not a hung run."""

from __future__ import annotations

import time

import pytest

from mlx_lora.errors import UserError
from mlx_lora.rewards import RewardSet
from mlx_lora.rewards.builtin import exact_match, final_answer


@pytest.mark.parametrize("completion, answer, expected", [
    ("18", "18", 1.0), ("The answer is 18.", "18", 1.0), ("17 + 1 = 18", "18", 1.0), ("18.0", "18", 1.0),
    ("17 + 1 = 20", "18", 0.0), ("eighteen", "18", 0.0), ("It is 1,200 in all", "1200", 1.0),
    ("the word is Blue!", "blue", 1.0), ("blue, then red", "blue", 0.0),
])
def test_exact_match_compares_the_final_answer(completion, answer, expected):
    assert exact_match(completion, row={"answer": answer}) == expected


def test_the_final_answer_is_the_last_number_or_word():
    assert final_answer("from 3 to -4.5 in 2 steps", numeric=True) == "2"
    assert final_answer("no digits", numeric=True) is None
    assert final_answer("ends with ahoy.", numeric=False) == "ahoy"


def test_weights_patterns_and_length():
    rewards = RewardSet(("exact_match", "format:0.5", "length"), r"^\s*\d+\s*$", 8)
    assert rewards.score("p", "18", 2, {"answer": "18"}, "train record 1") == {
        "exact_match": 1.0, "format": 0.5, "length": -0.25}
    assert rewards.score("p", "It is 18", 4, {"answer": "18"}, "train record 1")["format"] == 0.0


def test_records_without_the_answer_are_named_before_training():
    rewards = RewardSet(("exact_match",), "x", 8)
    with pytest.raises(UserError, match=r"2 train record\(s\) have none \(train record 2, 3\)"):
        rewards.check_records([{"prompt": "a", "answer": "1"}, {"prompt": "b"}, {"prompt": "c"}], "train")


REWARD_FILE = '''
import time

def reward(prompt, completion, **row):
    print("user output goes to stderr, not the protocol")
    if completion == "sleep":
        time.sleep(60)
    if completion == "raise":
        raise ValueError("no number in " + repr(completion))
    if completion == "nan":
        return float("nan")
    if completion == "text":
        return "high"
    return len(completion) + (10 if completion == row["answer"] else 0)
'''


@pytest.fixture
def user_rewards(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(REWARD_FILE)
    rewards = RewardSet((), "x", 8, str(path), timeout=1.0)
    yield rewards, path
    rewards.close()


def test_the_users_reward_runs_and_sees_the_record(user_rewards):
    rewards, _ = user_rewards
    assert rewards.score("What is 1+1?", "2", 1, {"answer": "2"}, "train record 1") == {"user": 11.0}
    assert rewards.names == ["user"]


def test_a_reward_that_sleeps_past_its_limit_is_stopped_and_named(user_rewards):
    rewards, path = user_rewards
    start = time.monotonic()
    with pytest.raises(UserError, match=r"my_reward.py: reward\(\) took longer than 1 s on train record 7"):
        rewards.score("p", "sleep", 1, {"answer": "1"}, "train record 7")
    assert time.monotonic() - start < 10
    # the process was replaced: the next call works
    assert rewards.score("p", "ab", 1, {"answer": "1"}, "train record 8") == {"user": 2.0}


@pytest.mark.parametrize("completion, message", [
    ("raise", r"reward\(\) raised ValueError: no number in 'raise' on train record 3"),
    ("nan", r"reward\(\) returned nan on train record 3; it must return a finite number"),
    ("text", r"reward\(\) returned str on train record 3; it must return a number"),
])
def test_a_reward_that_raises_or_returns_nonsense_is_named_with_the_record(user_rewards, completion, message):
    rewards, _ = user_rewards
    with pytest.raises(UserError, match=message):
        rewards.score("p", completion, 1, {"answer": "1"}, "train record 3")


def test_a_reward_file_that_does_not_load_is_named(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def reward(:\n")
    with pytest.raises(UserError, match="bad.py: failed to load: SyntaxError"):
        RewardSet((), "x", 8, str(bad))
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(UserError, match=r"none.py: defines no function reward"):
        RewardSet((), "x", 8, str(none))
    with pytest.raises(UserError, match="no such file"):
        RewardSet((), "x", 8, str(tmp_path / "missing.py"))
