"""Run history read from run folders: summaries, curves, torn lines, trash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.run_history import adapter_choices, delete_run, list_runs, load_run_curves, run_config_path, summarize_run


def make_run(root: Path, name: str, events: list[dict], torn: bool = False, **settings) -> Path:
    run = root / name
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "checkpoints" / "step-2" / "adapters.safetensors").write_bytes(b"x")
    (run / "adapters.safetensors").write_bytes(b"x")
    TrainConfig().replace(model="demo", data="resources/datasets/pirate", **settings).save(run / "config.yaml")
    text = "".join(json.dumps(e) + "\n" for e in events)
    (run / "metrics.jsonl").write_text(text + ('{"event": "step_rep' if torn else ""))
    return run


EVENTS = [
    {"event": "run_started", "step": 0, "total_steps": 4, "model": "demo", "fine_tune_type": "lora"},
    {"event": "eval_report", "step": 0, "val_loss": 4.5},
    {"event": "step_report", "step": 1, "total_steps": 4, "loss": 4.0, "learning_rate": 1e-3, "trained_tokens": 40,
     "elapsed_s": 1.0},
    {"event": "step_report", "step": 2, "total_steps": 4, "loss": 3.0, "learning_rate": 5e-4, "trained_tokens": 80,
     "elapsed_s": 2.0},
    {"event": "eval_report", "step": 2, "val_loss": 3.5},
]


def test_a_finished_run_is_summarized(tmp_path):
    run = make_run(tmp_path, "a", EVENTS + [{"event": "run_finished", "step": 2, "elapsed_s": 2.5}], quantize_bits=4)
    summary = summarize_run(run)
    assert (summary.model, summary.dataset, summary.method, summary.status) == ("demo", "pirate", "qlora", "finished")
    assert (summary.steps_done, summary.total_steps, summary.tokens) == (2, 4, 80)
    assert summary.best_val_loss == 3.5  # the step-0 baseline is not "best"
    assert summary.last_train_loss == 3.0 and summary.duration_s == 2.5
    assert summary.checkpoints == ("final", "step-2")


def test_a_killed_run_is_incomplete_and_its_torn_line_skipped(tmp_path):
    run = make_run(tmp_path, "b", EVENTS, torn=True)
    assert summarize_run(run).status == "incomplete"
    curves = load_run_curves(run)
    assert curves["step"] == [1, 2] and curves["loss"] == [4.0, 3.0]
    assert curves["val_step"] == [0, 2] and curves["val_loss"] == [4.5, 3.5]


def test_list_runs_newest_first_and_ignores_other_folders(tmp_path):
    import os

    old = make_run(tmp_path, "old", EVENTS)
    new = make_run(tmp_path, "new", EVENTS + [{"event": "run_stopped", "step": 2}])
    os.utime(old / "config.yaml", (1_000, 1_000))
    (tmp_path / "not-a-run").mkdir()
    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["new", "old"]
    assert runs[0].status == "stopped"
    assert list_runs(tmp_path / "missing") == []


def test_delete_moves_to_trash_and_refuses_other_folders(tmp_path):
    run = make_run(tmp_path, "gone", EVENTS)
    assert run_config_path(run) == run / "config.yaml"
    target = delete_run(run)
    assert not run.exists() and (target / "metrics.jsonl").is_file()
    assert list_runs(tmp_path) == []  # the trash is not a run
    (tmp_path / "precious").mkdir()
    with pytest.raises(UserError):
        delete_run(tmp_path / "precious")
    assert adapter_choices(tmp_path / "precious") == ()


def test_a_preference_runs_reward_curves_are_read_back(tmp_path):
    events = EVENTS[:1] + [
        {"event": "eval_report", "step": 0, "val_loss": 0.6931, "reward_margin": 0.0, "reward_accuracy": 0.0},
        EVENTS[2],
        {"event": "eval_report", "step": 1, "val_loss": 0.5, "reward_margin": 0.25, "reward_accuracy": 0.75},
    ]
    curves = load_run_curves(make_run(tmp_path, "dpo", events))
    assert curves["reward_step"] == [0, 1] and curves["reward_margin"] == [0.0, 0.25]
    assert curves["reward_accuracy"] == [0.0, 0.75] and curves["val_loss"] == [0.6931, 0.5]
    plain = load_run_curves(make_run(tmp_path, "sft", EVENTS))
    assert plain["reward_step"] == [] and plain["val_step"] == [0, 2]
