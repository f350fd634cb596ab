"""The generation evaluation's text metrics against hand-computed cases."""

from __future__ import annotations

import pytest

from mlx_lora.evaluation.metrics import exact_match, lcs_length, normalize, rouge_l, token_f1


def test_normalize_case_whitespace_and_punctuation():
    assert normalize("  Arr!  The  SHIP,\tbe\nready… ") == "arr the ship be ready"
    assert normalize("«Hola», ¿qué tal?") == "hola qué tal"  # Unicode punctuation too
    assert normalize("3.5") == "3 5"  # a mark becomes a space, not glue


def test_exact_match_is_normalised():
    assert exact_match("Arr, matey!", "arr matey") == 1.0
    assert exact_match("Arr matey", "Arr matey ye") == 0.0
    assert exact_match("", "   ") == 1.0


def test_token_f1_hand_cases():
    # answer "the cat sat" vs reference "the cat sat on the mat": overlap 3,
    # precision 3/3, recall 3/6 -> F1 = 2·1·0.5/1.5 = 2/3
    assert token_f1("The cat sat.", "the cat sat on the mat") == pytest.approx(2 / 3)
    # bags: "the the" vs "the": overlap 1, P 1/2, R 1 -> 2/3
    assert token_f1("the the", "the") == pytest.approx(2 / 3)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0 and token_f1("cat", "") == 0.0


def test_rouge_l_counts_order_where_token_f1_does_not():
    assert lcs_length("a b c d".split(), "a c b d".split()) == 3  # a b d (or a c d)
    # same bag of words, reversed: token F1 1.0, LCS 1 of 3 -> ROUGE-L 1/3
    assert token_f1("one two three", "three two one") == 1.0
    assert rouge_l("one two three", "three two one") == pytest.approx(1 / 3)
    # "the cat sat" vs "the cat sat on the mat": LCS 3, P 1, R 1/2 -> 2/3
    assert rouge_l("the cat sat", "The cat sat on the mat!") == pytest.approx(2 / 3)
    # "police killed the gunman" vs "police kill the gunman": LCS 3 (police the gunman), P=R=3/4
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)
    assert rouge_l("", "") == 1.0 and rouge_l("x", "") == 0.0


def test_the_judge_prompt_is_checked_and_verdicts_are_read_in_both_orders():
    from mlx_lora.errors import UserError
    from mlx_lora.evaluation.judge import DEFAULT_PROMPT, check_prompt, combine, judge_pair, parse_verdict

    check_prompt(DEFAULT_PROMPT)
    with pytest.raises(UserError, match="unknown placeholder"):
        check_prompt("{answer_a} {answer_b} {question}")
    with pytest.raises(UserError, match="answer_b"):
        check_prompt("only {answer_a}")
    assert parse_verdict(" B.") == "B" and parse_verdict("Answer A is closer") == "A"
    assert parse_verdict("It's a tie") == "T" and parse_verdict("neither") is None
    # tuned as A then as B: agreeing verdicts win, a tie and a win win, a split is a tie
    assert combine("A", "B") == "tuned" and combine("B", "A") == "base"
    assert combine("A", "T") == "tuned" and combine("A", "A") == "tie" and combine(None, None) == "tie"
    asked = []
    verdict, replies = judge_pair(lambda text: asked.append(text) or "A", "Q {prompt} A {answer_a} B {answer_b}",
                                  "hi", "ref", "tuned answer", "base answer")
    assert asked == ["Q hi A tuned answer B base answer", "Q hi A base answer B tuned answer"]
    assert verdict == "tie" and replies == ("A", "A")  # position bias: always "A" decides nothing
