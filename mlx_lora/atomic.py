"""Writes that are never seen half-done: write to a temporary name in the same
folder, flush to disk, then rename into place (atomic on POSIX and on APFS).

Temporary names start with a dot and hold ``.tmp``; a kill can leave them
behind, never a half-written file under the real name. They carry their writer's
pid (``.NAME.PID-XXXXXXXX.tmp``), so :func:`clean_stale_temporaries` can tell a
killed writer's leftovers from a live one's and remove only those. :func:`atomic_dir`
replaces a folder with two renames (target → ``.NAME.old``, temporary →
target); a kill between the two leaves only ``.NAME.old``, which the next
:func:`atomic_dir` on that target (or :func:`recover_dir`) puts back.

:func:`fault_point` is a test-only fault-injection hook (see there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
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


def temporary_pid(name: str) -> int | None:
    """The writer's pid in a temporary name of ours; None for other names (or ones without)."""
    match = _TEMPORARY.match(name)
    pid = match and (match.group("pid") or match.group("check_pid"))
    return int(pid) if pid else None


def temporary_prefix(name: str) -> str:
    """``.NAME.PID-``: tempfile adds 8 random characters of [a-z0-9_] (and the suffix)."""
    return f".{name}.{os.getpid()}-"


# What our writers leave when killed, and nothing else (tempfile's random part is 8 of
# [a-z0-9_]; versions before the pid was added wrote none):
#   .NAME.[PID-]XXXXXXXX.tmp[.SUFFIX]   atomic_dir / atomic_path
#   .gguf-check-[PID-]XXXXXXXX          the GGUF export's read-back folder (formats/base.py: scratch)
_TEMPORARY = re.compile(r"^\.(?:.+\.(?:(?P<pid>\d+)-)?[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]+)?"
                        r"|gguf-check-(?:(?P<check_pid>\d+)-)?[a-z0-9_]{8})$")
STALE_AFTER_S = 3600.0  # a temporary without a pid: stale once nothing in it changed for an hour


@dataclasses.dataclass(frozen=True)
class Cleaned:
    folder: Path
    removed: tuple[str, ...]
    freed_bytes: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's process: alive
    return True


def _newest_change(path: Path) -> float:
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def is_stale_temporary(entry: Path, now: float | None = None, max_age_s: float = STALE_AFTER_S) -> bool:
    """Whether ``entry`` is a temporary of ours whose writer is gone: our naming pattern
    (``_TEMPORARY`` above, and never a link), and its pid dead — or, for a name
    without a pid, nothing in it changed for ``max_age_s``."""
    match = _TEMPORARY.match(entry.name)
    if match is None or entry.is_symlink():
        return False
    pid = match.group("pid") or match.group("check_pid")
    if pid:
        return not _pid_alive(int(pid))
    return (now if now is not None else time.time()) - _newest_change(entry) > max_age_s


def clean_stale_temporaries(folder: str | os.PathLike, now: float | None = None,
                            max_age_s: float = STALE_AFTER_S) -> Cleaned:
    """Remove the stale temporaries of ours (:func:`is_stale_temporary`) directly inside
    ``folder`` — nothing else, nothing deeper — and say what was freed."""
    folder = Path(folder)
    removed, freed = [], 0
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return Cleaned(folder, (), 0)
    for entry in entries:
        try:
            if not is_stale_temporary(entry, now, max_age_s):
                continue
            size = _size(entry)
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # gone meanwhile, or not ours to remove after all: leave it
        removed.append(entry.name)
        freed += size
    return Cleaned(folder, tuple(removed), freed)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``.

    The caller writes the file (any library that takes a path: safetensors,
    mx.save_safetensors…). On an exception the temporary file is removed and
    ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(target.name), suffix=".tmp" + target.suffix, dir=target.parent)
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
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(target.name), suffix=".tmp", dir=target.parent))
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
