"""Runs training in a child process and turns its JSON events into Qt signals.

Training never runs inside the GUI process: a Metal out-of-memory abort or a
crash in MLX then costs the run (which can be resumed from its last checkpoint),
not the app (ANCHORS.md, users' report 1). The child is

    python -m mlx_lora.cli.main train --config FILE --json-events
    python -m mlx_lora.cli.main train --resume RUN_DIR --json-events

and prints one JSON object per line on stdout (``{"event": "step_report", ...}``).
Each line is read back with :meth:`mlx_lora.events.Event.from_dict` into the
dataclass the engine raised (a :class:`~mlx_lora.run_events.StepReport`…), and
the signals carry those objects; a line that is not an event the engine knows is
a log line.

Why ``QProcess`` rather than ``subprocess`` plus a reader thread: its
``readyReadStandardOutput`` / ``finished`` signals arrive on the GUI thread's
event loop without any thread of ours, it buffers partial lines for us
(``canReadLine``), and ``finished`` fires as soon as the child is reaped, so a
crash is reported at once (the tests allow 5 s; it takes milliseconds). Parsing
one short line per training step on the GUI thread costs microseconds.

Stopping: :meth:`stop` sends SIGTERM, which the engine treats as "write a
checkpoint and exit"; if the child is still alive after ``stop_timeout_ms`` it
gets SIGKILL. On application quit the child is killed (no orphan is left).

Several machines: with ``run.hostfile`` set (an advanced setting) the same child
command launches the ranks itself through ``mlx.launch`` (mlx_lora/cli/launch.py)
and passes rank 0's events on, so nothing here changes: SIGTERM reaches every
rank as a "stop" line, and SIGKILL ends them too (the launcher's lifeline pipe).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from PySide6.QtCore import QCoreApplication, QObject, QProcess, QProcessEnvironment, QTimer, Signal

from mlx_lora.events import Event, EventDecodeError
from mlx_lora.run_events import (
    TERMINAL_EVENTS, CheckpointSaved, EvalReport, RunFailed, RunFinished, RunStarted, RunStopped, StepReport,
)

log = logging.getLogger(__name__)

_STDERR_KEEP_CHARS = 64_000  # the tail of stderr kept for crash reports (enough for a traceback)


def train_command(config_path: str | Path | None = None, resume_dir: str | Path | None = None) -> list[str]:
    """The child's argv: ``train --config FILE`` or ``train --resume RUN_DIR``, with JSON events."""
    argv = [sys.executable, "-m", "mlx_lora.cli.main", "train"]
    if resume_dir is not None:
        argv += ["--resume", str(resume_dir)]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    return argv + ["--json-events"]


def describe_exit(exit_code: int, crashed_by_signal: bool, stderr_tail: str) -> str:
    """Why the child ended, in plain words."""
    if crashed_by_signal:
        if exit_code == signal.SIGKILL:
            return ("The training process was killed (SIGKILL). This usually means the computer "
                    "ran out of memory: try a smaller batch size, sequence length or model.")
        if exit_code == signal.SIGABRT:
            return ("The training process aborted. On a Mac this is often the GPU running out of "
                    "memory: try a smaller batch size, sequence length or model.")
        if exit_code == signal.SIGSEGV:
            return "The training process crashed (segmentation fault)."
        try:
            name = signal.Signals(exit_code).name
        except ValueError:
            name = f"signal {exit_code}"
        return f"The training process was ended by {name}."
    if exit_code == 0:
        return "The training process ended without reporting that it finished."
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    last = lines[-1] if lines else "no error message"
    return f"The training process failed (exit code {exit_code}): {last}"


class TrainingSupervisor(QObject):
    """Starts, watches and stops one training child process at a time."""

    event_received = Signal(object)  # every event, an mlx_lora.events.Event
    run_started = Signal(object)  # RunStarted
    step_reported = Signal(object)  # StepReport
    eval_reported = Signal(object)  # EvalReport
    checkpoint_saved = Signal(str)  # path
    run_finished = Signal(object)  # RunFinished
    run_stopped = Signal(object)  # RunStopped; forced=True when the stop had to be forced
    run_failed = Signal(str)  # the engine reported a failure it understood (bad config…)
    crashed = Signal(str, object)  # plain-words reason, last checkpoint path or None
    log_line = Signal(str)  # stderr and any non-JSON stdout line
    running_changed = Signal(bool)

    def __init__(
        self,
        command_for: Callable[..., Sequence[str]] = train_command,
        stop_timeout_ms: int = 30_000,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._command_for = command_for
        self.stop_timeout_ms = stop_timeout_ms
        self._process: QProcess | None = None
        self._stderr = ""
        self._terminal_event: Event | None = None
        self._last_step = 0  # of the last event that had a step, for a forced stop's RunStopped
        self._stop_requested = False
        self._forced = False
        self.last_checkpoint: str | None = None
        self.run_dir: str | None = None
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._on_stop_timeout)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.kill)

    # -- public -------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    @property
    def pid(self) -> int | None:
        if self._process is None:
            return None
        pid = self._process.processId()
        return pid or None

    def start(self, config_path: str | Path) -> None:
        self._launch(list(self._command_for(config_path=config_path)))

    def resume(self, run_dir: str | Path) -> None:
        self._launch(list(self._command_for(resume_dir=run_dir)), run_dir=str(run_dir))

    def stop(self) -> None:
        """Ask the run to stop gracefully (SIGTERM → checkpoint); SIGKILL after the timeout."""
        if not self.is_running():
            return
        self._stop_requested = True
        self.log_line.emit("Stopping: asking the trainer to save a checkpoint…")
        self._process.terminate()  # SIGTERM on Unix
        self._kill_timer.start(self.stop_timeout_ms)

    def kill(self) -> None:
        """End the child now and wait for it (used at quit: no orphan survives the app)."""
        if not self.is_running():
            return
        self._stop_requested = True
        self._forced = True
        self._process.kill()
        self._process.waitForFinished(3000)

    # -- internals ----------------------------------------------------------------
    def _launch(self, argv: list[str], run_dir: str | None = None) -> None:
        if self.is_running():
            raise RuntimeError("a training run is already in progress")
        self._stderr = ""
        self._terminal_event = None
        self._last_step = 0
        self._stop_requested = False
        self._forced = False
        self.last_checkpoint = None
        self.run_dir = run_dir
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")  # one event per line, as it happens
        process.setProcessEnvironment(env)
        process.readyReadStandardOutput.connect(self._on_stdout_ready)
        process.readyReadStandardError.connect(self._on_stderr_ready)
        process.finished.connect(self._on_process_finished)
        process.errorOccurred.connect(self._on_process_error)
        self._process = process
        log.info("starting %s", " ".join(argv))
        process.start(argv[0], argv[1:])
        self.running_changed.emit(True)

    def _on_stdout_ready(self) -> None:
        process = self._process
        while process is not None and process.canReadLine():
            self._handle_line(bytes(process.readLine()).decode("utf-8", "replace"))

    def _on_stderr_ready(self) -> None:
        text = bytes(self._process.readAllStandardError()).decode("utf-8", "replace")
        self._stderr = (self._stderr + text)[-_STDERR_KEEP_CHARS:]
        for line in text.splitlines():
            if line.strip():
                self.log_line.emit(line)

    def _handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            data = None
        try:
            event = Event.from_dict(data) if isinstance(data, dict) and "event" in data else None
        except EventDecodeError as exc:  # e.g. a trainer of another version: its line is still shown
            log.warning("not an event this app knows: %s", exc)
            event = None
        if event is None:
            self.log_line.emit(line)
            return
        self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        self._last_step = getattr(event, "step", self._last_step)
        self.event_received.emit(event)
        if isinstance(event, RunStarted):
            self.run_dir = event.run_dir or self.run_dir
            self.run_started.emit(event)
        elif isinstance(event, StepReport):
            self.step_reported.emit(event)
        elif isinstance(event, EvalReport):
            self.eval_reported.emit(event)
        elif isinstance(event, CheckpointSaved):
            self.last_checkpoint = event.path or self.last_checkpoint
            self.checkpoint_saved.emit(self.last_checkpoint or "")
        elif isinstance(event, TERMINAL_EVENTS):
            self._terminal_event = event

    def _on_stop_timeout(self) -> None:
        if self.is_running():
            log.warning("trainer did not stop within %d ms; killing it", self.stop_timeout_ms)
            self.log_line.emit("The trainer did not stop in time; ending it by force.")
            self._forced = True
            self._process.kill()

    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            message = f"The training process could not start: {self._process.errorString()}"
            self._process = None
            self.running_changed.emit(False)
            self.crashed.emit(message, None)

    def _on_process_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._kill_timer.stop()
        process = self._process
        # Lines printed just before exit may still be buffered.
        rest = bytes(process.readAllStandardOutput()).decode("utf-8", "replace")
        for line in rest.splitlines():
            self._handle_line(line)
        self._on_stderr_ready()
        self._process = None
        process.deleteLater()
        self.running_changed.emit(False)

        by_signal = exit_status == QProcess.ExitStatus.CrashExit
        terminal = self._terminal_event
        if isinstance(terminal, RunFinished) and exit_code == 0 and not by_signal:
            self.run_finished.emit(terminal)
        elif isinstance(terminal, RunStopped) and not by_signal:
            self.run_stopped.emit(terminal)
        elif isinstance(terminal, RunFailed):
            self.run_failed.emit(terminal.reason or "training failed")
        elif self._stop_requested and (self._forced or by_signal):
            self.run_stopped.emit(RunStopped(
                self._last_step, self.run_dir or "", self.last_checkpoint,
                "the trainer did not stop in time and was ended by force; the last saved checkpoint is kept",
                forced=True))
        else:
            self.crashed.emit(describe_exit(exit_code, by_signal, self._stderr), self.last_checkpoint)
