"""Writes that are never seen half-done: write to a temporary name in the same
folder, flush to disk, then rename into place (atomic on POSIX and on APFS).

Temporary names start with a dot and hold ``.tmp``; a kill can leave them
behind, never a half-written file under the real name. :func:`atomic_dir`
replaces a folder with two renames (target → ``.NAME.old``, temporary →
target); a kill between the two leaves only ``.NAME.old``, which the next
:func:`atomic_dir` on that target (or :func:`recover_dir`) puts back.

:func:`fault_point` is a test-only fault-injection hook (see there).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    The caller writes the file (any library that takes a path: safetensors,
    mx.save_safetensors…). On an exception the temporary file is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:  # open() here, not Path.write_bytes: tests inject ENOSPC through it
            fh.write(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj, indent: int = 2) -> None:
    write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; on success it becomes ``target``
    (an existing ``target`` is replaced). On an exception nothing at ``target`` changes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            fault_point("atomic_dir.swap")  # the one moment ``target`` does not exist
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def old_dir(target: str | os.PathLike) -> Path:
    """Where :func:`atomic_dir` parks the folder it replaces."""
    target = Path(target)
    return target.with_name(f".{target.name}.old")


def recover_dir(target: str | os.PathLike) -> bool:
    """Put back a folder that a kill inside :func:`atomic_dir` left parked as ``.NAME.old``
    (the old folder was whole; the new one never arrived). True if it did."""
    target, old = Path(target), old_dir(target)
    if old.is_dir() and not target.exists():
        os.replace(old, target)
        return True
    return False


# -- fault injection, for the reliability tests only ---------------------------------
FAULT_ENV = "MLX_LORA_TEST_FAULT"
_fault_counts: dict[str, int] = {}


def fault_point(phase: str) -> None:
    """FAULT-INJECTION HOOK (tests/reliability): does nothing unless the environment
    variable ``MLX_LORA_TEST_FAULT`` is ``PHASE:N[:ACTION]`` for this ``phase``. Then,
    the N-th time this process reaches the phase, ACTION happens: ``kill`` (default,
    SIGKILL to itself, as the kernel's out-of-memory killer would), ``oom`` (raise
    MemoryError) or ``enospc`` (raise OSError(ENOSPC), a full disk). It lets the
    tests kill a run at exact moments inside a checkpoint write; costs one
    environment look-up per call otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != phase:
        return
    count, _, action = rest.partition(":")
    _fault_counts[phase] = _fault_counts.get(phase, 0) + 1
    if _fault_counts[phase] != int(count or 1):
        return
    if action in ("", "kill"):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "oom":
        raise MemoryError(f"injected at {phase}")
    elif action == "enospc":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    raise ValueError(f"{FAULT_ENV}: unknown action {action!r} (kill, oom or enospc)")
