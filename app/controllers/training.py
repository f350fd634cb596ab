"""The Train page's controller: runs training through :class:`TrainingSupervisor`
and keeps the run's history (losses, learning rate, speed) so a page shown later
can draw the whole run. The run's settings are the engine's config (a YAML file
that ``mlx-lora train --config`` reads), never defaults of the app's own."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal

from app.controllers.app_state import AppState
from app.training_supervisor import TrainingSupervisor


@dataclass
class RunHistory:
    """What the charts draw; lists grow by one per report."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    total_steps: int = 0
    last_report: dict = field(default_factory=dict)


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with start-up bias correction (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for k, value in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight ** k))
    return out


class TrainingController(QObject):
    run_started = Signal(dict)
    step_reported = Signal(dict)
    eval_reported = Signal(dict)
    checkpoint_saved = Signal(str)
    run_ended = Signal(str, str)  # outcome ("finished", "stopped", "failed", "crashed"), message
    crashed = Signal(str, object)  # reason, last checkpoint (resume is offered when there is one)
    log_line = Signal(str)
    running_changed = Signal(bool)

    def __init__(self, state: AppState, supervisor: TrainingSupervisor | None = None) -> None:
        super().__init__()
        self.state = state
        self.supervisor = supervisor or TrainingSupervisor(parent=self)
        self.history = RunHistory()
        self.config_path: str = ""
        s = self.supervisor
        s.run_started.connect(self._on_run_started)
        s.step_reported.connect(self._on_step_reported)
        s.eval_reported.connect(self._on_eval_reported)
        s.checkpoint_saved.connect(self._on_checkpoint_saved)
        s.run_finished.connect(self._on_run_finished)
        s.run_stopped.connect(self._on_run_stopped)
        s.run_failed.connect(self._on_run_failed)
        s.crashed.connect(self._on_crashed)
        s.log_line.connect(self.log_line)
        s.running_changed.connect(self.running_changed)

    # -- actions -------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.supervisor.is_running()

    @property
    def run_dir(self) -> str | None:
        return self.supervisor.run_dir

    def start(self, config_path: str) -> None:
        self.config_path = config_path
        self.history = RunHistory()
        self.log_line.emit(f"$ {self.command_line(config_path)}")
        self.supervisor.start(config_path)

    def resume(self, run_dir: str | None = None) -> None:
        run_dir = run_dir or self.supervisor.run_dir
        if not run_dir:
            return
        self.log_line.emit(f"$ mlx-lora train --resume {shlex.quote(run_dir)}")
        self.supervisor.resume(run_dir)

    def stop(self) -> None:
        self.supervisor.stop()

    @staticmethod
    def command_line(config_path: str) -> str:
        """The terminal command that runs the same training (for "Copy command")."""
        return f"mlx-lora train --config {shlex.quote(str(config_path))}"

    # -- supervisor events ------------------------------------------------------------
    def _on_run_started(self, event: dict) -> None:
        self.history.total_steps = int(event.get("total_steps") or event.get("iters") or 0)
        self.run_started.emit(event)

    def _on_step_reported(self, event: dict) -> None:
        h = self.history
        step = int(event.get("step", len(h.steps) + 1))
        h.steps.append(step)
        h.losses.append(float(event.get("loss", float("nan"))))
        h.learning_rates.append(float(event.get("learning_rate", float("nan"))))
        h.total_steps = int(event.get("total_steps") or h.total_steps)
        h.last_report = event
        self.step_reported.emit(event)

    def _on_eval_reported(self, event: dict) -> None:
        if "val_loss" in event:
            self.history.val_steps.append(int(event.get("step", 0)))
            self.history.val_losses.append(float(event["val_loss"]))
        self.eval_reported.emit(event)

    def _on_checkpoint_saved(self, path: str) -> None:
        step = self.history.steps[-1] if self.history.steps else 0
        self.history.checkpoints.append((step, path))
        self.checkpoint_saved.emit(path)

    def _on_run_finished(self, event: dict) -> None:
        self.run_ended.emit("finished", f"Training finished. Adapter saved to {event.get('path', 'the run folder')}.")

    def _on_run_stopped(self, event: dict) -> None:
        where = event.get("path") or self.supervisor.last_checkpoint
        text = "Training stopped." + (f" Checkpoint: {where}." if where else "")
        if event.get("forced"):
            text = "Training was ended by force. " + (f"Last checkpoint: {where}." if where else "No checkpoint.")
        self.run_ended.emit("stopped", text)

    def _on_run_failed(self, reason: str) -> None:
        self.run_ended.emit("failed", reason)

    def _on_crashed(self, reason: str, checkpoint) -> None:
        self.run_ended.emit("crashed", reason)
        self.crashed.emit(reason, checkpoint)
