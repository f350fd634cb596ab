"""Checks shared by the reliability tests: is a run folder whole? (No tests here.)"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from mlx_lora.config import TrainConfig
from mlx_lora.run_folder import ADAPTER_CONFIG, ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE, RunFolder

CHECKPOINT_FILES = {ADAPTER_FILE, ADAPTER_CONFIG, OPTIMIZER_FILE, STATE_FILE}


def is_temporary(path: Path) -> bool:
    """What a writer leaves while it works (mlx_lora.atomic): dot-names."""
    return any(part.startswith(".") for part in path.parts)


def parses(path: Path) -> None:
    """Raise unless the file reads back as what its name says."""
    if path.suffix == ".safetensors":
        tensors = mx.load(str(path))
        mx.eval(list(tensors.values()))
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.name == "config.yaml":
        TrainConfig.from_yaml(path)
    elif path.name == "latest":
        assert path.read_text().startswith("checkpoints/step-"), path.read_text()
    elif path.name == "metrics.jsonl":
        lines = path.read_text().split("\n")
        for line in lines[:-1]:  # a kill may tear the last line only
            json.loads(line)


def checkpoint_step(folder: Path) -> int:
    """Check a checkpoint folder is whole and return its step."""
    names = {p.name for p in folder.iterdir()}
    assert names == CHECKPOINT_FILES, (folder, names)
    for name in names:
        parses(folder / name)
    state = json.loads((folder / STATE_FILE).read_text())
    assert folder.name == f"step-{state['step']}"
    return state["step"]


def check_run_folder(path: Path) -> int | None:
    """Every visible file of the run parses, every step-N and best/ is whole, ``latest``
    names a whole checkpoint. Returns the step ``latest`` names (None without one)."""
    run = RunFolder(path)
    files = 0
    for file in sorted(run.path.rglob("*")):
        rel = file.relative_to(run.path)
        if file.is_file() and not is_temporary(rel):
            parses(file)
            files += 1
    for step in run.checkpoint_steps():
        assert checkpoint_step(run.checkpoints / f"step-{step}") == step
    if run.best.exists():
        assert {p.name for p in run.best.iterdir()} == {ADAPTER_FILE, ADAPTER_CONFIG, STATE_FILE}
    if not run.latest_path.exists():
        return None
    target = run.path / run.latest_path.read_text().strip()
    return checkpoint_step(target)


def snapshot(path: Path) -> dict[str, bytes]:
    """The bytes of every visible file of a folder, by relative path."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not is_temporary(p.relative_to(path))}
