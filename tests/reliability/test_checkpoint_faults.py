"""A fault during a checkpoint write — the disk filling up at any point of it, an exception
from the writer, an out-of-memory — never costs the previous checkpoint: it stays
byte-identical, ``latest`` never names an incomplete checkpoint, no temporary is left,
the run ends with a RunFailed whose reason says what happened in plain words, and the
run resumes once the cause is gone.

The full disk is simulated where the bytes go: ``open`` in mlx_lora.run_folder and
mlx_lora.atomic (every checkpoint write passes through one of them) is replaced by one
whose files take only so many more bytes, then raise OSError(ENOSPC) after a short write,
as a real full disk does."""

from __future__ import annotations

import builtins
import errno
import os

import mlx.core as mx
import pytest

from mlx_lora import atomic
from mlx_lora import run_folder as run_folder_module
from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import RunFolder, resume_config
from mlx_lora.train import CheckpointSaved, RunFailed, train
from tests.core.test_train_helpers import tiny_config
from tests.reliability.runcheck import check_run_folder, snapshot

SETTINGS = dict(iters=3, save_every=1, steps_per_eval=100)


class Disk:
    """Files opened for writing share ``free`` bytes (None: unlimited), except those named in
    ``spare``; each counted write records (file name, bytes so far) in ``log``."""

    def __init__(self) -> None:
        self.free: int | None = None
        self.spare: set[str] = set()
        self.log: list[tuple[str, int]] = []
        self.written = 0

    def open(self, file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return _File(handle, self, os.path.basename(file)) if set(mode) & set("wa") else handle


class _File:
    def __init__(self, handle, disk: Disk, name: str) -> None:
        self._handle, self._disk, self._name = handle, disk, name

    def write(self, data):
        disk = self._disk
        if self._name in disk.spare:
            return self._handle.write(data)
        size = len(data.encode() if isinstance(data, str) else data)
        if disk.free is not None and size > disk.free:
            self._handle.write(data[:disk.free])  # a short write, then the error
            disk.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if disk.free is not None:
            disk.free -= size
        disk.written += size
        disk.log.append((self._name, disk.written))
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.fixture
def disk(monkeypatch) -> Disk:
    disk = Disk()
    monkeypatch.setattr(run_folder_module, "open", disk.open, raising=False)
    monkeypatch.setattr(atomic, "open", disk.open, raising=False)
    return disk


class FillAfterFirstCheckpoint(RecordingReporter):
    """Snapshots the run folder when checkpoint 1 is saved, then leaves ``free`` bytes."""

    def __init__(self, disk: Disk, run_dir, free: int | None) -> None:
        super().__init__()
        self.disk, self.run_dir, self.free, self.before = disk, run_dir, free, None

    def emit(self, event) -> None:
        super().emit(event)
        if isinstance(event, CheckpointSaved) and event.step == 1:
            self.before = snapshot(self.run_dir)
            self.disk.free, self.disk.log, self.disk.written = self.free, [], 0


def save_sizes(tiny_model, dataset, tmp_path, disk: Disk) -> list[tuple[str, int, int]]:
    """(file, first byte, end) of each file checkpoint 2 writes, in order, measured."""
    disk.spare = {"metrics.jsonl"}  # its lines vary in length (timings); the checkpoint's files do not
    recorder = FillAfterFirstCheckpoint(disk, tmp_path / "measure", None)
    train(tiny_config(tiny_model, dataset, tmp_path / "measure", **SETTINGS), recorder)
    spans, start = [], 0
    for i, (name, end) in enumerate(disk.log):
        if i + 1 == len(disk.log) or disk.log[i + 1][0] != name:
            spans.append((name, start, end))
            start = end
    last = next(i for i, (name, _, _) in enumerate(spans) if name.startswith(".latest."))
    return spans[:last + 1]  # (what follows is the events after the save)


def assert_failed_cleanly(run_dir, recorder, reason_words):
    failed = recorder.events[-1]
    assert isinstance(failed, RunFailed), recorder.events[-1]
    for words in reason_words:
        assert words in failed.reason, failed.reason
    assert failed.checkpoint.endswith("step-1")
    after = snapshot(run_dir)
    for name, data in recorder.before.items():  # the previous checkpoint, byte for byte
        if name.startswith("checkpoints/step-1/") or name == "latest":
            assert after[name] == data, name
    assert check_run_folder(run_dir) == 1  # latest names step 1, which is whole; nothing visible is broken
    assert not [p for p in run_dir.rglob(".*")], "a temporary was left behind"
    resumed = train(resume_config(run_dir))  # and once the cause is gone, the run continues
    assert (resumed.status, resumed.step) == ("finished", SETTINGS["iters"])
    assert check_run_folder(run_dir) == SETTINGS["iters"]


def test_the_disk_filling_up_anywhere_in_a_checkpoint_write_loses_nothing(tiny_model, dataset, tmp_path, disk):
    spans = save_sizes(tiny_model, dataset, tmp_path, disk)
    names = [name for name, _, _ in spans]
    # the checkpoint's files, the run's adapter and its config, the latest pointer
    assert names[0] == "adapters.safetensors" and names[-1].startswith(".latest.") and len(names) >= 7, names
    budgets = [(None, 0)] + [("metrics.jsonl", 0)] + [("metrics.jsonl", (start + end) // 2) for _, start, end in spans]
    for i, (spare, free) in enumerate(budgets):  # step 2's metrics line, then the middle of each file
        run_dir = tmp_path / f"full-{i}"
        disk.spare = {spare} if spare else set()
        recorder = FillAfterFirstCheckpoint(disk, run_dir, free)
        with pytest.raises(UserError, match="disk is full"):
            train(tiny_config(tiny_model, dataset, run_dir, **SETTINGS), recorder)
        disk.free = None
        intact = "the last complete checkpoint, checkpoints/step-1, is intact"
        assert_failed_cleanly(run_dir, recorder, [
            "could not write" if i == 0 else "could not save the checkpoint of step 2", "the disk is full",
            f"). {intact.capitalize()}" if i == 0 else f"). Nothing half-written was kept and {intact}",
            "free some space", f"continue with: mlx-lora train --resume {run_dir}"])
    assert len(budgets) == 9  # the figures in docs/RELIABILITY.md count these


def test_an_exception_from_the_writer_loses_nothing(tiny_model, dataset, tmp_path, disk, monkeypatch):
    real = mx.save_safetensors
    calls = []

    def failing(file, arrays, metadata=None):
        calls.append(file)
        if recorder.before is not None and len(calls) >= 3:  # checkpoint 2's optimizer state
            raise RuntimeError("[save_safetensors] injected failure")
        return real(file, arrays, metadata=metadata)

    run_dir = tmp_path / "run"
    recorder = FillAfterFirstCheckpoint(disk, run_dir, None)
    monkeypatch.setattr(mx, "save_safetensors", failing)
    with pytest.raises(RuntimeError, match="injected"):
        train(tiny_config(tiny_model, dataset, run_dir, **SETTINGS), recorder)
    monkeypatch.setattr(mx, "save_safetensors", real)
    assert_failed_cleanly(run_dir, recorder, ["internal error (RuntimeError: [save_safetensors] injected failure)"])


def test_running_out_of_memory_mid_checkpoint_says_so_and_offers_resume(tiny_model, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv(atomic.FAULT_ENV, "checkpoint.partial:2:oom")
    monkeypatch.setattr(atomic, "_fault_counts", {})
    run_dir = tmp_path / "run"
    recorder = FillAfterFirstCheckpoint(Disk(), run_dir, None)
    with pytest.raises(MemoryError):
        train(tiny_config(tiny_model, dataset, run_dir, **SETTINGS), recorder)
    monkeypatch.delenv(atomic.FAULT_ENV)
    assert_failed_cleanly(run_dir, recorder, ["out of memory at step 2", "smaller batch size",
                                              f"mlx-lora train --resume {run_dir}"])
