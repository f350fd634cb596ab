"""The training supervisor against a fake trainer child (tests/app/fake_trainer.py):
clean finish, graceful stop, forced stop, crash reports with a resumable
checkpoint, and no orphan process after a crash or an app quit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.jobs.training_supervisor import TrainingSupervisor, describe_exit, train_command
from mlx_lora.events import Event
from mlx_lora.run_events import CheckpointSaved, EvalReport, RunFinished, RunStarted, RunStopped, StepReport

FAKE = Path(__file__).with_name("fake_trainer.py")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); reap-check it through /proc where there is one.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        return stat.read_text().split(") ")[-1][:1] != "Z"
    return True


def make_supervisor(qtbot, tmp_path, *extra, stop_timeout_ms=10_000):
    def command_for(config_path=None, resume_dir=None):
        argv = [sys.executable, str(FAKE), "--run-dir", str(resume_dir or tmp_path), *extra]
        return argv + (["--start-step", "5"] if resume_dir else [])

    supervisor = TrainingSupervisor(command_for=command_for, stop_timeout_ms=stop_timeout_ms)
    steps, logs = [], []
    supervisor.step_reported.connect(steps.append)
    supervisor.log_line.connect(logs.append)
    return supervisor, steps, logs


def test_train_command_is_the_cli():
    argv = train_command(config_path="c.yaml")
    assert argv[1:] == ["-m", "mlx_lora.cli.main", "train", "--config", "c.yaml", "--json-events"]
    assert "--resume" in train_command(resume_dir="runs/x")


def test_clean_run_reports_every_step_and_finishes(qtbot, tmp_path):
    supervisor, steps, logs = make_supervisor(qtbot, tmp_path, "--steps", "12")
    evals, crashes = [], []
    supervisor.eval_reported.connect(evals.append)
    supervisor.crashed.connect(lambda *a: crashes.append(a))
    with qtbot.waitSignal(supervisor.run_finished, timeout=15_000) as finished:
        supervisor.start("config.yaml")
    assert [s.step for s in steps] == list(range(1, 13))
    assert [e.step for e in evals] == [5, 10]
    assert finished.args[0].kind == "run_finished"
    assert supervisor.last_checkpoint.endswith("checkpoint-10")
    assert supervisor.run_dir == str(tmp_path)
    assert any("not JSON" in line for line in logs)
    assert not crashes and not supervisor.is_running()


def test_the_signals_carry_the_engines_event_classes(qtbot, tmp_path):
    supervisor, steps, logs = make_supervisor(qtbot, tmp_path, "--steps", "5", "--foreign-lines")
    received, started, evals = [], [], []
    supervisor.event_received.connect(received.append)
    supervisor.run_started.connect(started.append)
    supervisor.eval_reported.connect(evals.append)
    with qtbot.waitSignal(supervisor.run_finished, timeout=15_000) as finished:
        supervisor.start("config.yaml")
    assert type(started[0]) is RunStarted and started[0].run_dir == str(tmp_path) and started[0].notes == ()
    assert {type(step) for step in steps} == {StepReport} and steps[-1].peak_memory_gb == 1.25
    assert type(evals[0]) is EvalReport and evals[0].best
    assert type(finished.args[0]) is RunFinished and finished.args[0].reason == "completed"
    assert all(isinstance(event, Event) for event in received)
    assert [type(event) for event in received] == [RunStarted, *[StepReport] * 5, EvalReport, CheckpointSaved,
                                                   RunFinished]
    # what is not an event of this engine (a newer kind, a torn event, other JSON) stays a log line, whole
    for line in ('{"event": "rank_joined", "step": 0}', '{"event": "step_report", "step": 0}', '["not", "an", "event"]'):
        assert line in logs


def test_stop_is_graceful_and_writes_a_checkpoint(qtbot, tmp_path):
    supervisor, steps, _ = make_supervisor(qtbot, tmp_path, "--steps", "100000", "--step-seconds", "0.01")
    supervisor.start("config.yaml")
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=15_000)
    pid = supervisor.pid
    with qtbot.waitSignal(supervisor.run_stopped, timeout=10_000) as stopped:
        supervisor.stop()
    assert stopped.args[0].checkpoint.startswith(str(tmp_path))
    assert stopped.args[0].forced is False
    assert not _alive(pid)


def test_stop_escalates_to_kill_when_the_child_ignores_sigterm(qtbot, tmp_path):
    supervisor, steps, _ = make_supervisor(
        qtbot, tmp_path, "--steps", "100000", "--ignore-sigterm", stop_timeout_ms=500)
    supervisor.start("config.yaml")
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=15_000)
    pid = supervisor.pid
    with qtbot.waitSignal(supervisor.run_stopped, timeout=10_000) as stopped:
        supervisor.stop()
    forced = stopped.args[0]
    assert type(forced) is RunStopped and forced.forced is True
    assert forced.run_dir == str(tmp_path) and forced.step == steps[-1].step >= 1
    assert forced.checkpoint == supervisor.last_checkpoint  # the last one it saved before the kill
    assert not _alive(pid)


def test_sigkill_mid_run_is_reported_as_a_crash_with_resume(qtbot, tmp_path):
    supervisor, steps, _ = make_supervisor(qtbot, tmp_path, "--steps", "50", "--kill-self-at", "8")
    supervisor.start("config.yaml")
    qtbot.waitUntil(lambda: supervisor.pid is not None, timeout=5_000)
    pid = supervisor.pid
    with qtbot.waitSignal(supervisor.crashed, timeout=15_000) as crashed:
        pass
    reason, checkpoint = crashed.args
    assert "memory" in reason and "SIGKILL" in reason
    assert checkpoint == str(tmp_path / "checkpoint-5")  # resume is offered from here
    assert [s.step for s in steps] == list(range(1, 8))
    assert not _alive(pid) and not supervisor.is_running()
    # Resuming continues after the checkpoint.
    steps.clear()
    with qtbot.waitSignal(supervisor.crashed, timeout=15_000):
        supervisor.resume(supervisor.run_dir)
    assert steps[0].step == 6


def test_crash_is_reported_within_five_seconds(qtbot, tmp_path):
    import time

    supervisor, steps, _ = make_supervisor(qtbot, tmp_path, "--steps", "100000", "--step-seconds", "0.01",
                                           "--kill-self-at", "30")
    # Times are taken when the signals arrive, so a crash handled inside the same event-loop
    # pass as the last step report is still seen (waiting for the step first raced with it).
    last_step_at, crashed_at = [], []
    supervisor.step_reported.connect(lambda _event: last_step_at.append(time.monotonic()))
    supervisor.crashed.connect(lambda *_args: crashed_at.append(time.monotonic()))
    supervisor.start("config.yaml")
    qtbot.waitUntil(lambda: bool(crashed_at), timeout=20_000)
    assert len(steps) == 29  # the child killed itself during step 30
    assert crashed_at[0] - last_step_at[-1] < 5


def test_nonzero_exit_reports_the_error_line(qtbot, tmp_path):
    supervisor, _, _ = make_supervisor(qtbot, tmp_path, "--steps", "50", "--exit-code-at", "3")
    with qtbot.waitSignal(supervisor.crashed, timeout=15_000) as crashed:
        supervisor.start("config.yaml")
    assert crashed.args[0] == "simulated failure in step"
    assert crashed.args[1] is None


def test_engine_reported_failure_is_not_a_crash(qtbot, tmp_path):
    supervisor, _, _ = make_supervisor(qtbot, tmp_path, "--fail")
    crashes = []
    supervisor.crashed.connect(lambda *a: crashes.append(a))
    with qtbot.waitSignal(supervisor.run_failed, timeout=15_000) as failed:
        supervisor.start("config.yaml")
    assert "no valid examples" in failed.args[0]
    assert not crashes


def test_missing_program_is_reported(qtbot, tmp_path):
    supervisor = TrainingSupervisor(command_for=lambda **_: [str(tmp_path / "no-such-program")])
    with qtbot.waitSignal(supervisor.crashed, timeout=5_000) as crashed:
        supervisor.start("config.yaml")
    assert "could not start" in crashed.args[0]
    assert not supervisor.is_running()


@pytest.mark.parametrize("code,by_signal,expected", [
    (9, True, "memory"), (6, True, "aborted"), (2, False, "bad thing"), (0, False, "without reporting"),
])
def test_describe_exit(code, by_signal, expected):
    assert expected in describe_exit(code, by_signal, "noise\nerror: bad thing\n")


def test_quitting_the_app_leaves_no_orphan(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from app.jobs.training_supervisor import TrainingSupervisor
        app = QApplication([])
        supervisor = TrainingSupervisor(command_for=lambda **_: [
            sys.executable, {str(FAKE)!r}, "--run-dir", {str(tmp_path)!r},
            "--steps", "100000", "--ignore-sigterm"])
        def on_step(event):
            print("CHILD", supervisor.pid, flush=True)
            app.quit()
        supervisor.step_reported.connect(on_step)
        supervisor.start("c.yaml")
        QTimer.singleShot(60_000, app.quit)
        app.exec()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    pid = int(next(line for line in result.stdout.splitlines() if line.startswith("CHILD")).split()[1])
    assert not _alive(pid)
