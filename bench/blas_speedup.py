"""What the OpenBLAS preload (mlx_lora/backend.py) gives MLX on a Linux CPU.

    .venv/bin/python bench/blas_speedup.py [--iters 4]

Measures, each in a fresh subprocess with and without the preload
(MLX_LORA_NO_OPENBLAS=1 turns it off):
1. fp32 matmul GFLOP/s (1024 x 1024);
2. a short `mlx_lm.lora` run (its own trainer, unchanged) on the demo model,
   dequantised to fp32, rank 8 on the last 4 layers, batch 2, max length 128, on a generated
   chat set; the tokens/s mlx-lm reports itself.
Prints a markdown table with the speed-ups. Numbers depend on the machine; the
ratio is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

MATMUL = """
import mlx_lora, time, mlx.core as mx
a = mx.random.normal((1024, 1024)); b = mx.random.normal((1024, 1024)); mx.eval(a @ b)
t = time.perf_counter()
for _ in range(5): mx.eval(a @ b)
print((2 * 1024**3) / ((time.perf_counter() - t) / 5) / 1e9)
"""

LORA = """
import sys, mlx_lora  # the preload happens here, before mlx_lm imports mlx.core
import mlx_lm.tuner.trainer as trainer
from mlx_lm.lora import main
_report = trainer.TrainUI.report_train
def report(self, it, loss, tokens_per_second, trained_tokens, *rest):
    print(f"TOKENS_PER_SECOND {tokens_per_second}", flush=True)
    return _report(self, it, loss, tokens_per_second, trained_tokens, *rest)
trainer.TrainUI.report_train = report
sys.argv = ["mlx_lm.lora"] + sys.argv[1:]
main()
"""


def run(code: str, args: list[str], blas: bool) -> str:
    env = {**os.environ, "MLX_LORA_NO_OPENBLAS": "0" if blas else "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return out.stdout


def make_dataset(folder: Path) -> None:
    import random

    rng = random.Random(0)
    words = "the model learns to answer questions about ships sails stars maps and treasure".split()
    for split, count in (("train", 64), ("valid", 8)):
        with open(folder / f"{split}.jsonl", "w") as fh:
            for _ in range(count):
                q = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
                a = " ".join(rng.choice(words) for _ in range(rng.randint(20, 80)))
                fh.write(json.dumps({"messages": [{"role": "user", "content": q},
                                                  {"role": "assistant", "content": a}]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=4)
    args = parser.parse_args()

    import mlx_lora  # noqa: F401
    from mlx_lora.backend import blas_status
    from mlx_lora.models.demo import demo_gguf_path
    from mlx_lora.models.gguf import import_gguf

    rows = []
    matmul = {blas: float(run(MATMUL, [], blas).strip()) for blas in (False, True)}
    rows.append(("fp32 matmul 1024² (GFLOP/s)", matmul[False], matmul[True]))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = import_gguf(demo_gguf_path(), tmp / "demo-f32", dequantize="float32")
        make_dataset(tmp)
        its = {}
        for blas in (False, True):
            out = run(LORA, ["--model", str(model), "--train", "--data", str(tmp), "--iters", str(args.iters),
                             "--batch-size", "2", "--num-layers", "4", "--steps-per-report", str(args.iters),
                             "--steps-per-eval", "1000", "--val-batches", "1", "--max-seq-length", "128",
                             "--adapter-path", str(tmp / f"adapters-{blas}")], blas)
            its[blas] = float(re.findall(r"TOKENS_PER_SECOND ([0-9.]+)", out)[-1])
        rows.append((f"mlx_lm.lora, demo model fp32, {args.iters} iters (tokens/s)", its[False], its[True]))

    print(f"OpenBLAS: {blas_status().path} — {blas_status().detail}\n")
    print("| measure | reference BLAS | OpenBLAS | speed-up |")
    print("|---|---|---|---|")
    for name, slow, fast in rows:
        print(f"| {name} | {slow:.3g} | {fast:.3g} | {fast / slow:.1f}× |")


if __name__ == "__main__":
    main()
