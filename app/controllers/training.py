"""The Train page's controller: runs training through :class:`TrainingSupervisor`
and keeps the run's history (losses, learning rate, speed) so a page shown later
can draw the whole run. The run's settings are the engine's config
(:class:`mlx_lora.config.TrainConfig`), saved with the engine's own ``save`` to a
YAML file that ``mlx-lora train --config`` reads — never defaults of the app's own.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.controllers.app_state import AppState
from app.jobs.training_supervisor import TrainingSupervisor
from mlx_lora.events import Event, Progress
from mlx_lora.run_events import (
    AdapterMerged, AdapterRanks, EvalReport, RewardReport, RunFinished, RunStarted, RunStopped, StepReport,
)


@dataclass
class RunHistory:
    """What the charts draw; lists grow by one per report."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    reward_steps: list[int] = field(default_factory=list)  # dpo/orpo validations
    reward_margins: list[float] = field(default_factory=list)
    reward_accuracies: list[float] = field(default_factory=list)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    total_steps: int = 0
    grpo: "RewardHistory" = field(default_factory=lambda: RewardHistory())


@dataclass
class RewardHistory:
    """GRPO's sampled rewards, one entry per RewardReport, and the latest samples."""

    steps: list[int] = field(default_factory=list)
    mean_rewards: list[float] = field(default_factory=list)
    rewards: dict[str, list[float]] = field(default_factory=dict)  # reward function -> its means
    kls: list[float] = field(default_factory=list)  # NaN where there was no KL (grpo_beta 0)
    latest: RewardReport | None = None

    def add(self, event: RewardReport) -> None:
        self.steps.append(event.step)
        self.mean_rewards.append(event.mean_reward)
        for name, value in event.rewards.items():
            self.rewards.setdefault(name, [float("nan")] * (len(self.steps) - 1)).append(value)
        self.kls.append(float("nan") if event.kl is None else event.kl)
        self.latest = event

    def cut(self, step: int) -> "RewardHistory":
        kept = RewardHistory()
        for k, s in enumerate(self.steps):
            if s <= step:
                kept.steps.append(s)
                kept.mean_rewards.append(self.mean_rewards[k])
                kept.kls.append(self.kls[k])
                for name, values in self.rewards.items():
                    kept.rewards.setdefault(name, []).append(values[k])
        return kept


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with start-up bias correction (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for k, value in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight ** k))
    return out


class TrainingController(QObject):
    run_started = Signal(object)  # RunStarted (history.total_steps is set, a resume's history cut back)
    step_reported = Signal(object)  # StepReport, after it is added to history
    eval_reported = Signal(object)  # EvalReport, after it is added to history
    reward_reported = Signal(object)  # RewardReport (grpo), after it is added to history.grpo
    checkpoint_saved = Signal(str)
    progressed = Signal(str)  # what the trainer is doing before its first step ("loading the model")
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
        self.last_outcome = ""  # of the last run: finished, stopped, failed or crashed
        s = self.supervisor
        self.run_ended.connect(lambda outcome, _message: setattr(self, "last_outcome", outcome))
        s.event_received.connect(self._on_event_received)
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

    @property
    def last_checkpoint(self) -> str | None:
        return self.supervisor.last_checkpoint

    def can_resume(self) -> bool:
        """A stopped or crashed run can continue when it wrote at least one checkpoint."""
        run_dir = self.supervisor.run_dir
        if self.is_running() or not run_dir or self.last_outcome == "finished":
            return False
        from mlx_lora.run_folder import RunFolder

        return bool(self.supervisor.last_checkpoint) or RunFolder(run_dir).has_checkpoint()

    def start(self, config) -> str:
        """Start a run of ``config`` (a TrainConfig, or the path of a YAML file the engine reads).
        A config is saved first, with the engine's ``save``, to the app's ``configs/`` folder
        (the run folder itself is created by the trainer, which refuses a non-empty one);
        the trainer then writes the same config into the run folder. Returns the YAML path."""
        if isinstance(config, (str, Path)):
            config_path = str(config)
        else:  # the trainer's folder is not ours: local paths go absolute (the engine's rule)
            config_path = str(self.save_config(config.with_absolute_paths(), self.pending_config_path()))
        self.config_path = config_path
        self.history = RunHistory()
        self.last_outcome = ""
        self.log_line.emit(f"$ mlx-lora train --config {shlex.quote(config_path)}")
        self.supervisor.start(config_path)
        return config_path

    def resume(self, run_dir: str | None = None) -> None:
        run_dir = run_dir or self.supervisor.run_dir
        if not run_dir:
            return
        self.history = self._history_up_to_checkpoint(str(run_dir))
        self.last_outcome = ""
        self.log_line.emit(f"$ mlx-lora train --resume {shlex.quote(str(run_dir))}")
        self.supervisor.resume(run_dir)

    def stop(self) -> None:
        self.supervisor.stop()

    # -- settings files ------------------------------------------------------------------
    @staticmethod
    def pending_config_path() -> Path:
        from mlx_lora import paths

        folder = paths.home() / "configs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"train-{time.strftime('%Y%m%d-%H%M%S')}.yaml"

    @staticmethod
    def save_config(config, path: str | Path) -> Path:
        config.save(path)
        return Path(path)

    @staticmethod
    def load_config(path: str | Path):
        """The TrainConfig in a YAML file (a run's config.yaml, or one saved from the form);
        raises UserError naming the bad setting."""
        from mlx_lora.config import TrainConfig

        return TrainConfig.from_yaml(path)

    @staticmethod
    def command_line(config) -> str:
        """The terminal command that runs exactly this training (for "Copy command"): the
        settings that differ from the defaults, as flags — ``mlx-lora train`` fills the rest
        with the same defaults, so no file is needed. A path is shown as ``--config PATH``."""
        if isinstance(config, (str, Path)):
            return f"mlx-lora train --config {shlex.quote(str(config))}"
        from mlx_lora.cli.config_flags import config_flags

        # a run to resume is the Resume button's business, never part of the copied command
        return shlex.join(["mlx-lora", "train", *config_flags(config.replace(resume=""), changed_only=True)])

    def _history_up_to_checkpoint(self, run_dir: str) -> RunHistory:
        """A resumed run's charts start with what the run did before (its metrics.jsonl, which
        the trainer cuts back to the checkpoint as it resumes)."""
        from mlx_lora.run_history import load_run_curves

        curves = load_run_curves(run_dir)
        grpo = RewardHistory()
        from mlx_lora.run_folder import RunFolder

        for record in RunFolder(run_dir).metrics():
            if record.get("event") == "reward_report":
                grpo.add(RewardReport.from_dict(record))
        return RunHistory(grpo=grpo, steps=list(curves["step"]), losses=list(curves["loss"]),
                          learning_rates=list(curves["learning_rate"]), val_steps=list(curves["val_step"]),
                          val_losses=list(curves["val_loss"]), reward_steps=list(curves["reward_step"]),
                          reward_margins=list(curves["reward_margin"]),
                          reward_accuracies=list(curves["reward_accuracy"]))

    # -- supervisor events ------------------------------------------------------------
    def _on_event_received(self, event: Event) -> None:
        if isinstance(event, Progress) and event.message and event.message != "done":
            self.progressed.emit(event.message)
        elif isinstance(event, RewardReport):
            self.history.grpo.add(event)
            self.reward_reported.emit(event)
        elif isinstance(event, (AdapterMerged, AdapterRanks)) and event.message:
            self.log_line.emit(f"step {event.step}: {event.message}")  # ReLoRA merges, AdaLoRA's ranks

    def _on_run_started(self, event: RunStarted) -> None:
        self.history.total_steps = event.total_steps
        if event.resumed:  # the trainer cut metrics.jsonl back to its checkpoint
            step = event.step
            h = self.history
            keep = [k for k, s in enumerate(h.steps) if s <= step]
            h.steps, h.losses, h.learning_rates = ([getattr(h, a)[k] for k in keep]
                                                   for a in ("steps", "losses", "learning_rates"))
            keep = [k for k, s in enumerate(h.val_steps) if s <= step]
            h.val_steps, h.val_losses = ([getattr(h, a)[k] for k in keep] for a in ("val_steps", "val_losses"))
            keep = [k for k, s in enumerate(h.reward_steps) if s <= step]
            h.reward_steps, h.reward_margins, h.reward_accuracies = (
                [getattr(h, a)[k] for k in keep] for a in ("reward_steps", "reward_margins", "reward_accuracies"))
            h.grpo = h.grpo.cut(step)
        for note in event.notes:
            self.log_line.emit(f"note: {note}")
        self.run_started.emit(event)

    def _on_step_reported(self, event: StepReport) -> None:
        h = self.history
        h.steps.append(event.step)
        h.losses.append(event.loss)
        h.learning_rates.append(event.learning_rate)
        h.total_steps = event.total_steps or h.total_steps
        self.step_reported.emit(event)

    def _on_eval_reported(self, event: EvalReport) -> None:
        self.history.val_steps.append(event.step)
        self.history.val_losses.append(event.val_loss)
        if event.reward_margin is not None:  # preference objectives
            self.history.reward_steps.append(event.step)
            self.history.reward_margins.append(event.reward_margin)
            self.history.reward_accuracies.append(event.reward_accuracy or 0.0)
        self.eval_reported.emit(event)

    def _on_checkpoint_saved(self, path: str) -> None:
        name = Path(path).name
        step = int(name[5:]) if name.startswith("step-") and name[5:].isdigit() else (
            self.history.steps[-1] if self.history.steps else 0)
        self.history.checkpoints.append((step, path))
        self.checkpoint_saved.emit(path)

    def _on_run_finished(self, event: RunFinished) -> None:
        where = event.run_dir or self.supervisor.run_dir or "the run folder"
        reason = event.reason
        early = f" ({reason})" if reason and reason != "completed" else ""
        best = event.best_val_loss
        best_text = f" Best validation loss {best:.3f} at step {event.best_step}." if best is not None else ""
        self.run_ended.emit("finished", f"Training finished{early}.{best_text} Adapter saved in {where}.")

    def _on_run_stopped(self, event: RunStopped) -> None:
        where = event.checkpoint or self.supervisor.last_checkpoint
        text = "Training stopped." + (f" Checkpoint: {where}." if where else "")
        if event.forced:
            text = "Training was ended by force. " + (f"Last checkpoint: {where}." if where else "No checkpoint.")
        self.run_ended.emit("stopped", text)

    def _on_run_failed(self, reason: str) -> None:
        self.run_ended.emit("failed", reason)

    def _on_crashed(self, reason: str, checkpoint) -> None:
        self.run_ended.emit("crashed", reason)
        self.crashed.emit(reason, checkpoint)
