"""AdaLoRA and ReLoRA (and LoRA+, rsLoRA) next to plain LoRA on the demo model, same data and steps.

    MLX_LORA_HOME=/tmp/x .venv/bin/python bench/adalora_relora.py [--iters 30] [--learning-rate 5e-4] [--repeats 2]
        [--methods LoRA,LoRA+,rsLoRA]

Each method runs ``mlx-lora train`` in its own process, one after the other, on the
pirate sample set: batch 4, max length 256, rank 8 on all linear layers of the last 16
layers, Adam at the same learning rate with a constant schedule, validation at the
start and the end only. AdaLoRA starts at rank 8 and prunes to an average of 4
(tinit 5, tfinal 10, every 2 steps); ReLoRA merges every 10 steps with a 3-step
re-warm-up. LoRA+ trains B 16× faster than A (the paper's ratio); rsLoRA scales by
alpha/sqrt(rank) instead of alpha/rank. AdaLoRA runs twice: at the same learning rate, and at 10× (its λ start at
zero and its P, Q at N(0, 0.02²), so its update grows slowly at LoRA's rate).

With ``--repeats N`` every method runs N times, the order reversed each round, and the
fastest run's time is reported (the machine is shared; losses are identical across
repeats). Prints a markdown table: the last-10-step training loss, the validation loss
at the start and the end, time per step (including the start's validation), wall time
of the process, the adapter file's size, the trainable parameters, and the ratios
against LoRA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = {
    "LoRA": [],
    "AdaLoRA": ["--fine-tune-type", "adalora", "--adalora-target-rank", "4", "--adalora-tinit", "5",
                "--adalora-tfinal", "10", "--adalora-delta-t", "2"],
    "ReLoRA": ["--relora-every", "10", "--relora-warmup", "3"],
    "LoRA+": ["--lora-plus-ratio", "16"],
    "rsLoRA": ["--rslora"],
}
ADALORA_FAST = "AdaLoRA, lr ×10"


def run(name: str, extra: list[str], args, out: Path) -> dict:
    run_dir = out / name
    command = [sys.executable, "-m", "mlx_lora.cli.main", "train", "--model", "demo", "--data",
               str(ROOT / "resources/datasets/pirate"), "--iters", str(args.iters), "--batch-size", "4",
               "--max-seq-length", "256", "--rank", "8", "--num-layers", "16", "--learning-rate",
               str(args.learning_rate), "--lr-schedule", "constant", "--steps-per-report", "1",
               "--steps-per-eval", "1000", "--save-every", "1000", "--run-dir", str(run_dir), "--json-events",
               *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step_report"]
    evals = [e for e in events if e["event"] == "eval_report"]
    started = next(e for e in events if e["event"] == "run_started")
    window = steps[-10:]
    return {
        "name": name,
        "train_loss": sum(e["loss"] for e in window) / len(window),
        "val_loss": evals[-1]["val_loss"],
        "val_start": evals[0]["val_loss"],
        "wall_s": wall,
        "step_s": steps[-1]["elapsed_s"] / len(steps),
        "adapter_mb": (run_dir / "adapters.safetensors").stat().st_size / 1e6,
        "trainable": started["trainable_parameters"],
        "extra": [e["message"] for e in events if e["event"] in ("adapter_merged", "adapter_ranks")],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default="LoRA,AdaLoRA,ReLoRA," + ADALORA_FAST,
                        help=f"comma-separated, LoRA first (the baseline): {', '.join([*METHODS, ADALORA_FAST])}")
    args = parser.parse_args()
    known = {**METHODS, ADALORA_FAST: METHODS["AdaLoRA"] + ["--learning-rate", str(10 * args.learning_rate)]}
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or names[:1] != ["LoRA"]:
        raise SystemExit(f"--methods: LoRA first, then any of {', '.join(known)}; got {args.methods!r}")
    methods = {name: known[name] for name in names}
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            order = list(methods) if round_ % 2 == 0 else list(reversed(methods))
            for name in order:
                runs[name].append(run(name, methods[name], args, Path(tmp) / str(round_)))
    rows = [min(results, key=lambda r: r["step_s"]) for results in runs.values()]
    base = rows[0]
    print("| method | train loss (last 10 steps) | val loss (start → end) | s/step | wall (s) | adapter (MB) "
          "| trainable params |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['train_loss']:.3f} | {r['val_start']:.3f} → {r['val_loss']:.3f} | "
              f"{r['step_s']:.2f} ({r['step_s'] / base['step_s']:.2f}×) | {r['wall_s']:.0f} | "
              f"{r['adapter_mb']:.2f} ({r['adapter_mb'] / base['adapter_mb']:.2f}×) | {r['trainable']:,} |")
    for r in rows:
        for line in r["extra"]:
            print(f"- {r['name']}: {line}")


if __name__ == "__main__":
    main()
