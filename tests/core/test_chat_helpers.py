"""Adapters and run folders made by hand, as mlx-lm's trainer writes them, so chat and
export are tested without waiting for a training run. (No tests in this module: it is
imported by tests/core/test_chat*.py, test_export*.py and tests/cli.)

A run folder here holds what the trainer writes: ``adapters.safetensors`` (the
trainable parameters) + ``adapter_config.json`` (fine_tune_type, num_layers,
lora_parameters) at the top, ``best/`` and ``checkpoints/step-N/`` with other weights,
``config.yaml`` naming the base and ``metrics.jsonl`` with step and eval reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mlx_lora  # noqa: F401  (BLAS preload before mlx.core)

ATTENTION = ["self_attn.q_proj", "self_attn.v_proj"]
ALL_LINEAR = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def make_adapter(base: Path, folder: Path, *, num_layers: int = 2, rank: int = 8, scale: float = 20.0,
                 keys: list[str] | None = None, fine_tune_type: str = "lora", seed: int = 1,
                 b_std: float = 0.02, quantize_bits: int = 0) -> Path:
    """An adapter folder for ``base`` with random non-zero lora_b (so it changes the answers)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    keys = list(keys or ATTENTION)
    model, _ = load_model(Path(base))
    if quantize_bits:
        nn.quantize(model, 32, quantize_bits, class_predicate=lambda _, m: hasattr(m, "to_quantized")
                    and m.weight.shape[-1] % 32 == 0)
    mx.random.seed(seed)
    model.freeze()
    lora_parameters = {"rank": rank, "scale": scale, "dropout": 0.0, "keys": keys}
    if fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
        weights = dict(tree_flatten(model.trainable_parameters()))
        weights = {k: v + b_std * mx.random.normal(v.shape).astype(v.dtype) for k, v in weights.items()
                   if not k.endswith(("scales", "biases"))}
    else:
        linear_to_lora_layers(model, num_layers, lora_parameters, use_dora=fine_tune_type == "dora")
        weights = dict(tree_flatten(model.trainable_parameters()))
        weights = {k: (b_std * mx.random.normal(v.shape) if k.endswith("lora_b") else v) for k, v in weights.items()}
        if fine_tune_type == "dora":
            weights = {k: (v * (1 + 0.05 * mx.random.normal(v.shape)) if k.endswith(".m") else v)
                       for k, v in weights.items()}
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    config = {"model": str(base), "fine_tune_type": fine_tune_type, "num_layers": num_layers,
              "lora_parameters": lora_parameters}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_run_files(run: Path, base: str, *, rank: int = 8, scale: float = 20.0, num_layers: int = 2,
                    quantize_bits: int = 0, data: str = "resources/datasets/pirate") -> None:
    """config.yaml and metrics.jsonl as the trainer writes them."""
    import yaml

    config = {
        "model": {"model": base, "quantize_bits": quantize_bits, "quantize_group_size": 32,
                  "compute_dtype": "auto", "grad_checkpoint": False},
        "data": {"data": data, "batch_size": 4, "max_seq_length": 512, "mask_prompt": True},
        "adapter": {"fine_tune_type": "lora", "num_layers": num_layers, "targets": ["q", "v"], "rank": rank,
                    "alpha": scale * rank, "rslora": False, "dropout": 0.0},
        "optimizer": {"optimizer": "adam", "learning_rate": 2e-4},
        "schedule": {"iters": 30, "epochs": 0, "lr_schedule": "cosine"},
        "run": {"seed": 0},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    events = [
        {"event": "run_started", "step": 0, "run_dir": str(run), "model": base, "fine_tune_type": "lora",
         "total_steps": 30, "train_examples": 120, "valid_examples": 12, "test_examples": 0,
         "train_tokens": 9000, "trained_tokens_per_epoch": 4000},
        {"event": "eval_report", "step": 0, "val_loss": 3.1, "best": False, "best_val_loss": None, "best_step": None},
        {"event": "step_report", "step": 10, "total_steps": 30, "loss": 2.9, "learning_rate": 2e-4},
        {"event": "step_report", "step": 20, "total_steps": 30, "loss": 2.2, "learning_rate": 1e-4},
        {"event": "eval_report", "step": 20, "val_loss": 2.4, "best": True, "best_val_loss": 2.4, "best_step": 20},
        {"event": "step_report", "step": 30, "total_steps": 30, "loss": 1.9, "learning_rate": 0.0},
        {"event": "eval_report", "step": 30, "val_loss": 2.5, "best": False, "best_val_loss": 2.4, "best_step": 20},
        {"event": "run_finished", "step": 30, "run_dir": str(run), "reason": "completed", "final_loss": 1.9,
         "best_val_loss": 2.4, "best_step": 20, "elapsed_s": 12.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def make_run(base: Path, run: Path, *, seeds: tuple[int, int, int] = (1, 2, 3), **adapter_options) -> Path:
    """A run folder: final adapter at the top, best/ and checkpoints/step-10/ with other weights."""
    make_adapter(base, run, seed=seeds[0], **adapter_options)
    make_adapter(base, run / "best", seed=seeds[1], **adapter_options)
    make_adapter(base, run / "checkpoints" / "step-10", seed=seeds[2], **adapter_options)
    for sub in (run / "best", run / "checkpoints" / "step-10"):
        (sub / "adapter_config.json").unlink()  # the trainer keeps one config, at the top
    write_run_files(run, str(base), rank=adapter_options.get("rank", 8), scale=adapter_options.get("scale", 20.0),
                    num_layers=adapter_options.get("num_layers", 2),
                    quantize_bits=adapter_options.get("quantize_bits", 0))
    return run


@pytest.fixture(scope="session")
def tiny_run(tiny_model, tmp_path_factory) -> Path:
    """A LoRA run (rank 8, q/v of both layers) on the tiny model."""
    return make_run(tiny_model, tmp_path_factory.mktemp("runs") / "tiny-run")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]
