"""Resolve what the user named as a model into a local MLX-loadable folder, and load it.

A model can be named as:
- ``demo``: the embedded SmolLM2-135M-Instruct (see :mod:`mlx_lora.models.demo`);
- a local folder in Hugging Face or MLX layout (config.json + *.safetensors);
- a ``.gguf`` file, imported once into the app's models folder;
- a Hub repo id (``org/name``), downloaded into the Hugging Face cache.

Only safetensors weights are ever loaded (never pickle), and
``trust_remote_code`` is never set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlx_lora import paths
from mlx_lora.errors import UserError
from mlx_lora.events import NullReporter, Reporter

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def check_model_folder(folder: Path) -> Path:
    """Raise a clear error unless ``folder`` holds config.json and safetensors weights."""
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        if any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir()):
            raise UserError(
                f"{folder}: the weights are in pickle format (.bin/.pt), which can run code when "
                "loaded; only safetensors models are loaded. Look for a safetensors or MLX version of this model."
            )
        raise UserError(f"{folder}: no *.safetensors weights found")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{folder / 'config.json'}: cannot be read: {exc}") from exc
    if "model_file" in config or config.get("auto_map"):
        # mlx-lm would need trust_remote_code for model_file; we never set it.
        if "model_file" in config:
            raise UserError(f"{folder}: this model needs custom code ({config['model_file']}), which is never run")
    return folder


def imported_gguf_path(gguf: Path) -> Path:
    """Where a GGUF file is imported: keyed by its name and a hash of its absolute path."""
    digest = hashlib.sha1(str(gguf.resolve()).encode()).hexdigest()[:8]
    return paths.models_dir() / f"{gguf.stem}-{digest}"


def resolve_model(spec: str | Path, reporter: Reporter = NullReporter(), download: bool = True) -> Path:
    """The local folder for a model name (see module docstring)."""
    text = str(spec)
    if text == "demo":
        from mlx_lora.models.demo import demo_model_path

        return demo_model_path(reporter)
    path = Path(text).expanduser()
    if path.is_dir():
        return check_model_folder(path)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"{path}: no such GGUF file")
        from mlx_lora.models.gguf import import_gguf

        target = imported_gguf_path(path)
        if not (target / "config.json").exists():
            import_gguf(path, target, reporter=reporter)
        return target
    if path.exists():
        raise UserError(f"{path}: not a model folder or a .gguf file")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from mlx_lora.models import hub

        if download:
            return check_model_folder(hub.download_model(text, reporter=reporter))
        return check_model_folder(hub.cached_model_path(text))
    raise UserError(f"{text}: no such folder, GGUF file or Hub repository (expected org/name)")


def load_model(spec: str | Path, adapter_path: str | Path | None = None, reporter: Reporter = NullReporter()):
    """(model, tokenizer, config) through mlx-lm, never with remote code."""
    from mlx_lm.utils import load

    folder = resolve_model(spec, reporter)
    model, tokenizer, config = load(
        str(folder),
        adapter_path=str(adapter_path) if adapter_path else None,
        return_config=True,
        trust_remote_code=False,
    )
    return model, tokenizer, config
