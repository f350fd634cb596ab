"""The run folder: the one reader and writer of what a run leaves on disk.

::

    RUN/
      config.yaml               the exact config the run used
      metrics.jsonl             one JSON event per line (every event has a step)
      adapters.safetensors      the latest adapter; with adapter_config.json, what
      adapter_config.json       mlx_lm.load(model, adapter_path=RUN) reads
      checkpoints/step-N/       adapters.safetensors, adapter_config.json,
                                optimizer.safetensors, trainer_state.json, and
                                method_state.safetensors when the method keeps
                                state of its own (AdaLoRA: methods/base.py)
      best/                     the adapter with the lowest validation loss
      latest                    text: "checkpoints/step-N", written only after that
                                checkpoint is complete
      generation_eval.json      the latest ``mlx-lora eval --generate`` (mlx_lora.evaluation):
                                base vs tuned answers and scores, written whole or not at all
      .lock                     the pid (and what it does) of the one process that
                                writes the run; see :meth:`RunFolder.lock`

:class:`RunFolder` writes it (the trainer) and reads it back (resume, the run
history of :mod:`mlx_lora.run_history`, the adapter library of
:mod:`mlx_lora.adapters`, ``mlx-lora eval``); nothing else spells these names.
Reading never imports MLX (the app's Runs page lists runs without it): ``mlx.core``
is imported inside the functions that save or load tensors.

Every file is written to a temporary name and renamed (:mod:`mlx_lora.atomic`);
a checkpoint folder is built under a temporary name and renamed whole, so a
kill at any moment leaves the previous checkpoint and pointer intact.
``metrics.jsonl`` is the one exception: it is appended a line at a time
(rewriting the whole file per event would cost O(events²)); a kill can leave a
torn last line, which the reader skips and a resume cuts away.

What a kill leaves behind is tidied by the next writer: the first checkpoint a
process saves first removes stale temporaries (dot-names holding ``.tmp``) and
puts back a ``best/`` parked by a kill mid-replace (:func:`mlx_lora.atomic.recover_dir`).
Old checkpoints are pruned by renaming them to a temporary name first, so a kill
mid-delete never leaves a half-deleted ``step-N``. tests/reliability kills runs
at every one of these moments (``fault_point`` phases).

Safetensors files are written through a Python file object, not a path: given a
path, ``mx.save_safetensors`` ignores write errors (a full disk gave a short
file and no error, measured with /dev/full), and the rename would then publish
a broken checkpoint. A failed write (disk full, …) is a :class:`UserError`
saying so; the previous checkpoint and ``latest`` are untouched.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mlx_lora import paths
from mlx_lora.atomic import atomic_dir, atomic_path, fault_point, recover_dir, write_json, write_text
from mlx_lora.config import RESUMABLE_CHANGES, TrainConfig, read_yaml
from mlx_lora.errors import UserError
from mlx_lora.run_events import RUN_STATUS

if TYPE_CHECKING:
    import mlx.core as mx

    from mlx_lora.events import Event

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
METHOD_STATE_FILE = "method_state.safetensors"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
LATEST_FILE = "latest"
LOCK_FILE = ".lock"
GENERATION_EVAL_FILE = "generation_eval.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_PARKED = re.compile(r"^\.(.+)\.old$")  # a folder atomic_dir was replacing (mlx_lora.atomic)

# The status a run's last terminal event gives it; without one it is "incomplete"
# (still running, or killed before it could say anything).
_STATUS = {cls.kind: status for cls, status in RUN_STATUS.items()}


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
    import mlx.core as mx

    bad = [name for name, value in tensors.items()
           if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item()]
    if bad:
        raise NonFiniteError(f"{what}: {len(bad)} tensor(s) are NaN or infinite (first: {bad[0]})")


def _write_safetensors(path: Path, tensors: dict[str, mx.array], metadata: dict[str, str] | None = None) -> None:
    import mlx.core as mx

    # a file object, not a path: only then do write errors (ENOSPC…) raise (module docstring)
    with open(path, "wb") as fh:
        mx.save_safetensors(fh, tensors, metadata=metadata)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, indent=2) + "\n")


def save_safetensors(path: Path, tensors: dict[str, mx.array]) -> None:
    with atomic_path(path) as tmp:
        _write_safetensors(tmp, tensors, {"format": "mlx"})
        fault_point("adapter.written")  # whole in its temporary file, not yet renamed


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name


def check_checkpoint_fits(checkpoint: "Checkpoint", weights: dict[str, mx.array],
                          optimizer_state: dict[str, mx.array]) -> None:
    """Refuse a checkpoint whose tensors do not fit the model (and optimiser) the run's config
    builds, naming the tensor and both shapes; nothing is loaded before this passes."""
    problems = []
    for what, saved, expected in (("weight", checkpoint.weights, weights),
                                  ("optimizer state", checkpoint.optimizer, optimizer_state)):
        for name in sorted(set(saved) | set(expected)):
            if name not in expected:
                problems.append(f"{name}: the model has no such {what}")
            elif name not in saved:
                problems.append(f"{name}: missing from the checkpoint")
            elif tuple(saved[name].shape) != tuple(expected[name].shape):
                problems.append(f"{name}: the checkpoint's tensor has shape {tuple(saved[name].shape)} but this "
                                f"model needs {tuple(expected[name].shape)}")
    if problems:
        shown = problems[:8] + ([f"… and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise UserError(f"{checkpoint.path}: this checkpoint does not fit the model the run's config builds "
                        "(was the base model or a LoRA setting — rank, layers, targets — changed?)\n  "
                        + "\n  ".join(shown))


@dataclasses.dataclass
class Checkpoint:
    path: Path
    weights: dict[str, mx.array]
    optimizer: dict[str, mx.array]
    state: dict[str, Any]
    method_state: dict[str, mx.array] = dataclasses.field(default_factory=dict)


class RunFolder:
    """One run folder (module docstring). Constructing it reads nothing; a folder is a run
    once it holds ``config.yaml`` or ``metrics.jsonl`` (:meth:`is_run`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.config_path = self.path / CONFIG_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.checkpoints = self.path / CHECKPOINTS_DIR
        self.best = self.path / BEST_DIR
        self.latest_path = self.path / LATEST_FILE

    @classmethod
    def find(cls, path: str | Path) -> "RunFolder | None":
        """The run folder at or above an adapter folder (or file): the folder itself, the run
        above its ``best/``, or the run above its ``checkpoints/step-N/``; None for an adapter
        that belongs to no run."""
        path = Path(path).expanduser()
        if path.is_file():
            path = path.parent
        candidates = [path]
        if path.name == BEST_DIR:
            candidates.append(path.parent)
        if _STEP_DIR.match(path.name) and path.parent.name == CHECKPOINTS_DIR:
            candidates.append(path.parent.parent)
        return next((folder for folder in map(cls, candidates) if folder.is_run()), None)

    def is_run(self) -> bool:
        return self.config_path.is_file() or self.metrics_path.is_file()

    # -- the config ------------------------------------------------------------
    def config(self) -> TrainConfig:
        """The exact config the run used, validated; a UserError names the file when it is
        missing, torn, or not a config this version reads."""
        if not self.config_path.is_file():
            raise UserError(f"{self.path}: not a run folder (no {CONFIG_FILE})")
        try:
            return TrainConfig.from_yaml(self.config_path)
        except UserError as exc:
            if str(self.config_path) in str(exc):
                raise
            raise UserError(f"{self.config_path}: {exc}") from exc  # a bad value: the setting, and where

    def raw_config(self) -> dict[str, Any]:
        """config.yaml as the nested mapping it holds, unvalidated; {} when it is missing, torn
        or no mapping. Only for showing what can be read of any run, however broken or old (the
        run history); everything that acts on a run uses :meth:`config`."""
        try:
            return read_yaml(self.config_path)
        except UserError:
            return {}

    def write_config(self, config: TrainConfig) -> None:
        config.save(self.config_path)

    def resume_config(self, changes: dict[str, Any] | None = None) -> TrainConfig:
        """The config to continue this run with: its saved config.yaml plus changes, of which
        only :data:`~mlx_lora.config.RESUMABLE_CHANGES` may differ from the saved settings."""
        if not self.config_path.is_file():
            raise UserError(f"{self.path}: not a run folder (no {CONFIG_FILE}), so it cannot be resumed")
        saved = self.config()
        changes = dict(changes or {})
        changes["resume"] = str(self.path)
        changes["run_dir"] = str(self.path)
        wanted = saved.replace(**changes)
        fixed = [k for k in wanted.differences(saved) if k not in RESUMABLE_CHANGES]
        if fixed:
            allowed = ", ".join(sorted(RESUMABLE_CHANGES - {"resume", "run_dir"}))
            raise UserError(f"{', '.join(fixed)}: cannot change when resuming {self.path} (an exact resume runs "
                            f"with the run's own settings; only {allowed} may change). Start a new run to "
                            "change it.")
        return wanted

    # -- one writer at a time ------------------------------------------------
    @contextmanager
    def lock(self, doing: str) -> Iterator[None]:
        """Hold the run's exclusive lock while ``doing`` ("training", "resuming", "deleting")
        it; a UserError naming the owner's pid when another process holds it. An
        ``fcntl.flock`` on ``.lock``: the kernel drops it when its process dies, however it
        dies, so a lock file left by a killed run is stale by construction (the next owner
        overwrites its pid). Let go, the file is removed (while still locked; a process that
        opened it just before then finds it unlinked and tries again), and so is a folder
        this call created that holds nothing else (a new run refused before it wrote)."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILE
        for _ in range(10):
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"{lock_path}: cannot lock the run ({exc.strerror})") from exc
                raise UserError(self._in_use_message()) from None
            try:
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    break  # the file at the path is the one locked (not one its owner just removed)
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise UserError(f"{lock_path}: the lock file keeps changing under this process; try again")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{doing}\n".encode())
            yield
        finally:
            lock_path.unlink(missing_ok=True)  # still locked: see the docstring
            if created and self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()
            os.close(fd)  # lets the lock go

    def lock_holder(self) -> tuple[int, str] | None:
        """(pid, what it does) of another process holding the run's lock, else None."""
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            owner = self._lock_owner()
            return None if owner[0] == os.getpid() else owner
        else:
            return None  # nobody holds it (a dead owner's file, or ours: flock is per open file)
        finally:
            os.close(fd)

    def _lock_owner(self) -> tuple[int, str]:
        try:
            pid, _, doing = (self.path / LOCK_FILE).read_text().partition("\n")
            return int(pid), doing.strip() or "writing"
        except (OSError, ValueError):
            return 0, "writing"  # locked a moment ago, its pid not written yet

    def _in_use_message(self) -> str:
        pid, doing = self._lock_owner()
        who = f"process {pid}" if pid else "another process"
        return (f"{self.path}: this run is in use: {who} is {doing} it (it holds {LOCK_FILE}), and two processes "
                "writing one run would each write every step; wait for it to finish, or stop it, then try again")

    # -- creating and logging ------------------------------------------------
    def create(self, config: TrainConfig) -> None:
        if self.path.exists() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
            raise UserError(f"{self.path}: the folder is not empty; continue that run with --resume {self.path} "
                            "or choose another --run-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(config.with_absolute_paths())  # readable from any folder later

    def log(self, event: Event) -> None:
        if not hasattr(event, "step"):
            return
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(event.to_json() + "\n")
                fh.flush()
        except OSError as exc:
            raise UserError(self._write_failed(f"could not write {self.metrics_path}", exc)) from exc

    def metrics(self) -> list[dict[str, Any]]:
        """The events of metrics.jsonl, oldest first; a line torn by a kill (or anything else
        that is not a JSON object) is skipped, and an unreadable file reads as no events."""
        try:
            return _events(self.metrics_path.read_text(encoding="utf-8"))
        except OSError:
            return []

    def terminal_event(self, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The last run_finished / run_stopped / run_failed event, or None. ``metrics``: the
        events already read (spares a second read of the file)."""
        events = self.metrics() if metrics is None else metrics
        return next((e for e in reversed(events) if e.get("event") in _STATUS), None)

    def status(self, metrics: list[dict[str, Any]] | None = None) -> str:
        """finished | stopped | failed, from the last terminal event; incomplete without one
        (still running, or killed before it could say anything)."""
        terminal = self.terminal_event(metrics)
        return _STATUS[terminal["event"]] if terminal is not None else "incomplete"

    def cut_metrics(self, step: int) -> None:
        """Keep the events up to ``step`` (a resume replays nothing after its checkpoint)."""
        # read strictly: an unreadable file must fail the resume, not be rewritten empty
        events = _events(self.metrics_path.read_text(encoding="utf-8")) if self.metrics_path.exists() else []
        kept = [event for event in events if event.get("step", 0) <= step]
        write_text(self.metrics_path, "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in kept))

    # -- checkpoints ---------------------------------------------------------
    def save_checkpoint(self, step: int, weights: dict[str, mx.array], adapter_config: dict[str, Any],
                        optimizer_state: dict[str, mx.array], trainer_state: dict[str, Any],
                        best: bool, keep: int, method_state: dict[str, mx.array] | None = None) -> Path:
        """Write checkpoints/step-N whole, then the run's adapter, then (if best) best/, then the
        ``latest`` pointer; refuses NaN/inf tensors. A failed write (disk full…) is a UserError;
        whatever was complete before stays as it was."""
        _check_finite(weights, f"adapter at step {step}")
        _check_finite(optimizer_state, f"optimizer state at step {step}")
        _check_finite(method_state or {}, f"method state at step {step}")
        target = self.checkpoints / f"step-{step}"
        try:
            self._tidy_once()
            with atomic_dir(target) as tmp:
                _write_safetensors(tmp / ADAPTER_FILE, weights, {"format": "mlx"})
                fault_point("checkpoint.partial")  # the step folder half-written
                _write_safetensors(tmp / OPTIMIZER_FILE, optimizer_state)
                if method_state:
                    _write_safetensors(tmp / METHOD_STATE_FILE, method_state)
                _write_json(tmp / ADAPTER_CONFIG, adapter_config)
                _write_json(tmp / STATE_FILE, trainer_state)
                fault_point("checkpoint.written")  # whole, not yet renamed into place
            save_safetensors(self.path / ADAPTER_FILE, weights)
            write_json(self.path / ADAPTER_CONFIG, adapter_config)
            if best:
                with atomic_dir(self.best) as tmp:
                    _write_safetensors(tmp / ADAPTER_FILE, weights, {"format": "mlx"})
                    _write_json(tmp / ADAPTER_CONFIG, adapter_config)
                    _write_json(tmp / STATE_FILE, trainer_state)
            fault_point("latest.before")  # everything written but the pointer
            write_text(self.latest_path, f"checkpoints/step-{step}\n")
            self.prune(keep)
        except OSError as exc:
            raise UserError(self._write_failed(f"could not save the checkpoint of step {step} in {self.path}",
                                               exc, "nothing half-written was kept and ")) from exc
        return target

    def _write_failed(self, doing: str, exc: OSError, note: str = "") -> str:
        """A failed write in plain words: what, why, what is still safe, what to do."""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what, advice = f"the disk is full ({exc.strerror})", "free some space"
        else:
            what = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
            advice = "fix that"
        latest = self.latest_checkpoint()
        if latest is None:
            rest = "no checkpoint was saved before it, so the run must start again"
        else:
            rest = (f"the last complete checkpoint, {latest.relative_to(self.path)}, is intact; "
                    f"{advice}, then continue with: mlx-lora train --resume {self.path}")
        sentence = note + rest  # the note ("nothing half-written was kept and ") opens the sentence
        return f"{doing}: {what}. {sentence[0].upper()}{sentence[1:]}"

    def _tidy_once(self) -> None:
        """Once per process, before its first checkpoint: remove what a killed writer left
        (temporaries) and put back a folder parked by a kill inside atomic_dir."""
        if getattr(self, "_tidied", False):
            return
        self._tidied = True
        for folder in (self.path, self.checkpoints):
            if not folder.is_dir():
                continue
            for entry in list(folder.iterdir()):
                parked = _PARKED.match(entry.name)
                if parked and recover_dir(folder / parked.group(1)):
                    continue
                if _is_temporary(entry.name) or parked:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

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
                # renamed out of sight first: a kill mid-delete leaves a temporary, not a half step-N
                doomed = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp-deleting", dir=self.checkpoints))
                os.replace(folder, doomed / folder.name)
                fault_point("prune")
                shutil.rmtree(doomed, ignore_errors=True)

    def load_checkpoint(self, path: Path | None = None) -> Checkpoint:
        import mlx.core as mx

        path = path or self.latest_checkpoint()
        if path is None:
            raise UserError(f"{self.path}: no checkpoint to resume from (the run stopped before its first "
                            "checkpoint); start it again")
        return Checkpoint(
            path=path,
            weights=mx.load(str(path / ADAPTER_FILE)),
            optimizer=mx.load(str(path / OPTIMIZER_FILE)),
            state=json.loads((path / STATE_FILE).read_text()),
            method_state=mx.load(str(path / METHOD_STATE_FILE)) if (path / METHOD_STATE_FILE).is_file() else {},
        )

    def has_checkpoint(self) -> bool:
        """Whether the run can be resumed: it holds a complete checkpoint."""
        return self.latest_checkpoint() is not None

    # -- its adapters ----------------------------------------------------------
    def adapter_choices(self) -> tuple[str, ...]:
        """The adapters the run holds: "final" (the run's latest adapter), "best", then "step-N"
        newest first."""
        found = []
        if (self.path / ADAPTER_FILE).is_file():
            found.append("final")
        if (self.best / ADAPTER_FILE).is_file():
            found.append("best")
        steps = [s for s in self.checkpoint_steps() if (self.checkpoints / f"step-{s}" / ADAPTER_FILE).is_file()]
        return tuple(found + [f"step-{s}" for s in reversed(steps)])

    def adapter_folder(self, choice: str) -> Path:
        """Where one of the run's adapters is, or would be: final (the run root), best, latest
        (the checkpoint the ``latest`` pointer names) or step-N. Checks nothing on disk but the
        pointer (a picker that names a folder uses this; :meth:`adapter` checks)."""
        if choice == "final":
            return self.path
        if choice == "best":
            return self.best
        if choice == "latest":
            return self.latest_checkpoint() or self.checkpoints / "(none)"
        if _STEP_DIR.match(choice):
            return self.checkpoints / choice
        raise UserError(f"{choice!r}: not an adapter of a run (choose final, best, latest or step-N)")

    def adapter(self, choice: str = "final") -> Path:
        """The folder of one of the run's adapters (:meth:`adapter_folder`); a UserError when
        it holds no adapter."""
        folder = self.adapter_folder(choice)
        if not (folder / ADAPTER_FILE).is_file():
            raise UserError(f"{folder}: no adapter there (choose final, best, latest or step-N)")
        return folder

    # -- its generation evaluation -----------------------------------------------
    @property
    def generation_eval_path(self) -> Path:
        return self.path / GENERATION_EVAL_FILE

    def read_generation_eval(self) -> dict[str, Any] | None:
        """The saved evaluation (:mod:`mlx_lora.evaluation.results`) as read from JSON; None
        when there is none or it does not parse."""
        try:
            data = json.loads(self.generation_eval_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_generation_eval(self, data: dict[str, Any]) -> Path:
        """Save an evaluation whole (temp then rename): a kill leaves the previous one or none."""
        try:
            write_json(self.generation_eval_path, data)
        except OSError as exc:
            raise UserError(f"could not save the evaluation in {self.path}: {exc.strerror or exc}. "
                            "Nothing half-written was kept; the previous evaluation (if any) is intact") from exc
        return self.generation_eval_path


def _events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(event, dict):
            events.append(event)
    return events


def resume_config(run_dir: str | Path, changes: dict[str, Any] | None = None) -> TrainConfig:
    """The config to continue ``run_dir`` with (:meth:`RunFolder.resume_config`)."""
    return RunFolder(run_dir).resume_config(changes)
