"""A stand-in for `mlx-lora train --json-events`, for the supervisor tests.

    python tests/app/fake_trainer.py --run-dir DIR [--steps N] [--step-seconds S]
                                     [--kill-self-at STEP] [--exit-code-at STEP]
                                     [--ignore-sigterm] [--fail] [--foreign-lines]

Prints one JSON event per line like the real trainer, with the engine's own event
classes (so the supervisor reads them back with ``Event.from_dict``): run_started,
step_report per step, eval_report and checkpoint_saved every 5 steps, run_finished.
On SIGTERM it saves a "checkpoint" and prints run_stopped, exiting 0.
``--kill-self-at`` simulates an out-of-memory kill (SIGKILL to itself);
``--foreign-lines`` adds JSON lines that are not events of this engine (a newer
kind, a torn event), as a trainer of another version might print.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's engine, as the tests import it

from mlx_lora.run_events import (  # noqa: E402 (after the path)
    CheckpointSaved, EvalReport, RunFailed, RunFinished, RunStarted, RunStopped, StepReport,
)


def emit(event) -> None:
    print(event.to_json(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=0.02)
    parser.add_argument("--kill-self-at", type=int)
    parser.add_argument("--exit-code-at", type=int)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--start-step", type=int, default=0)
    parser.add_argument("--foreign-lines", action="store_true")
    args = parser.parse_args()

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        # SIGTERM is blocked and taken by step_work's sigtimedwait: a stop request ends the
        # step's wait at once, as the real trainer notices it between micro-batches
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    run_dir = args.run_dir
    emit(RunStarted(args.start_step, run_dir, "fake/model", "lora", total_steps=args.steps, steps_per_epoch=10.0,
                    trainable_parameters=1000, total_parameters=100_000, train_examples=40, valid_examples=5,
                    test_examples=0, train_tokens=4000, trained_tokens_per_epoch=2000, truncated_examples=0,
                    dropped_examples=0, padding_fraction=0.1, device="cpu", compute_dtype="float32",
                    resumed=args.start_step > 0))
    print("loading model (not JSON: goes to the log)", flush=True)
    if args.foreign_lines:
        print('{"event": "rank_joined", "step": 0}', flush=True)
        print('{"event": "step_report", "step": 0}', flush=True)
        print('["not", "an", "event"]', flush=True)
    if args.fail:
        emit(RunFailed(0, run_dir, None, "the dataset has no valid examples"))
        return 2
    start = time.monotonic()
    stop_requested = False
    for step in range(args.start_step + 1, args.steps + 1):
        if stop_requested:
            path = os.path.join(run_dir, f"checkpoint-{step - 1}")
            emit(CheckpointSaved(step - 1, path, best=False))
            emit(RunStopped(step - 1, run_dir, path, f"stopped at step {step - 1}"))
            return 0
        if signal.sigtimedwait({signal.SIGTERM}, args.step_seconds) is not None:  # a step's work
            stop_requested = True
        if args.kill_self_at == step:
            print("Traceback: simulated Metal out-of-memory", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if args.exit_code_at == step:
            print("error: simulated failure in step", file=sys.stderr, flush=True)
            return 3
        elapsed = time.monotonic() - start
        emit(StepReport(step, args.steps, epoch=step / 10, loss=3.0 / step ** 0.5,
                        learning_rate=1e-4 * min(1.0, step / 5), tokens_per_second=1234.5, trained_tokens=200 * step,
                        peak_memory_gb=1.25, elapsed_s=elapsed, eta_s=elapsed / step * (args.steps - step)))
        if step % 5 == 0:
            val_loss = 3.2 / step ** 0.5  # falls every time: each is the best so far
            emit(EvalReport(step, val_loss, best=True, best_val_loss=val_loss, best_step=step))
            emit(CheckpointSaved(step, os.path.join(run_dir, f"checkpoint-{step}"), best=True))
    emit(RunFinished(args.steps, run_dir, "completed", final_loss=3.0 / args.steps ** 0.5, best_val_loss=None,
                     best_step=None, elapsed_s=time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
