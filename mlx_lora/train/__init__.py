"""Training: ``train(config, reporter, should_stop) -> RunResult`` and its events.

- :mod:`~mlx_lora.train.loop`: the run (data, model, run folder, loop, endings);
- :mod:`~mlx_lora.train.prepare`: load the base and let the method (:mod:`mlx_lora.methods`:
  LoRA / QLoRA / DoRA / AdaLoRA / full, and their step hooks) adapt it;
- :mod:`~mlx_lora.train.batches`: encoding, max_seq_length, length-bucketed batches;
- :mod:`~mlx_lora.train.optim`: Adam/AdamW, LoRA+, the learning-rate schedule;
- :mod:`~mlx_lora.train.evaluate`: the masked loss, validation, ``mlx-lora eval``;
- :mod:`~mlx_lora.run_events`: the typed events a run reports.
"""

from mlx_lora.run_events import (
    CheckpointSaved,
    EvalReport,
    RunFailed,
    RunFinished,
    RunStarted,
    RunStopped,
    StepReport,
)


def __getattr__(name: str):
    # The loop imports mlx-lm and transformers (2–7 s): load it when ``train`` is asked for,
    # so that light modules of this package (memory, events) import in milliseconds.
    if name in ("train", "RunResult"):
        from mlx_lora.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "train", "RunResult", "RunStarted", "StepReport", "EvalReport", "CheckpointSaved", "RunFinished",
    "RunStopped", "RunFailed",
]
