"""kill -9 a training run 20 times — at moments drawn from a seeded RNG, half of them
inside a checkpoint write through the fault-injection hook (mlx_lora.atomic.fault_point) —
resuming after each. After every kill the run folder is whole (every file parses, every
step-N and best/ complete, ``latest`` names a whole checkpoint, nothing it held before is
gone); the resume starts at exactly that checkpoint; at the end no step was run twice or
skipped, and every step's loss is the one an uninterrupted run gets.

One child process per kill (each one is killed; the 21st finishes). About 2 minutes on
2 CPU cores, most of it the children starting up."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from mlx_lora.atomic import FAULT_ENV
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import RunFolder
from mlx_lora.train import train
from tests.cli.test_train_cli import flags
from tests.core.test_train_helpers import losses, tiny_config
from tests.reliability.runcheck import check_run_folder, checkpoint_step

REPO = Path(__file__).resolve().parents[2]
KILLS = 20
SEED = 20260
SETTINGS = dict(iters=24, save_every=1, steps_per_eval=3, val_batches=1, keep_checkpoints=3, dropout=0.05)
# Moments inside a checkpoint write (mlx_lora.atomic.fault_point phases), in the order a save reaches them.
WRITE_PHASES = ("checkpoint.partial", "checkpoint.written", "adapter.written", "atomic_dir.swap",
                "latest.before", "prune")
# Moments the parent picks by killing as soon as it reads the n-th event of a kind: the child
# is a few milliseconds further on, somewhere in a step, an evaluation or a write.
EVENT_KINDS = ("step_report", "checkpoint_saved", "eval_report", "run_started")


def start(args: list[str], fault: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen([sys.executable, "-m", "mlx_lora.cli.main", "train", *args, "--json-events"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_child(proc: subprocess.Popen, kill_after: tuple[str, int] | None) -> list[dict]:
    """Read the child's events; SIGKILL it at once after the n-th event of a kind."""
    events, seen = [], 0
    for line in proc.stdout:
        events.append(json.loads(line))
        if kill_after and events[-1]["event"] == kill_after[0]:
            seen += 1
            if seen == kill_after[1]:
                proc.kill()
                break
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return events


def moment(rng: random.Random, kill: int) -> tuple[str | None, tuple[str, int] | None]:
    """(fault-injection spec, or kill-after-event) for one kill: even kills inside a write
    (every phase in turn), odd ones at a random event."""
    if kill == 0:  # the first run must leave a checkpoint to resume from
        return "latest.before:2", None
    if kill % 2 == 0:
        phase = WRITE_PHASES[(kill // 2 - 1) % len(WRITE_PHASES)]
        n = 1 if phase == "atomic_dir.swap" else rng.randint(1, 3)
        return f"{phase}:{n}", None
    kind = rng.choice(EVENT_KINDS)
    return None, (kind, 1 if kind in ("run_started", "eval_report") else rng.randint(1, 3))


@pytest.mark.slow
def test_twenty_kill_9s_then_resume_lose_nothing_and_replay_nothing(tiny_model, dataset, tmp_path):
    rng = random.Random(SEED)
    run_dir = tmp_path / "killed"
    args = flags(tiny_model, dataset, run_dir, **SETTINGS)
    all_events: list[dict] = []
    log = []  # (how it was killed, the checkpoint it left) per kill
    previous_latest, had_best, files_lost = None, False, 0
    for kill in range(KILLS):
        fault, kill_after = moment(rng, kill)
        proc = start(args if kill == 0 else ["--resume", str(run_dir)], fault)
        events = run_child(proc, kill_after)
        assert proc.returncode == -signal.SIGKILL, (fault, kill_after, proc.returncode, events[-1:])
        if kill > 0:  # the resume began exactly at the last complete checkpoint
            started = next(e for e in events if e["event"] == "run_started")
            assert started["resumed"] and started["step"] == previous_latest, (fault, kill_after)
        steps = [e["step"] for e in events if e["event"] == "step_report"]
        assert steps == list(range((previous_latest or 0) + 1, (previous_latest or 0) + 1 + len(steps)))
        all_events += events

        latest = check_run_folder(run_dir)  # raises if anything visible is broken
        run = RunFolder(run_dir)
        best_whole = run.best.is_dir() or (run_dir / ".best.old").is_dir()  # parked by a kill mid-replace
        if latest is None or (previous_latest is not None and latest < previous_latest) or (had_best and not best_whole):
            files_lost += 1
        previous_latest, had_best = latest, best_whole
        log.append((fault or f"after {kill_after[0]} #{kill_after[1]}", latest))

    final = start(["--resume", str(run_dir)], None)
    events = run_child(final, None)
    assert final.returncode == 0, final.stderr
    started = next(e for e in events if e["event"] == "run_started")
    assert started["step"] == previous_latest
    assert events[-1]["event"] == "run_finished" and events[-1]["step"] == SETTINGS["iters"]
    all_events += events

    # the whole run, across 21 processes: every step once, in order, with the uninterrupted run's loss
    assert files_lost == 0, log
    assert {how.split(":")[0] for how, _ in log} >= set(WRITE_PHASES)  # every write phase was hit
    check_run_folder(run_dir)
    run = RunFolder(run_dir)
    assert not [p for p in run_dir.rglob(".*")], "temporaries left behind after the run finished"
    assert run.checkpoint_steps()[-1] == SETTINGS["iters"]
    assert checkpoint_step(run.latest_checkpoint()) == SETTINGS["iters"]
    reported = [line["step"] for line in run.metrics() if line["event"] == "step_report"]
    assert reported == list(range(1, SETTINGS["iters"] + 1))

    straight = RecordingReporter()
    train(tiny_config(tiny_model, dataset, tmp_path / "straight", **{**SETTINGS, "save_every": 1000}), straight)
    expected = losses(straight.events)
    # the last report of a step wins: a step redone after a kill must give the same loss
    got = {e["step"]: e["loss"] for e in all_events if e["event"] == "step_report"}
    assert list(got) == list(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), (step, log)
    a = mx.load(str(tmp_path / "straight" / "adapters.safetensors"))
    b = mx.load(str(run_dir / "adapters.safetensors"))
    for name in a:
        assert mx.allclose(a[name], b[name], atol=1e-5).item(), name
    print(f"\n{KILLS} kills, files lost {files_lost}:", *log, sep="\n  ")
