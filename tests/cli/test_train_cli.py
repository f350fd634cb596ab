"""``mlx-lora train`` / ``eval``: JSON events on stdout, SIGTERM and SIGKILL then --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import RunFolder
from mlx_lora.train import train
from tests.core.test_train_helpers import losses, tiny_config, write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cli-data") / "persona", train=24, valid=4, test=4)


def flags(tiny_model, dataset, run_dir, **settings) -> list[str]:
    """The flags of :func:`tiny_config` for the same run."""
    config = tiny_config(tiny_model, dataset, run_dir, **settings)
    out = []
    for name, value in config.flat().items():
        if name == "resume" or value == "":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            out += [flag, *value]
        else:
            out += [flag, str(value)]
    return out


def events_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_events_are_the_only_thing_on_stdout(tiny_model, dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *flags(tiny_model, dataset, run_dir, iters=3, save_every=2), "--json-events"]) == 0
    out = capsys.readouterr().out
    events = events_of(out)  # every line parses
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "run_finished" and "run_started" in kinds
    assert [e["step"] for e in events if e["event"] == "step_report"] == [1, 2, 3]
    assert [e["step"] for e in events if e["event"] == "checkpoint_saved"] == [2, 3]

    assert main(["eval", "--run", str(run_dir), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["examples"] == 4 and result["perplexity"] > 1


def test_the_progress_lines_and_a_user_error(tiny_model, dataset, tmp_path, capsys):
    assert main(["train", *flags(tiny_model, dataset, tmp_path / "run", iters=2, steps_per_eval=2)]) == 0
    out = capsys.readouterr().out
    assert "16,384 trainable" in out and "step     2/2  loss" in out and "val loss" in out and "finished" in out
    assert main(["train", "--model", str(tiny_model), "--data", str(tmp_path / "missing"), "--json-events"]) == 2
    captured = capsys.readouterr()
    assert events_of(captured.out)[-1]["event"] == "run_failed"
    assert captured.err.startswith("error: ")


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlx_lora.cli.main", "train", *args, "--json-events"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen, kind: str) -> list[dict]:
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == kind:
            return events
    raise AssertionError(f"the trainer ended before {kind}: {proc.stderr.read()[-2000:]}")


def test_kill_9_then_resume_continues_exactly(tiny_model, dataset, tmp_path):
    settings = dict(iters=14, save_every=2, steps_per_eval=100, dropout=0.05)
    run_dir = tmp_path / "killed"
    proc = start(flags(tiny_model, dataset, run_dir, **settings))
    before = read_until(proc, "checkpoint_saved")
    proc.kill()  # SIGKILL: no handler runs, no checkpoint is written on the way out
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    checkpoint = RunFolder(run_dir).latest_checkpoint()
    saved_step = int(checkpoint.name.split("-")[1])
    assert saved_step >= 2

    resumed = subprocess.run([sys.executable, "-m", "mlx_lora.cli.main", "train", "--resume", str(run_dir),
                              "--json-events"], cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = events_of(resumed.stdout)
    started = next(e for e in after if e["event"] == "run_started")
    assert started["resumed"] and started["step"] == saved_step
    steps = [e["step"] for e in after if e["event"] == "step_report"]
    assert steps == list(range(saved_step + 1, 15))  # no batch replayed, none skipped
    assert after[-1]["event"] == "run_finished" and after[-1]["step"] == 14

    straight = RecordingReporter()
    train(tiny_config(tiny_model, dataset, tmp_path / "straight", **settings), straight)
    expected = losses(straight.events)
    got = {e["step"]: e["loss"] for e in before + after if e["event"] == "step_report"}
    for step in range(1, 15):
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    metrics = [line["step"] for line in RunFolder(run_dir).metrics() if line["event"] == "step_report"]
    assert metrics == list(range(1, 15))


def test_sigterm_stops_with_a_checkpoint_and_exit_status_0(tiny_model, dataset, tmp_path):
    run_dir = tmp_path / "terminated"
    proc = start(flags(tiny_model, dataset, run_dir, iters=200, save_every=100, steps_per_eval=100))
    events = read_until(proc, "step_report")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    events += events_of(out)
    assert proc.returncode == 0, err[-2000:]
    stopped = events[-1]
    assert stopped["event"] == "run_stopped" and stopped["step"] < 200
    assert stopped["checkpoint"].endswith(f"step-{stopped['step']}")
    assert f"--resume {run_dir}" in stopped["reason"]
    assert os.path.isfile(Path(stopped["checkpoint"]) / "optimizer.safetensors")


def test_relative_paths_are_stored_absolute_so_eval_and_resume_work_from_another_folder(
        tiny_model, dataset, tmp_path, monkeypatch, capsys):
    """``--model``, ``--data`` and ``--run-dir`` typed relative to one folder are written absolute
    into config.yaml; ``eval --run`` and ``--resume`` then work from a different folder."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    (here / "data").symlink_to(dataset)
    (here / "model").symlink_to(tiny_model)
    monkeypatch.chdir(here)
    args = [a for a in flags(tiny_model, dataset, "run", iters=2, save_every=2, steps_per_eval=2)]
    args[args.index("--model") + 1], args[args.index("--data") + 1] = "model", "data"
    assert main(["train", *args, "--json-events"]) == 0
    capsys.readouterr()
    saved = RunFolder(here / "run").raw_config()
    assert saved["model"]["model"] == str(here / "model") and saved["data"]["data"] == str(here / "data")
    assert saved["run"]["run_dir"] == str(here / "run")

    monkeypatch.chdir(elsewhere)
    assert main(["eval", "--run", str(here / "run"), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 4
    assert main(["train", "--resume", str(here / "run"), "--iters", "3", "--json-events"]) == 0
    assert events_of(capsys.readouterr().out)[-1]["event"] == "run_finished"
    assert not any(elsewhere.iterdir())  # nothing was written relative to the other folder


def test_hub_ids_and_demo_stay_as_typed(tmp_path, monkeypatch):
    from mlx_lora.config import TrainConfig

    monkeypatch.chdir(tmp_path)
    for model in ("demo", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert TrainConfig().replace(model=model).with_absolute_paths().model.model == model


def test_a_sigterm_stop_does_not_print_the_ctrl_c_hint(capsys):
    """The app stops its trainer with SIGTERM; its log must not say "Ctrl-C again"."""
    from mlx_lora.cli.reporting import StopFlag

    flag = StopFlag()
    flag._on_signal(signal.SIGTERM, None)
    assert flag() and "Ctrl-C" not in capsys.readouterr().err
    flag = StopFlag()
    flag._on_signal(signal.SIGINT, None)
    assert "Ctrl-C again" in capsys.readouterr().err
