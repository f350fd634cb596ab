"""The app's supervisor with ``run.hostfile`` set: the real CLI child launches two ranks on
127.0.0.1 (mlx.launch, ring backend), rank 0's events drive the signals, Stop stops both
ranks with a checkpoint, and killing the child (the app's last resort) leaves no rank behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.jobs.training_supervisor import TrainingSupervisor
from tests.app.test_training_supervisor import _alive
from tests.cli.test_distributed import free_port_pair
from tests.core.test_train_helpers import tiny_config, write_dataset


@pytest.fixture()
def distributed_config(tiny_model, tmp_path, monkeypatch) -> Path:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
    data = write_dataset(tmp_path / "data", train=24, valid=4)
    config = tiny_config(tiny_model, data, tmp_path / "run", iters=300, save_every=100, steps_per_eval=100,
                         hostfile=str(hostfile))
    path = tmp_path / "config.yaml"
    config.save(path)
    monkeypatch.setenv("MLX_LORA_RING_PORT", str(free_port_pair()))  # QProcess passes the environment on
    return path


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (ps works on Linux and macOS alike)."""
    rows = [line.split() for line in subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True,
                                                     text=True, check=True).stdout.splitlines()]
    children: dict[int, list[int]] = {}
    for child, parent in rows:
        children.setdefault(int(parent), []).append(int(child))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def start_two_ranks(qtbot, config_path: Path):
    supervisor = TrainingSupervisor(stop_timeout_ms=60_000)
    started, steps = [], []
    supervisor.run_started.connect(started.append)
    supervisor.step_reported.connect(steps.append)
    supervisor.start(config_path)
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=180_000)
    ranks = descendants(supervisor.pid)
    # the launcher and its two ranks (ps may also list the shells mlx.launch starts them through)
    assert len(ranks) >= 3
    return supervisor, started, ranks


def test_the_supervisor_runs_two_ranks_and_stop_stops_both(qtbot, distributed_config):
    supervisor, started, ranks = start_two_ranks(qtbot, distributed_config)
    assert started[0].world_size == 2  # rank 0's events, and rank 0's only
    with qtbot.waitSignal(supervisor.run_stopped, timeout=120_000) as stopped:
        supervisor.stop()
    event = stopped.args[0]
    assert event.forced is False and event.checkpoint.endswith(f"step-{event.step}")
    assert not any(_alive(pid) for pid in ranks)


def test_killing_the_child_leaves_no_rank_behind(qtbot, distributed_config):
    supervisor, _, ranks = start_two_ranks(qtbot, distributed_config)
    supervisor.kill()  # SIGKILL to the CLI process: its launcher's lifeline closes
    qtbot.waitUntil(lambda: not any(_alive(pid) for pid in ranks), timeout=30_000)
