"""Named starting points for a training run: "Quick test", "Balanced", "Quality".

Each preset is a function returning config overrides by their flat setting names
(:meth:`mlx_lora.config.TrainConfig.replace` takes them as they are), so the CLI,
the YAML file and the app's form stay views of the one config. A preset changes
only how long and how hard the run trains — never the model or the dataset.

The numbers come from runs of the demo model (SmolLM2-135M) on the sample sets
(``bench/defaults_style.py``; bench/RESULTS.md, "Defaults that show something"):
"Quick test" is ``mlx-lora demo``'s recipe — 30 steps of batch 4 on the last 16 layers,
lr 1e-3 with a 3-step warm-up and a cosine decay — which turns the answers into the
pirate voice without degenerating. Its earlier shape (batch 2, the last 4 layers, 1e-3
*constant*) gave "matey, matey, matey…": with no decay the last steps keep jumping, and
batch 2 makes each jump noisier. "Quality" is a few epochs' worth with validation often
enough to keep the best.
"""

from __future__ import annotations

from typing import Any, Callable

from mlx_lora.errors import UserError


def quick_test() -> dict[str, Any]:
    """30 steps that visibly change the style on the sample sets (``mlx-lora demo``'s recipe):
    checks that data, model and export work, and shows the adapter doing something."""
    return {
        "iters": 30, "epochs": 0, "batch_size": 4, "max_seq_length": 512, "num_layers": 16, "rank": 8,
        "alpha": 16.0, "learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_steps": 3,
        "steps_per_report": 5, "steps_per_eval": 15, "val_batches": 5, "save_every": 30,
    }


def balanced() -> dict[str, Any]:
    """The everyday choice: one epoch-sized run of LoRA on the last 16 layers."""
    return {
        "iters": 300, "epochs": 0, "batch_size": 4, "max_seq_length": 2048, "num_layers": 16, "rank": 8,
        "alpha": 16.0, "learning_rate": 2e-4, "lr_schedule": "cosine", "warmup_steps": 20,
        "steps_per_report": 10, "steps_per_eval": 50, "val_batches": 25, "save_every": 50,
    }


def quality() -> dict[str, Any]:
    """Longer, on every layer with a higher rank, early stopping on the validation loss."""
    return {
        "iters": 1000, "epochs": 0, "batch_size": 4, "max_seq_length": 2048, "num_layers": -1, "rank": 16,
        "alpha": 32.0, "learning_rate": 1e-4, "lr_schedule": "cosine", "warmup_steps": 50,
        "steps_per_report": 10, "steps_per_eval": 100, "val_batches": -1, "save_every": 100,
        "early_stopping_patience": 3,
    }


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "Quick test": quick_test,
    "Balanced": balanced,
    "Quality": quality,
}


def preset(name: str) -> dict[str, Any]:
    """The overrides of the preset called ``name`` (one of :data:`PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None
