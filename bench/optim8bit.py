"""Adam's moments in 32 vs 8 bits (optimizer.state_bits) on the demo model: the same run twice.

    .venv/bin/python bench/optim8bit.py [--iters 30] [--method full|lora] [--rank 64]

Full fine-tuning of the last 4 layers (or LoRA of a large rank on every layer) of the demo
model on resources/datasets/pirate, the same seed and data order, the two runs alternating
nothing else. Reports the optimiser state's size (the checkpoint's optimizer.safetensors),
the final train loss (mean of the last 5 reports), the final validation loss, the peak memory
and the time per step. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import mlx_lora  # noqa: F401  (BLAS preload before mlx.core)

REPO = Path(__file__).resolve().parent.parent


def run(bits: int, args, out: Path) -> dict:
    from mlx_lora.config import TrainConfig
    from mlx_lora.events import RecordingReporter
    from mlx_lora.run_folder import OPTIMIZER_FILE, RunFolder
    from mlx_lora.train import EvalReport, RunFinished, StepReport, train

    method = dict(fine_tune_type="full", num_layers=4) if args.method == "full" else \
        dict(fine_tune_type="lora", num_layers=-1, rank=args.rank, alpha=2.0 * args.rank)
    config = TrainConfig().replace(model="demo", data=str(REPO / "resources/datasets/pirate"), iters=args.iters,
                                   batch_size=4, learning_rate=args.learning_rate, steps_per_report=1,
                                   steps_per_eval=args.iters, save_every=args.iters, state_bits=bits,
                                   run_dir=str(out / f"bits-{bits}"), **method)
    recorder = RecordingReporter()
    train(config, recorder)
    steps = recorder.of(StepReport)
    checkpoint = RunFolder(out / f"bits-{bits}").latest_checkpoint()
    finished = recorder.of(RunFinished)[-1]
    return {"bits": bits, "state_mb": (checkpoint / OPTIMIZER_FILE).stat().st_size / 1e6,
            "train_loss": statistics.mean(s.loss for s in steps[-5:]),
            "val_loss": recorder.of(EvalReport)[-1].val_loss, "peak_gb": max(s.peak_memory_gb for s in steps),
            "s_per_step": finished.elapsed_s / len(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--method", choices=("full", "lora"), default="full")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(bits, args, Path(tmp)) for bits in (32, 8)]
    print(f"| state bits | optimiser state (MB) | train loss (last 5) | val loss | peak (GB) | s/step |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['bits']} | {r['state_mb']:.1f} | {r['train_loss']:.4f} | {r['val_loss']:.4f} | "
              f"{r['peak_gb']:.2f} | {r['s_per_step']:.2f} |")
    print(f"8-bit / 32-bit: state {rows[1]['state_mb'] / rows[0]['state_mb']:.2f}x, "
          f"peak {rows[1]['peak_gb'] / rows[0]['peak_gb']:.2f}x, time {rows[1]['s_per_step'] / rows[0]['s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
