"""A stand-in for `mlx-lora train --json-events`, for the supervisor tests.

    python tests/app/fake_trainer.py --run-dir DIR [--steps N] [--step-seconds S]
                                     [--kill-self-at STEP] [--exit-code-at STEP]
                                     [--ignore-sigterm] [--fail]

Prints one JSON event per line like the real trainer: run_started, step_report
per step, eval_report and checkpoint_saved every 5 steps, run_finished. On
SIGTERM it saves a "checkpoint" and prints run_stopped, exiting 0.
``--kill-self-at`` simulates an out-of-memory kill (SIGKILL to itself).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


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
    args = parser.parse_args()

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        # SIGTERM is blocked and taken by step_work's sigtimedwait: a stop request ends the
        # step's wait at once, as the real trainer notices it between micro-batches
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    emit("run_started", run_dir=args.run_dir, total_steps=args.steps, pid=os.getpid())
    print("loading model (not JSON: goes to the log)", flush=True)
    if args.fail:
        emit("run_failed", reason="the dataset has no valid examples")
        return 2
    start = time.monotonic()
    stop_requested = False
    for step in range(args.start_step + 1, args.steps + 1):
        if stop_requested:
            path = os.path.join(args.run_dir, f"checkpoint-{step - 1}")
            emit("checkpoint_saved", step=step - 1, path=path)
            emit("run_stopped", step=step - 1, path=path)
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
        emit("step_report", step=step, total_steps=args.steps, loss=3.0 / step ** 0.5,
             learning_rate=1e-4 * min(1.0, step / 5), tokens_per_second=1234.5,
             peak_memory_gb=1.25, elapsed_s=elapsed, eta_s=elapsed / step * (args.steps - step))
        if step % 5 == 0:
            emit("eval_report", step=step, val_loss=3.2 / step ** 0.5)
            emit("checkpoint_saved", step=step, path=os.path.join(args.run_dir, f"checkpoint-{step}"))
    emit("run_finished", step=args.steps, path=os.path.join(args.run_dir, "adapters"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
