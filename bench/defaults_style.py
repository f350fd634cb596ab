"""Do the defaults a first-time user runs visibly change the style, without degenerating?

    .venv/bin/python bench/defaults_style.py [--configs NAME,...] [--datasets pirate,haiku] [--json OUT]

Trains the demo model (SmolLM2-135M-Instruct) on a sample dataset with each candidate
setting, then answers the first PROMPTS prompts of the dataset's validation file greedily
(temperature 0, so it is repeatable) with the base and with the tuned model, and scores:

- changed: share of prompts whose tuned answer differs from the base's;
- rep3: share of repeated word 3-grams in the tuned answers (1 − distinct/total; "matey,
  matey, matey…" is ~0.9, fluent text ~0);
- style: pirate — pirate words per answer (arr, matey, aye, ye, ahoy, yo ho …);
  haiku — share of answers of exactly three lines;
- val: the last validation loss of the run.

A setting passes when changed ≥ 0.8, rep3 ≤ 0.1 and the style score is ≥ 1 word
(pirate) / ≥ 0.5 (haiku). Results go to bench/RESULTS.md and the README.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mlx_lora  # noqa: E402,F401  (OpenBLAS preload before mlx.core)

PROMPTS = 6
MAX_TOKENS = 48
PIRATE_WORDS = {"arr", "arrr", "matey", "mateys", "aye", "ye", "ahoy", "yo", "ho", "savvy", "landlubber", "hearty"}

# name -> overrides of TrainConfig(); "cli-*" start from the CLI's defaults, "quick-*" from the
# Quick test preset's shape (batch 2, the last 4 layers).
QUICK = {"batch_size": 2, "num_layers": 4, "rank": 8, "alpha": 16.0, "max_seq_length": 512}
CONFIGS = {
    "cli-1e-4": {"iters": 30},
    "cli-3e-4": {"iters": 30, "learning_rate": 3e-4, "warmup_steps": 3},
    "cli-1e-3": {"iters": 30, "learning_rate": 1e-3, "warmup_steps": 3},
    "quick-1e-3-constant": {**QUICK, "iters": 30, "learning_rate": 1e-3, "lr_schedule": "constant"},
    "quick-5e-4-cosine": {**QUICK, "iters": 30, "learning_rate": 5e-4, "lr_schedule": "cosine", "warmup_steps": 3},
    "quick-1e-3-cosine": {**QUICK, "iters": 30, "learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_steps": 3},
    "quick-2e-3-cosine": {**QUICK, "iters": 30, "learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_steps": 3},
}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def repeated_3grams(text: str) -> float:
    w = words(text)
    grams = [tuple(w[i:i + 3]) for i in range(len(w) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def style_score(dataset: str, answers: list[str]) -> float:
    if dataset == "pirate":
        return sum(sum(word in PIRATE_WORDS for word in words(a)) for a in answers) / len(answers)
    return sum(len([line for line in a.strip().splitlines() if line.strip()]) == 3 for a in answers) / len(answers)


def passes(dataset: str, row: dict) -> bool:
    return row["changed"] >= 0.8 and row["rep3"] <= 0.1 and row["style"] >= (1.0 if dataset == "pirate" else 0.5)


def prompts_of(dataset: str) -> list[str]:
    from mlx_lora import paths

    out = []
    for line in (paths.sample_datasets_dir() / dataset / "valid.jsonl").read_text().splitlines()[:PROMPTS]:
        record = json.loads(line)
        out.append(record["prompt"] if "prompt" in record else
                   next(m["content"] for m in record["messages"] if m["role"] == "user"))
    return out


def answers(session, prompts: list[str], use_adapter: bool) -> list[str]:
    from mlx_lora.chat import ChatSettings

    settings = ChatSettings(temperature=0.0, max_tokens=MAX_TOKENS, seed=0)
    return [session.answer([{"role": "user", "content": p}], settings, use_adapter=use_adapter).text.strip()
            for p in prompts]


def run_one(dataset: str, name: str, runs: Path, base_answers: list[str]) -> dict:
    from mlx_lora import paths
    from mlx_lora.chat import ChatSession, load_chat_model
    from mlx_lora.config import TrainConfig
    from mlx_lora.events import RecordingReporter
    from mlx_lora.train import EvalReport, train

    config = TrainConfig().replace(model="demo", data=str(paths.sample_datasets_dir() / dataset),
                                   run_dir=str(runs / f"{dataset}-{name}"), **CONFIGS[name])
    config = config.replace(steps_per_eval=config.schedule.iters, save_every=config.schedule.iters)
    recorder = RecordingReporter()
    start = time.perf_counter()
    result = train(config, recorder)
    seconds = time.perf_counter() - start
    chat = load_chat_model("demo", adapter=result.run_dir)
    tuned = answers(ChatSession(chat.model, chat.tokenizer), prompts_of(dataset), use_adapter=True)
    evals = recorder.of(EvalReport)
    row = {
        "dataset": dataset, "config": name, "settings": CONFIGS[name], "train_s": round(seconds, 1),
        "changed": sum(t != b for t, b in zip(tuned, base_answers)) / len(tuned),
        "rep3": round(sum(map(repeated_3grams, tuned)) / len(tuned), 3),
        "style": round(style_score(dataset, tuned), 2),
        "val": round(evals[-1].val_loss, 3) if evals else None,
        "example": tuned[0],
    }
    row["pass"] = passes(dataset, row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--datasets", default="pirate,haiku")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    from mlx_lora.chat import ChatSession, load_chat_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = load_chat_model("demo")
        base_session = ChatSession(base.model, base.tokenizer)
        for dataset in args.datasets.split(","):
            base_answers = answers(base_session, prompts_of(dataset), use_adapter=False)
            base_row = {"dataset": dataset, "config": "base", "changed": 0.0,
                        "rep3": round(sum(map(repeated_3grams, base_answers)) / len(base_answers), 3),
                        "style": round(style_score(dataset, base_answers), 2), "example": base_answers[0]}
            rows.append(base_row)
            print(json.dumps(base_row), flush=True)
            for name in args.configs.split(","):
                row = run_one(dataset, name, Path(tmp), base_answers)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    print("| dataset | setting | changed | rep3 | style | val loss | train s | pass |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['config']} | {r['changed']:.2f} | {r['rep3']:.2f} | {r['style']} | "
              f"{r.get('val', '—')} | {r.get('train_s', '—')} | {'yes' if r.get('pass') else '—'} |")


if __name__ == "__main__":
    main()
