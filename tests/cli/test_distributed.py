"""Training on several processes: ``mlx-lora train --hostfile FILE`` runs two real ranks on
127.0.0.1 through mlx.launch (ring backend over TCP, free ports) and must train exactly like
one process on the same global batches; a stop reaches both ranks; a stopped run resumes.

Each launch is watched by a timer that kills it (and, through its lifeline, its ranks), so a
rank stuck in an all-reduce fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.cli.launch import check_hostfile
from mlx_lora.cli.config_flags import config_flags
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import RunFolder
from mlx_lora.train import EvalReport, StepReport, train
from mlx_lora.train.distributed import World
from tests.cli.test_train_cli import REPO, events_of, flags
from tests.core.test_train_helpers import losses, tiny_config, write_dataset

LAUNCH_TIMEOUT_S = 240
# batch 3 over 2 ranks: shares of 2 and 1 examples, so a plain mean of the ranks' mean losses
# (mlx-lm's averaging) would differ from the one-process loss; accumulation 2 spans micro-batches
SETTINGS = dict(batch_size=3, grad_accumulation_steps=2, steps_per_eval=3, val_batches=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dist-data") / "persona", train=24, valid=4)


@pytest.fixture()
def hostfile(tmp_path) -> Path:
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * 2))
    return path


def free_port_pair() -> int:
    """A port p with p and p+1 free (the ring backend listens on one port per rank)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


def launch(args: list[str], **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "MLX_LORA_RING_PORT": str(free_port_pair()), **env_vars}
    proc = subprocess.Popen([sys.executable, "-m", "mlx_lora.cli.main", "train", *args, "--json-events"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(LAUNCH_TIMEOUT_S, proc.kill)
    timer.daemon = True
    timer.start()
    proc.timer = timer
    return proc


def finish(proc: subprocess.Popen) -> tuple[list[dict], str]:
    out, err = proc.communicate()
    proc.timer.cancel()
    assert proc.returncode != -signal.SIGKILL, f"the launch hung and was killed after {LAUNCH_TIMEOUT_S}s: {err[-3000:]}"
    return events_of(out), err


def started(events: list[dict]) -> dict:
    return next(e for e in events if e["event"] == "run_started")


def adapter(run_dir: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in mx.load(str(run_dir / "adapters.safetensors")).items()}


def test_two_processes_train_like_one_on_the_same_global_batches(tiny_model, dataset, hostfile, tmp_path):
    one = RecordingReporter()
    train(tiny_config(tiny_model, dataset, tmp_path / "one", iters=5, **SETTINGS), one)

    two_dir = tmp_path / "two"
    events, err = finish(launch(flags(tiny_model, dataset, two_dir, iters=5, hostfile=str(hostfile), **SETTINGS)))
    assert events and events[-1]["event"] == "run_finished", err[-3000:]
    assert started(events)["world_size"] == 2  # the distributed layer was really used
    assert any("data-parallel over 2 processes (ring backend)" in n for n in started(events)["notes"])

    expected = losses(one.events)
    got = {e["step"]: e["loss"] for e in events if e["event"] == "step_report"}
    assert sorted(got) == [1, 2, 3, 4, 5]
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-5), step
    val_one = [e.val_loss for e in one.of(EvalReport)]
    val_two = [e["val_loss"] for e in events if e["event"] == "eval_report"]
    assert val_two == pytest.approx(val_one, rel=1e-5)
    assert [e["trained_tokens"] for e in events if e["event"] == "step_report"][-1] == \
        one.of(StepReport)[-1].trained_tokens  # token counts summed over the ranks

    a, b = adapter(tmp_path / "one"), adapter(two_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert np.abs(a[next(iter(a))]).max() > 0  # the adapter moved

    # only rank 0 wrote: one metrics line per event, the same events as on stdout
    metrics = RunFolder(two_dir).metrics()
    assert [m["event"] for m in metrics] == [e["event"] for e in events if "step" in e]
    assert RunFolder(two_dir).checkpoint_steps() == RunFolder(tmp_path / "one").checkpoint_steps() == [3, 4, 5]


def test_a_stop_reaches_both_ranks_and_the_run_resumes_on_two(tiny_model, dataset, hostfile, tmp_path):
    run_dir = tmp_path / "stopped"
    settings = dict(SETTINGS, steps_per_eval=100, save_every=100)
    proc = launch(flags(tiny_model, dataset, run_dir, iters=300, hostfile=str(hostfile), **settings))
    before = []
    for line in proc.stdout:
        before.append(json.loads(line))
        if before[-1]["event"] == "step_report" and before[-1]["step"] >= 2:
            break
    proc.send_signal(signal.SIGTERM)  # to the launching process: it tells every rank through mlx.launch
    events, err = finish(proc)
    before += events
    assert proc.returncode == 0, err[-3000:]
    stopped = before[-1]
    assert stopped["event"] == "run_stopped" and 2 <= stopped["step"] < 300, err[-3000:]
    # rank 1 stopped too, cleanly: mlx.launch warns about any rank that failed or was killed
    assert "[WARN]" not in err, err[-3000:]
    stop_step = stopped["step"]
    assert RunFolder(run_dir).latest_checkpoint().name == f"step-{stop_step}"

    # resume: the run's config.yaml names the hostfile, so the resume runs on two processes too
    total = stop_step + 3
    after, err = finish(launch(["--resume", str(run_dir), "--iters", str(total)]))
    assert after[-1]["event"] == "run_finished" and after[-1]["step"] == total, err[-3000:]
    assert started(after)["world_size"] == 2 and started(after)["resumed"]
    assert [e["step"] for e in after if e["event"] == "step_report"] == list(range(stop_step + 1, total + 1))

    one = RecordingReporter()
    train(tiny_config(tiny_model, dataset, tmp_path / "one", iters=total, **settings), one)
    got = {e["step"]: e["loss"] for e in before + after if e["event"] == "step_report"}
    for step, loss in losses(one.events).items():
        assert got[step] == pytest.approx(loss, rel=1e-5), step
    a, b = adapter(tmp_path / "one"), adapter(run_dir)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_failure_on_rank_0_ends_every_rank_with_its_reason(tiny_model, dataset, hostfile, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("")
    proc = launch(flags(tiny_model, dataset, used, iters=5, hostfile=str(hostfile)))
    events, err = finish(proc)  # rank 1 waits in an all-reduce for rank 0: it must be ended, not hang
    assert proc.returncode == 1
    assert events[-1]["event"] == "run_failed" and "not empty" in events[-1]["reason"]


# -- the pieces, in process ------------------------------------------------------------------

class FakeGroup:
    def __init__(self, rank: int, size: int) -> None:
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


@pytest.mark.parametrize("batch", [[7, 3, 9, 1, 4], [5], [2, 8]])
def test_the_ranks_shares_make_up_the_global_batch(batch):
    indices = np.asarray(batch)
    shares = [World(FakeGroup(rank, 3)).share(indices) for rank in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == sorted(batch)
    assert sum(len(s) for s in shares) == len(batch)  # no example on two ranks
    assert World(FakeGroup(0, 1)).share(indices) is indices


def test_one_process_is_the_identity():
    world = World()
    assert world.size == 1 and world.is_main and not world.distributed
    stop = lambda: True  # noqa: E731
    assert world.collective_stop(stop) is stop and world.mean(2.5) == 2.5 and world.notes(0.1) == []


def test_every_setting_survives_the_trip_through_the_ranks_flags(tmp_path):
    from mlx_lora.cli.main import build_parser
    from mlx_lora.cli.config_flags import config_from_args

    config = TrainConfig().replace(data=str(tmp_path), run_dir="", targets=("q_proj", "v_proj"), rslora=True,
                                   learning_rate=3e-4, hostfile=str(tmp_path / "hosts.json"), seed=7)  # paths are stored absolute
    args = build_parser().parse_args(["train", *config_flags(config)])
    assert config_from_args(args) == config


def test_a_bad_hostfile_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_hostfile(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("[{\"ssh\": \"a\"")
    with pytest.raises(UserError, match="not an mlx.launch hostfile"):
        check_hostfile(str(broken))
    no_ips = tmp_path / "no-ips.json"
    no_ips.write_text(json.dumps([{"ssh": "mac-1.local"}, {"ssh": "mac-2.local"}]))
    with pytest.raises(UserError, match="no \"ips\""):
        check_hostfile(str(no_ips))
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"ssh": "mac-1.local", "ips": ["192.168.1.10"]},
                                {"ssh": "mac-2.local", "ips": ["192.168.1.11"]}]))
    assert check_hostfile(str(good)) == 2


def fake_launcher(monkeypatch, events: list) -> None:
    """run_launched with a launcher that prints ``events`` (Event objects, dicts or text) and exits 0,
    as mlx.launch does whatever its ranks did."""
    from mlx_lora.cli import launch

    lines = [e.to_json() if hasattr(e, "to_json") else e if isinstance(e, str) else json.dumps(e) for e in events]
    script = f"import sys\nfor line in {lines!r}:\n    print(line, flush=True)\n"
    monkeypatch.setattr(launch, "check_hostfile", lambda path: 2)
    monkeypatch.setattr(launch, "launch_command", lambda config, fd: [sys.executable, "-c", script])


def test_the_launcher_prints_rank_zeros_events_and_exits_as_the_run_ended(monkeypatch, capsys, tmp_path):
    import io

    from mlx_lora.cli.launch import run_launched
    from mlx_lora.run_events import AdapterMerged, RunFailed, RunStarted, RunStopped

    start = RunStarted(0, str(tmp_path), "tiny", "lora", 4, 2.0, 10, 100, 8, 2, 0, 64, 32, 0, 0, 0.125, "cpu",
                       "float32", False, notes=("dequantised the base",), world_size=2)
    step = StepReport(1, 4, 0.5, 2.5, 1e-4, 900.0, 16, 0.5, 1.0, 3.0)
    merged = AdapterMerged(2, 1, "ReLoRA merge 1")
    newer = {"event": "rank_joined", "step": 2, "rank": 1}  # from a newer engine on another machine
    stopped = RunStopped(2, str(tmp_path), str(tmp_path / "checkpoints" / "step-2"), "stopped at step 2")
    config = TrainConfig().replace(hostfile="hosts.json")
    fake_launcher(monkeypatch, [start, "a log line", step, merged, newer, stopped])
    out = io.StringIO()
    assert run_launched(config, json_events=False, out=out) == 0
    text = out.getvalue()
    assert f"training tiny (lora) → {tmp_path}" in text and "note: dequantised the base" in text
    assert "step     1/4  loss 2.5000" in text and "step     2  ReLoRA merge 1" in text
    assert json.dumps(newer) in text and text.rstrip().endswith("stopped at step 2")
    assert "a log line" in capsys.readouterr().err

    fake_launcher(monkeypatch, [start, step, RunFailed(1, str(tmp_path), None, "out of memory")])
    out = io.StringIO()
    assert run_launched(config, json_events=True, out=out) == 1
    assert events_of(out.getvalue())[-1] == {"event": "run_failed", "step": 1, "run_dir": str(tmp_path),
                                              "checkpoint": None, "reason": "out of memory"}
    fake_launcher(monkeypatch, [start, step])  # the ranks died without a last word
    assert run_launched(config, json_events=False, out=io.StringIO()) == 1


def test_gpus_runs_one_rank_per_gpu_like_one_process(tiny_model, dataset, tmp_path):
    """``--gpus 2`` starts two ranks on this machine through mlx.launch (NCCL on CUDA; here the
    ring backend on the CPU stands in, MLX_LORA_GPUS_BACKEND) and trains as one process does."""
    one = RecordingReporter()
    train(tiny_config(tiny_model, dataset, tmp_path / "one", iters=3, **SETTINGS), one)
    events, err = finish(launch(flags(tiny_model, dataset, tmp_path / "two", iters=3, gpus=2, **SETTINGS),
                                MLX_LORA_GPUS_BACKEND="ring"))
    assert events and events[-1]["event"] == "run_finished", err[-3000:]
    assert started(events)["world_size"] == 2
    got = {e["step"]: e["loss"] for e in events if e["event"] == "step_report"}
    for step, loss in losses(one.events).items():
        assert got[step] == pytest.approx(loss, rel=1e-5), step


def test_the_gpus_launch_pins_one_gpu_per_rank_with_nccl(monkeypatch):
    from mlx_lora.cli import launch

    monkeypatch.setattr("mlx.core.cuda.is_available", lambda: True)
    monkeypatch.setenv("MLX_LORA_NCCL_PORT", "23456")
    argv = launch.launch_command(TrainConfig().replace(gpus=4), 7)
    head = argv[:argv.index("--")]
    assert head[head.index("-n") + 1] == "4" and head[head.index("--backend") + 1] == "nccl"
    assert head[head.index("--hosts") + 1] == "127.0.0.1" and head[head.index("--nccl-port") + 1] == "23456"
    assert "--gpus" in argv[argv.index("--"):] or "--gpus=4" in argv  # the ranks see the same config


def test_gpus_without_cuda_is_a_named_error_before_anything_starts(monkeypatch):
    from mlx_lora.cli import launch

    monkeypatch.setattr("mlx.core.cuda.is_available", lambda: False)
    monkeypatch.delenv("MLX_LORA_GPUS_BACKEND", raising=False)
    with pytest.raises(UserError, match=r"gpus \(run.gpus, --gpus\): 2 GPUs need MLX's CUDA backend"):
        launch.launch_command(TrainConfig().replace(gpus=2), 7)
    with pytest.raises(UserError, match="either gpus .* or hostfile"):
        TrainConfig().replace(gpus=2, hostfile="hosts.json")
