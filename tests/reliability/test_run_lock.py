"""issue 16.7: one writer per run folder. Training, resuming and deleting a run take an
exclusive lock (fcntl.flock on RUN/.lock, which holds the owner's pid); a second
``train --resume R`` is refused with the owner's pid (exit 2) before it reads or writes
anything, in the CLI and through the app's Resume button. A lock whose owner died is
free again (the kernel drops a flock with its process), whatever the file says.

The lock is held by a real second process; it and the test meet through pipes, never
sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from mlx_lora.errors import UserError
from mlx_lora.run_folder import LOCK_FILE, RunFolder
from tests.core.test_chat_helpers import make_run
from tests.reliability.runcheck import snapshot

HOLDER = """
import sys
from mlx_lora.run_folder import RunFolder

with RunFolder(sys.argv[1]).lock("training"):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes the pipe
"""


@contextmanager
def held_by_another_process(run: Path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        yield child.pid
    finally:
        child.stdin.close()
        child.wait(timeout=30)


@pytest.fixture
def run(tiny_model, tmp_path) -> Path:
    return make_run(tiny_model, tmp_path / "run")


def test_a_second_resume_is_refused_with_the_owners_pid(run, capsys):
    with held_by_another_process(run) as pid:
        before = snapshot(run)
        rc = main(["train", "--resume", str(run)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert f"error: {run}: this run is in use: process {pid} is training it" in err
        assert "wait for it to finish, or stop it, then try again" in err
        assert snapshot(run) == before  # metrics.jsonl, config.yaml: not touched

        rc = main(["train", "--resume", str(run), "--json-events"])
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert rc == 2 and events[-1]["event"] == "run_failed" and f"process {pid}" in events[-1]["reason"]
        assert snapshot(run) == before

    with RunFolder(run).lock("resuming"):  # the owner is gone: the lock is free again
        assert (run / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    assert not (run / LOCK_FILE).exists()  # let go: removed


def test_a_lock_file_of_a_dead_process_is_stale(run):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_FILE).write_text(f"{dead.stdout.strip()}\ntraining\n")

    assert RunFolder(run).lock_holder() is None
    with RunFolder(run).lock("resuming"):
        assert RunFolder(run).lock_holder() is None  # our own lock is no other's
        assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\nresuming\n"


def test_a_new_run_into_a_locked_folder_and_deleting_a_running_run_are_refused(run, tmp_path, dataset):
    from mlx_lora.config import TrainConfig
    from mlx_lora.run_history import delete_run
    from mlx_lora.train.loop import train

    target = tmp_path / "new-run"
    target.mkdir()
    with held_by_another_process(target) as pid:
        config = TrainConfig.from_dict({"model": {"model": str(run)}, "data": {"data": str(dataset)},
                                        "run": {"run_dir": str(target)}})
        with pytest.raises(UserError, match=f"process {pid} is training it"):
            train(config)
        assert sorted(p.name for p in target.iterdir()) == [LOCK_FILE]  # the owner's
    assert list(target.iterdir()) == []
    with held_by_another_process(run) as pid:
        with pytest.raises(UserError, match=f"{run}: this run is in use: process {pid}"):
            delete_run(run)
        assert run.is_dir()


def test_the_resume_button_shows_the_same_refusal(run, qtbot):
    from app.controllers.app_state import AppState
    from app.controllers.training import TrainingController

    controller = TrainingController(AppState())
    with held_by_another_process(run) as pid:
        with qtbot.waitSignal(controller.run_ended, timeout=60_000) as ended:
            controller.resume(str(run))
    outcome, message = ended.args
    assert outcome == "failed"
    assert f"this run is in use: process {pid} is training it" in message
