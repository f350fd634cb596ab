"""Data-parallel scaling on the GPUs of one machine: the same run at 1, 2, … GPUs through
``mlx-lora train --gpus N`` (NCCL), on bench/gpu_train_vs_mlx_lm.py's random-weight llama
shapes and data, reporting examples/s, the speed-up over one GPU, rank 0's peak memory and
whether the losses match one GPU's on the same global batch.

    python bench/multi_gpu_scaling.py --tokenizer DIR [--shape 1b|8b] [--data long-tailed|fixed]
        [--gpus 1,2,4] [--iters 30] [--batch-size 8]
    python bench/multi_gpu_scaling.py --tokenizer DIR --smoke   # 2 CPU ranks (ring), a tiny shape

Keep NVLink multicast off on the lent machines (the device tool's KINDS.md): NCCL_NVLS_ENABLE=0
is set for the ranks here. Rank 0 reports for the whole run: tokens/s are global, peak memory
is rank 0's (every rank holds the same model and a share of the batch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run(model: Path, data: Path, run_dir: Path, gpus: int, args, env: dict) -> dict:
    argv = [sys.executable, "-m", "mlx_lora.cli.main", "train", "--model", str(model), "--data", str(data),
            "--run-dir", str(run_dir), "--iters", str(args.iters), "--batch-size", str(args.batch_size),
            "--max-seq-length", "1024", "--rank", "16", "--alpha", "32", "--num-layers", "-1",
            "--learning-rate", "1e-4", "--steps-per-report", "5", "--steps-per-eval", str(10 ** 6),
            "--save-every", str(10 ** 6), "--valid-ratio", "0", "--gpus", str(gpus), "--json-events"]
    start = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=args.timeout)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not events or events[-1].get("event") != "run_finished":
        raise SystemExit(f"--gpus {gpus} failed: {proc.stderr[-2000:]}")
    steps = [e for e in events if e["event"] == "step_report"]
    later = steps[1:] or steps  # the first window builds the kernels
    tokens_per_s = sum(e["tokens_per_second"] for e in later) / len(later)
    started = next(e for e in events if e["event"] == "run_started")
    examples_per_token = started["train_examples"] / max(started["train_tokens"], 1)
    return {"gpus": gpus, "world_size": started["world_size"], "tokens_per_s": tokens_per_s,
            "examples_per_s": tokens_per_s * examples_per_token, "peak_gb": max(e["peak_memory_gb"] for e in steps),
            "losses": {e["step"]: e["loss"] for e in steps}, "wall_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--shape", choices=("1b", "8b"), default="1b")
    parser.add_argument("--data", choices=("long-tailed", "fixed"), default="long-tailed")
    parser.add_argument("--gpus", default="1,2")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--timeout", type=int, default=540)
    parser.add_argument("--work", type=Path, default=Path("/tmp/multi-gpu-bench"))
    parser.add_argument("--smoke", action="store_true", help="a 2-layer 256-wide model on 2 CPU ranks (ring)")
    args = parser.parse_args()

    from bench.gpu_train_vs_mlx_lm import LLAMA_1B, LLAMA_8B, make_model
    from bench.long_tailed import make_chats, make_fixed_chats

    shape = LLAMA_8B if args.shape == "8b" else LLAMA_1B
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0"}
    if args.smoke:
        shape = dict(shape, hidden_size=256, intermediate_size=512, num_hidden_layers=2)
        env["MLX_LORA_GPUS_BACKEND"] = "ring"
        args.iters, args.batch_size = min(args.iters, 6), 2
    model = make_model(args.work / (("smoke-" if args.smoke else "llama") + args.shape), args.tokenizer, shape)
    data = (make_chats(args.work / "chats", count=64 if args.smoke else 2000) if args.data == "long-tailed"
            else make_fixed_chats(args.work / "fixed"))
    results = [run(model, data, args.work / f"run-{n}-{time.time():.0f}", n, args, env)
               for n in map(int, args.gpus.split(","))]
    base = results[0]
    print(f"| GPUs | examples/s | × one GPU | rank 0 peak GB | max loss difference vs {base['gpus']} GPU |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        diff = max(abs(r["losses"][s] - base["losses"][s]) / abs(base["losses"][s]) for s in base["losses"])
        print(f"| {r['gpus']} | {r['examples_per_s']:.2f} | {r['examples_per_s'] / base['examples_per_s']:.2f} | "
              f"{r['peak_gb']:.1f} | {diff:.1e} (relative) |", flush=True)


if __name__ == "__main__":
    main()
