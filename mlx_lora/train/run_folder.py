"""The run folder: what a run writes, and how it is read back to resume.

::

    RUN/
      config.yaml               the exact config the run used
      metrics.jsonl             one JSON event per line (every event has a step)
      adapters.safetensors      the latest adapter; with adapter_config.json, what
      adapter_config.json       mlx_lm.load(model, adapter_path=RUN) reads
      checkpoints/step-N/       adapters.safetensors, adapter_config.json,
                                optimizer.safetensors, trainer_state.json
      best/                     the adapter with the lowest validation loss
      latest                    text: "checkpoints/step-N", written only after that
                                checkpoint is complete

Every file is written to a temporary name and renamed (:mod:`mlx_lora.atomic`);
a checkpoint folder is built under a temporary name and renamed whole, so a
kill at any moment leaves the previous checkpoint and pointer intact.
``metrics.jsonl`` is the one exception: it is appended a line at a time
(rewriting the whole file per event would cost O(events²)); a kill can leave a
torn last line, which the reader skips and a resume cuts away.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_lora import paths
from mlx_lora.atomic import atomic_dir, atomic_path, write_json, write_text
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import Event

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class NonFiniteError(Exception):
    """A tensor about to be saved is NaN or infinite."""


def _slug(text: str) -> str:
    text = Path(text.rstrip("/")).name or text
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:40] or "run"


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = Path(config.data.data)
    data_name = data.stem if data.suffix == ".jsonl" else data.name
    base = paths.runs_dir() / f"{stamp}-{_slug(config.model.model)}-{_slug(data_name)}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def _check_finite(tensors: dict[str, mx.array], what: str) -> None:
    bad = [name for name, value in tensors.items()
           if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item()]
    if bad:
        raise NonFiniteError(f"{what}: {len(bad)} tensor(s) are NaN or infinite (first: {bad[0]})")


def save_safetensors(path: Path, tensors: dict[str, mx.array]) -> None:
    with atomic_path(path) as tmp:
        mx.save_safetensors(str(tmp), tensors, metadata={"format": "mlx"})


@dataclasses.dataclass
class Checkpoint:
    path: Path
    weights: dict[str, mx.array]
    optimizer: dict[str, mx.array]
    state: dict[str, Any]


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.best = self.path / "best"
        self.latest_path = self.path / "latest"

    # -- creating and logging ------------------------------------------------
    def create(self, config: TrainConfig) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(f"{self.path}: the folder is not empty; continue that run with --resume {self.path} "
                            "or choose another --run-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config)

    def write_config(self, config: TrainConfig) -> None:
        config.save(self.config_path)

    def log(self, event: Event) -> None:
        if not hasattr(event, "step"):
            return
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(event.to_json() + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        lines = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
        return lines

    def cut_metrics(self, step: int) -> None:
        """Keep the events up to ``step`` (a resume replays nothing after its checkpoint)."""
        kept = [line for line in self.read_metrics() if line.get("step", 0) <= step]
        write_text(self.metrics_path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in kept))

    # -- checkpoints ---------------------------------------------------------
    def save_checkpoint(self, step: int, weights: dict[str, mx.array], adapter_config: dict[str, Any],
                        optimizer_state: dict[str, mx.array], trainer_state: dict[str, Any],
                        best: bool, keep: int) -> Path:
        """Write checkpoints/step-N whole, then the run's adapter, then (if best) best/, then the
        ``latest`` pointer; refuses NaN/inf tensors."""
        _check_finite(weights, f"adapter at step {step}")
        _check_finite(optimizer_state, f"optimizer state at step {step}")
        target = self.checkpoints / f"step-{step}"
        with atomic_dir(target) as tmp:
            mx.save_safetensors(str(tmp / ADAPTER_FILE), weights, metadata={"format": "mlx"})
            mx.save_safetensors(str(tmp / OPTIMIZER_FILE), optimizer_state)
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        save_safetensors(self.path / ADAPTER_FILE, weights)
        write_json(self.path / ADAPTER_CONFIG, adapter_config)
        if best:
            with atomic_dir(self.best) as tmp:
                mx.save_safetensors(str(tmp / ADAPTER_FILE), weights, metadata={"format": "mlx"})
                (tmp / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
                (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        write_text(self.latest_path, f"checkpoints/step-{step}\n")
        self.prune(keep)
        return target

    def checkpoint_steps(self) -> list[int]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoints.iterdir() if (m := _STEP_DIR.match(p.name)))

    def latest_checkpoint(self) -> Path | None:
        if self.latest_path.is_file():
            target = self.path / self.latest_path.read_text().strip()
            if (target / STATE_FILE).is_file():
                return target
        # No pointer (or it names a pruned folder): step-N folders only appear complete.
        steps = [s for s in self.checkpoint_steps() if (self.checkpoints / f"step-{s}" / STATE_FILE).is_file()]
        return self.checkpoints / f"step-{steps[-1]}" if steps else None

    def prune(self, keep: int) -> None:
        if keep <= 0:
            return
        latest = self.latest_checkpoint()
        for step in self.checkpoint_steps()[:-keep]:
            folder = self.checkpoints / f"step-{step}"
            if folder != latest:
                shutil.rmtree(folder, ignore_errors=True)

    def load_checkpoint(self, path: Path | None = None) -> Checkpoint:
        path = path or self.latest_checkpoint()
        if path is None:
            raise UserError(f"{self.path}: no checkpoint to resume from (the run stopped before its first "
                            "checkpoint); start it again")
        return Checkpoint(
            path=path,
            weights=mx.load(str(path / ADAPTER_FILE)),
            optimizer=mx.load(str(path / OPTIMIZER_FILE)),
            state=json.loads((path / STATE_FILE).read_text()),
        )

    def adapter_dir(self, which: str = "final") -> Path:
        """Where an adapter to evaluate or chat with lives: final (the run root), best, latest or step-N."""
        if which == "final":
            folder = self.path
        elif which == "best":
            folder = self.best
        elif which == "latest":
            folder = self.latest_checkpoint() or self.path / "checkpoints" / "(none)"
        else:
            folder = self.checkpoints / which
        if not (folder / ADAPTER_FILE).is_file():
            raise UserError(f"{folder}: no adapter there (choose final, best, latest or step-N)")
        return folder
