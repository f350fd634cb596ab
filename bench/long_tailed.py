"""A synthetic chat set with long-tailed lengths, the same on every machine.

    python bench/long_tailed.py OUT_FOLDER [--count 2000]

Words per answer are log-normal (median 67, a tail cut at 900), the question a
quarter of that: with the demo tokenizer most examples are 50–300 tokens and
about 1% reach 1024. Written as OUT_FOLDER/train.jsonl only: with no valid.jsonl
and ``valid_ratio`` 0 the trainers being compared validate nothing (a copy as
valid.jsonl made ours evaluate 25 batches before and after the timed steps).
Deterministic: Python's ``random.Random(seed)``, no other input.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

WORDS = "the ship sails over stars maps treasure wind and sea captain crew island gold north south".split()


def make_chats(folder: Path, count: int = 2000, seed: int = 0) -> Path:
    rng = random.Random(seed)

    def n_words() -> int:
        return int(min(900, rng.lognormvariate(4.2, 0.9)))

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as fh:
        for _ in range(count):
            question = " ".join(rng.choice(WORDS) for _ in range(max(5, n_words() // 4)))
            answer = " ".join(rng.choice(WORDS) for _ in range(max(5, n_words())))
            fh.write(json.dumps({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]}) + "\n")
    return folder


def make_fixed_chats(folder: Path, count: int = 400, seed: int = 0) -> Path:
    """Chats that all pass 1,024 demo-tokenizer tokens (a 20-word question, a 1,500-word answer), so
    with max_seq_length 1024 every example is cut to the same length: the fixed-length set."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as fh:
        for _ in range(count):
            question = " ".join(rng.choice(WORDS) for _ in range(20))
            answer = " ".join(rng.choice(WORDS) for _ in range(1500))
            fh.write(json.dumps({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]}) + "\n")
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    print(make_chats(args.out, args.count))
