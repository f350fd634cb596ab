"""The memory estimator (mlx_lora/train/memory.py) against measured peaks.

    .venv/bin/python bench/memory_check.py [--configs demo-small,demo-long,...] [--json OUT]

Each configuration runs one training step of our trainer's own step (the
loss, value_and_grad, gradient norm and Adam update of ``mlx_lora.train.loop``,
compiled on a GPU as there: ``train/step.py``)
in a fresh process on a synthetic batch of B rows × L tokens with a share of
the positions trained, after ``mx.reset_peak_memory()`` (as ``train()`` does
after loading). Prints estimate, measured peak and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.train_vs_mlx_lm import run  # noqa: E402  (a code string in its own process → its RESULT)

STEP = r"""
import json, sys
import mlx_lora  # OpenBLAS preload before mlx.core
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lora.config import TrainConfig
from mlx_lora.train.evaluate import MaskedLoss
from mlx_lora.train.prepare import prepare_model
from mlx_lora.train.optim import Optimizer
from mlx_lora.train import step as step_fn
s = json.loads(sys.argv[1])
from mlx_lora.train import prepare
for name, value in s.get("prepare", {}).items():  # e.g. {"LEAN_SWIGLU": false}: mlx-lm's own SwiGLU
    setattr(prepare, name, value)
config = TrainConfig().replace(**s["config"])
prepared = prepare_model(config)
model = prepared.model
model.train()  # as train() does (mlx_lm.load leaves the model in eval mode)
loss = MaskedLoss(**s.get("loss", {}))
B, L, share = s["batch"], s["length"], s["trained_share"]
rng = np.random.default_rng(0)
tokens = rng.integers(10, 1000, size=(B, L + 1)).astype(np.int32)
trained = np.zeros((B, L), np.float32)
trained[:, int(L * (1 - share)):] = 1  # the answer is the end of each row
loss.check(model, mx.array(tokens[:1, :32]))
optimizer = Optimizer(config)
optimizer.inner.init(model.trainable_parameters())
mx.eval(model.parameters(), optimizer.state)
positions = None if step_fn.on_gpu() else np.flatnonzero(trained).astype(np.int32)  # as the loop's batches
batch = [mx.array(x) for x in (tokens[:, :-1], tokens[:, 1:], trained)] + [None if positions is None else mx.array(positions)]
loss_and_grad = step_fn.loss_and_grad(model, loss)
update = step_fn.optimizer_update(model, optimizer, plain=True)
before = mx.get_active_memory()
mx.reset_peak_memory()
peaks = []
import time
started = time.perf_counter()
for _ in range(s.get("steps", 1)):
    (value, count), grads = loss_and_grad(model, *batch)
    mx.eval(grads, value, count)
    norm = sum((g.astype(mx.float32) ** 2).sum() for _, g in tree_flatten(grads)).item()
    update(model, tree_map(lambda g: g / count, grads))
    mx.eval(model.parameters(), optimizer.state)
    peaks.append(mx.get_peak_memory())
print("RESULT " + json.dumps({"peak": max(peaks), "before": before, "step_s": (time.perf_counter() - started) / len(peaks), "loss": value.item() / count.item(),
                              "split": loss.split is not None}))
"""

# name -> (config overrides, batch, length, trained share)
CONFIGS = {
    "demo-r8-l4-2x256": (dict(num_layers=4), 2, 256, 0.6),
    "demo-r8-l8-2x256": (dict(num_layers=8), 2, 256, 0.6),
    "demo-r8-l8-2x512": (dict(num_layers=8), 2, 512, 0.6),
    "demo-r8-l8-4x512-ckpt": (dict(num_layers=8, grad_checkpoint=True), 4, 512, 0.6),
    "demo-r16-all-4x1024": (dict(num_layers=-1, rank=16), 4, 1024, 0.8),
    "demo-r8-l16-8x1024": (dict(num_layers=16), 8, 1024, 0.8),
    # the 1B llama shape of bench/gpu_train_vs_mlx_lm.py (--model /tmp/gpu-bench/llama1b), on a GPU
    "1b-r16-l16-8x1024": (dict(num_layers=16, rank=16), 8, 1024, 0.8),
    "1b-r16-l16-8x1024-ckpt": (dict(num_layers=16, rank=16, grad_checkpoint=True), 8, 1024, 0.8),
    "1b-r16-l16-4x1024": (dict(num_layers=16, rank=16), 4, 1024, 0.8),
    "1b-r16-l8-8x1024": (dict(num_layers=8, rank=16), 8, 1024, 0.8),
    "1b-r16-l16-8x512": (dict(num_layers=16, rank=16), 8, 512, 0.8),
}


def measure(model: str, overrides: dict, batch: int, length: int, share: float, loss: dict | None = None,
            steps: int = 1, prepare: dict | None = None) -> dict:
    spec = {"config": {"model": model, "max_seq_length": length, "batch_size": batch, **overrides},
            "batch": batch, "length": length, "trained_share": share, "loss": loss or {}, "steps": steps,
            "prepare": prepare or {}}
    return run(STEP, json.dumps(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--mlx-lm-swiglu", action="store_true",
                        help="also measure each config with mlx-lm's own SwiGLU (prepare.LEAN_SWIGLU off)")
    args = parser.parse_args()
    from mlx_lora.config import TrainConfig
    from mlx_lora.train.memory import estimate_training_memory

    rows = []
    lean_column = " mlx-lm's SwiGLU peak (GB) | lean / mlx-lm's (step's own) | step time, lean vs mlx-lm's |" if args.mlx_lm_swiglu else ""
    print("| config | estimate (GB) | measured peak (GB) | estimate / measured |" + lean_column)
    print("|---|---:|---:|---:|" + ("---:|---:|---:|" if args.mlx_lm_swiglu else ""))
    for name in args.configs.split(","):
        overrides, batch, length, share = CONFIGS[name]
        result = measure(args.model, overrides, batch, length, share)
        config = TrainConfig().replace(model=args.model, max_seq_length=length, batch_size=batch, **overrides)
        estimate = estimate_training_memory(config, batch_tokens=(batch, length), trained_share=share)
        rows.append({"name": name, **result, "estimate": estimate.total_bytes, "parts": estimate.parts})
        extra = ""
        if args.mlx_lm_swiglu:
            plain = measure(args.model, overrides, batch, length, share, prepare={"LEAN_SWIGLU": False})
            rows[-1]["mlx_lm_swiglu_peak"] = plain["peak"]
            extra = (f" {plain['peak'] / 1e9:.2f} | {(result['peak'] - result['before']) / (plain['peak'] - plain['before']):.2f} |"
                     f" {result['step_s']:.1f} s vs {plain['step_s']:.1f} s |")
        print(f"| {name} | {estimate.total_bytes / 1e9:.2f} | {result['peak'] / 1e9:.2f} | "
              f"{estimate.total_bytes / result['peak']:.2f} |" + extra, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
