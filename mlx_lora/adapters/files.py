"""An adapter on disk: which files make it, what its adapter_config.json says, and the
run it belongs to.

:func:`resolve_adapter` turns what a person names — a run folder (its final adapter,
else ``best/``, else the checkpoint its ``latest`` pointer names), its ``best/``, one
of its ``checkpoints/step-N/``, a bare mlx-lm adapter folder, or an
``…adapters.safetensors`` file, or a PEFT adapter folder (converted by
:mod:`mlx_lora.adapters.peft_import`) — into an :class:`AdapterFiles`: the weights, the
mlx-lm ``adapter_config.json`` (next to the weights, or at the top of the run: the
trainer keeps one there), and the run folder (:class:`mlx_lora.run_folder.RunFolder`)
whose config names the base the adapter was trained on. Nothing here imports MLX
until the weights are read (:func:`load_adapter_weights`: safetensors only, never
pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.methods import METHODS, saved_types
from mlx_lora.run_folder import ADAPTER_CONFIG, ADAPTER_FILE, RunFolder

FINE_TUNE_TYPES = saved_types()  # what a saved adapter can be: lora, dora, full (AdaLoRA saves plain LoRA)


@dataclass(frozen=True)
class AdapterFiles:
    """Where an adapter's files are. ``run_dir`` is the run folder it belongs to (the
    folder with config.yaml / metrics.jsonl), or None for a bare adapter folder."""

    weights: Path
    config_path: Path
    config: dict
    run_dir: Path | None = None

    @property
    def run(self) -> RunFolder | None:
        return RunFolder(self.run_dir) if self.run_dir is not None else None

    @property
    def fine_tune_type(self) -> str:
        return str(self.config.get("fine_tune_type", "lora"))

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_layers", 16))

    @property
    def lora_parameters(self) -> dict:
        return dict(self.config.get("lora_parameters") or {})

    @property
    def label(self) -> str:
        """A short name for lists and events: ``run-name``, ``run-name/best``, ``run-name/step-200``."""
        folder = self.weights.parent
        if self.run_dir is None or folder == self.run_dir:
            return folder.name
        return f"{self.run_dir.name}/{folder.name}"

    def run_config(self) -> TrainConfig | None:
        """The config the adapter's run trained with (None for an adapter of no run, or a run
        without config.yaml); a UserError naming the file when it cannot be read."""
        run = self.run
        if run is None or not run.config_path.is_file():
            return None
        return run.config()

    def base_model(self) -> str | None:
        """The base model the run trained on, as the run's config names it (else as
        adapter_config.json does)."""
        config = self.run_config()
        if config is not None and config.model.model:
            return config.model.model
        model = self.config.get("model")
        return str(model) if model else None


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise UserError(f"{path}: not an adapter config (expected a JSON object)")
    kind = config.get("fine_tune_type", "lora")
    if kind not in FINE_TUNE_TYPES:
        raise UserError(f"{path}: unknown fine_tune_type {kind!r} (expected {', '.join(FINE_TUNE_TYPES[:-1])} or "
                        f"{FINE_TUNE_TYPES[-1]})")
    if METHODS[kind].has_adapter:
        params = config.get("lora_parameters")
        if not isinstance(params, dict) or "rank" not in params or "scale" not in params:
            raise UserError(f"{path}: lora_parameters with rank and scale are missing")
    return config


def _weights_in(folder: Path) -> Path:
    """The weights a folder names: its own, or (a run folder still training) best/'s, or its
    latest checkpoint's."""
    if (folder / ADAPTER_FILE).is_file():
        return folder / ADAPTER_FILE
    run = RunFolder(folder)
    for choice in ("best", "latest"):
        try:
            return run.adapter(choice) / ADAPTER_FILE
        except UserError:
            continue
    raise UserError(f"{folder}: no {ADAPTER_FILE} here, in best/ or in checkpoints/step-N/ — "
                    "name a finished run, its best/ folder or one of its checkpoints")


def resolve_adapter(path: str | Path) -> AdapterFiles:
    """The adapter a person named (module docstring)."""
    path = Path(path).expanduser()
    if path.is_file():
        if not path.name.endswith(".safetensors"):
            raise UserError(f"{path}: not an adapter (expected a folder or an .safetensors file)")
        weights = path.resolve()
    elif path.is_dir():
        from mlx_lora.adapters.peft_import import imported_peft, is_peft_folder

        if is_peft_folder(path):  # trained elsewhere (PEFT, Unsloth): converted once, then as ours
            path = imported_peft(path)
        weights = _weights_in(path.resolve())
    else:
        raise UserError(f"{path}: no such adapter folder or file")
    folder = weights.parent
    run = RunFolder.find(folder)
    candidates = [folder] + ([run.path] if run is not None and run.path != folder else [])
    config_path = next((c / ADAPTER_CONFIG for c in candidates if (c / ADAPTER_CONFIG).is_file()), None)
    if config_path is None:
        raise UserError(f"{folder}: no {ADAPTER_CONFIG} next to the weights or in the run folder")
    return AdapterFiles(weights=weights, config_path=config_path, config=_read_config(config_path),
                        run_dir=run.path if run is not None else None)


def load_adapter_weights(files: AdapterFiles) -> dict:
    """The adapter tensors (safetensors only — never pickle)."""
    import mlx.core as mx

    if files.weights.suffix != ".safetensors":
        raise UserError(f"{files.weights}: adapters are only loaded from .safetensors files")
    try:
        return dict(mx.load(str(files.weights)))
    except Exception as exc:  # mlx raises RuntimeError/ValueError for a damaged file
        raise UserError(f"{files.weights}: cannot read the adapter weights: {exc}") from exc
