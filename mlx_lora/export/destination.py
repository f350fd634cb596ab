"""Where an export may be written: :func:`check_destination`, the one rule that the CLI
(``mlx-lora export --out``), the engine's :func:`~mlx_lora.export.export_run` and the
app's Export page all apply, before any model loads.

An export replaces its destination whole (:func:`mlx_lora.atomic.atomic_dir`), so the
destination must be something whose loss costs nothing:

- a folder that does not exist yet, or an empty one;
- an earlier export of ours: it holds the ``verification.json`` that the exporter
  writes (a JSON object whose ``created_by`` is ``mlx-lora-studio …`` and which names
  its ``format``), and no run folder.

And never, whatever it holds, a folder that is, contains or lies inside the base
model's folder, the adapter's run folder (or any run folder), and never one that is
or contains the home folder or the app's runs and models folders. Everything else is
refused with ``what: why, what to do`` (a :class:`~mlx_lora.errors.UserError`, exit 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from mlx_lora.errors import UserError

MARKER = "verification.json"  # written last by every export (mlx_lora/export/exporter.py)
CREATED_BY = "mlx-lora-studio"
_ADVICE = "choose a new folder to export to (or an earlier export to replace)"


def is_earlier_export(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds the marker an export of ours writes."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and str(data.get("created_by", "")).startswith(CREATED_BY)
            and isinstance(data.get("format"), str))


def _protected(adapter, base_dirs: Iterable[str | os.PathLike]) -> list[tuple[Path, str, bool]]:
    """(folder, its name for the message, whether an export may lie inside it)."""
    from mlx_lora import paths
    from mlx_lora.adapters.files import AdapterFiles, resolve_adapter
    from mlx_lora.run_folder import RunFolder

    found: list[tuple[Path, str, bool]] = [
        (Path.home(), "your home folder", True),
        (paths.runs_dir(), "the app's runs folder", True),
        (paths.models_dir(), "the app's models folder", True),
    ]
    files = adapter if isinstance(adapter, AdapterFiles) else None
    if adapter is not None and files is None:
        run = RunFolder.find(adapter)
        if run is not None:
            found.append((run.path, "the adapter's run folder", False))
        try:
            files = resolve_adapter(adapter)
        except UserError:
            files = None  # the export itself names what is wrong with the adapter
    bases = [Path(b) for b in base_dirs]
    if files is not None:
        found.append((files.weights.parent, "the adapter's folder", False))
        if files.run_dir is not None:
            found.append((files.run_dir, "the adapter's run folder", False))
        try:
            spec = files.base_model()
        except UserError:
            spec = None
        if spec and spec != "demo" and Path(spec).expanduser().exists():
            bases.append(Path(spec).expanduser())  # a local folder or .gguf file
    found += [(base, "the base model", False) for base in bases]
    return [(Path(p).expanduser().resolve(), what, inside_ok) for p, what, inside_ok in found]


def check_destination(out_dir: str | os.PathLike, adapter=None,
                      base_dirs: Iterable[str | os.PathLike] = ()) -> Path:
    """The resolved ``out_dir`` when an export may replace it (module docstring), else a
    UserError. ``adapter``: the adapter being exported (a path or AdapterFiles);
    ``base_dirs``: its base model's local folder(s), once known."""
    from mlx_lora.run_folder import RunFolder

    out = Path(out_dir).expanduser().resolve()  # a link to the base is the base
    protected = _protected(adapter, base_dirs)
    for folder, what, _ in protected:  # the most exact reason first: "is", then "contains", then "inside"
        if out == folder:
            raise UserError(f"{out}: this is {what}; an export replaces its destination, so it would be "
                            f"deleted — {_ADVICE}")
    for folder, what, _ in protected:
        if out in folder.parents:
            raise UserError(f"{out}: this folder contains {what} ({folder}); an export replaces its "
                            f"destination, so it would be deleted — {_ADVICE}")
    for folder, what, inside_ok in protected:
        if not inside_ok and folder in out.parents:
            raise UserError(f"{out}: this folder lies inside {what} ({folder}); an export there would "
                            f"change it — {_ADVICE}")
    for folder in (out, *out.parents):
        if RunFolder(folder).is_run():
            where = "is a run folder" if folder == out else f"lies inside the run folder {folder}"
            raise UserError(f"{out}: this folder {where}; an export there would replace or change the run "
                            f"— {_ADVICE}")
    if not out.exists() and not out.is_symlink():
        return out
    if not out.is_dir():
        raise UserError(f"{out}: this is a file, not a folder; an export would replace it — {_ADVICE}")
    entries = list(out.iterdir())
    if not entries:
        return out
    if not is_earlier_export(out):
        raise UserError(f"{out}: the folder exists and is not an earlier export (it has no {MARKER} written "
                        f"by mlx-lora export), so replacing it would delete its {len(entries)} "
                        f"entr{'y' if len(entries) == 1 else 'ies'} — {_ADVICE}, or empty this one yourself")
    runs = [d for d in out.rglob("*") if d.is_dir() and RunFolder(d).is_run()]
    if runs:
        raise UserError(f"{out}: this earlier export holds a run folder ({runs[0]}), which replacing it "
                        f"would delete — {_ADVICE}")
    return out
