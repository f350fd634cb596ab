"""How the CLI reports a job and hears "stop": :class:`ProgressPrinter` (a line per
report, for people), :class:`JsonLinesReporter` (one JSON object per event, for the
app's supervisor) and :class:`StopFlag` (SIGTERM / Ctrl-C as a job's ``should_stop``).
``mlx-lora train`` and ``demo`` (:mod:`mlx_lora.cli.train`) and the multi-machine
launcher (:mod:`mlx_lora.cli.launch`) share them, so neither imports the other for them.
"""

from __future__ import annotations

import signal
import sys
from typing import TextIO

from mlx_lora.events import Event, Progress
from mlx_lora import run_events as ev


class ProgressPrinter:
    """One line per report, evaluation and checkpoint; the run's notes when it starts."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        line = None
        if isinstance(event, Progress):
            line = f"{event.message}…"
        elif isinstance(event, ev.RunStarted):
            share = 100 * event.trainable_parameters / max(event.total_parameters, 1)
            line = (f"{'resuming' if event.resumed else 'training'} {event.model} ({event.fine_tune_type}) → "
                    f"{event.run_dir}\n  {event.trainable_parameters:,} trainable of {event.total_parameters:,} "
                    f"parameters ({share:.3f}%); {event.train_examples} train / {event.valid_examples} valid "
                    f"examples, {event.train_tokens:,} tokens; {event.total_steps} steps "
                    f"({event.steps_per_epoch:g} per epoch); padding {100 * event.padding_fraction:.1f}%; "
                    f"{event.device} {event.compute_dtype}")
            line += "".join(f"\n  note: {note}" for note in event.notes)
        elif isinstance(event, ev.StepReport):
            line = (f"step {event.step:>5}/{event.total_steps}  loss {event.loss:.4f}  lr {event.learning_rate:.2e}  "
                    f"{event.tokens_per_second:,.0f} tok/s  peak {event.peak_memory_gb:.2f} GB  "
                    f"eta {_duration(event.eta_s)}")
        elif isinstance(event, ev.RewardReport):  # grpo
            parts = "  ".join(f"{name} {value:.3f}" for name, value in event.rewards.items())
            line = (f"step {event.step:>5}  reward {event.mean_reward:.3f} ({parts})"
                    + (f"  kl {event.kl:.4f}" if event.kl is not None else "")
                    + f"  answer {event.completion_tokens:.1f} tok  sampling {event.generation_s:.1f}s")
            if event.samples:
                line += f"\n  e.g. {event.samples[0][:80]!r} → {event.sample_rewards[0]:.2f}"
        elif isinstance(event, ev.EvalReport):
            line = f"step {event.step:>5}  val loss {event.val_loss:.4f}"
            if event.reward_margin is not None:  # dpo, orpo
                line += f"  reward margin {event.reward_margin:.4f}  accuracy {event.reward_accuracy:.0%}"
            if event.val_reward is not None:  # grpo
                line += f"  val reward {event.val_reward:.3f}"
            line += "  (best)" if event.best else ""
        elif isinstance(event, (ev.AdapterMerged, ev.AdapterRanks)):
            line = f"step {event.step:>5}  {event.message}"
        elif isinstance(event, ev.CheckpointSaved):
            line = f"step {event.step:>5}  saved {event.path}" + ("  (best)" if event.best else "")
        elif isinstance(event, ev.RunFinished):
            line = f"finished at step {event.step} ({event.reason}) in {_duration(event.elapsed_s)}: {event.run_dir}"
            if event.best_val_loss is not None:
                line += f"\n  best val loss {event.best_val_loss:.4f} at step {event.best_step} (best/)"
        elif isinstance(event, (ev.RunStopped, ev.RunFailed)):
            line = event.reason if isinstance(event, ev.RunStopped) else f"failed: {event.reason}"
        if line:
            print(line, file=self.stream, flush=True)


class JsonLinesReporter:
    """One JSON object per event and line (``Event.to_json``), flushed at once: ``--json-events``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class StopFlag:
    """SIGTERM/SIGINT → should_stop; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def request(self) -> None:
        self.requested = True

    def install(self, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}

    def uninstall(self) -> None:
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        # the Ctrl-C hint only for a Ctrl-C: the app stops its trainer with SIGTERM, and its log
        # should not tell a GUI user to press keys in a terminal they do not have
        hint = " (Ctrl-C again to interrupt now)" if signum == signal.SIGINT else ""
        print(f"stopping after this step{hint}…", file=sys.stderr, flush=True)
