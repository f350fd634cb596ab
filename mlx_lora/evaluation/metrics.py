"""Text metrics of an answer against a reference, as the QA and summarisation
literature computes them (SQuAD's exact match and token F1, ROUGE-L's LCS F-measure).

All three compare *normalised* text (:func:`normalize`): lower case, punctuation
removed (every Unicode punctuation character, not only ASCII), whitespace collapsed.
Tokens are the normalised text split on whitespace. Two empty texts agree fully (1.0);
an empty text against a non-empty one scores 0. Written here rather than taken from a
package: they are a few lines each, and none of the packages that have them
(rouge-score, evaluate) is a dependency.
"""

from __future__ import annotations

import unicodedata
from collections import Counter


def normalize(text: str) -> str:
    """Lower case, punctuation dropped (each mark becomes a space), runs of whitespace one space."""
    kept = [" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower()]
    return " ".join("".join(kept).split())


def tokens(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize(answer) == normalize(reference))


def _f_measure(overlap: int, answer_len: int, reference_len: int) -> float:
    if answer_len == 0 and reference_len == 0:
        return 1.0
    if overlap == 0:
        return 0.0
    precision, recall = overlap / answer_len, overlap / reference_len
    return 2 * precision * recall / (precision + recall)


def token_f1(answer: str, reference: str) -> float:
    """F1 of the tokens the two share, counted as bags (a word twice in both counts twice)."""
    a, r = tokens(answer), tokens(reference)
    overlap = sum((Counter(a) & Counter(r)).values())
    return _f_measure(overlap, len(a), len(r))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (in order, gaps allowed); O(len(a)·len(b))
    time, O(len(b)) memory."""
    if len(b) > len(a):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1: the longest common subsequence of tokens as the overlap (word order
    counts, unlike token F1)."""
    a, r = tokens(answer), tokens(reference)
    return _f_measure(lcs_length(a, r), len(a), len(r))


METRICS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}
