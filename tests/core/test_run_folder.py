"""The run folder read back: finding the run above an adapter, its config (validated, and
raw for the history), its status, its adapters and the ``latest`` pointer — and that
reading it never imports MLX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_lora.adapters import resolve_adapter
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.run_folder import RunFolder
from mlx_lora.run_history import list_runs

REPO = Path(__file__).resolve().parents[2]
ADAPTER_CONFIG = {"fine_tune_type": "lora", "num_layers": 2, "model": "demo",
                  "lora_parameters": {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": ["self_attn.q_proj"]}}


def make_checkpoint(run: Path, step: int) -> Path:
    """A complete checkpoint as the trainer leaves it (the bytes are never loaded here)."""
    folder = run / "checkpoints" / f"step-{step}"
    folder.mkdir(parents=True)
    (folder / "adapters.safetensors").write_bytes(f"step {step}".encode())
    (folder / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG))
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
    return folder


def make_run(tmp_path: Path, name: str = "run", steps: tuple[int, ...] = (2, 4), final: bool = True,
             best: bool = True, latest: int | None = None) -> Path:
    run = tmp_path / name
    run.mkdir()
    TrainConfig().replace(data="resources/datasets/pirate", rank=4).save(run / "config.yaml")
    (run / "metrics.jsonl").write_text(json.dumps({"event": "run_started", "step": 0}) + "\n")
    (run / "adapter_config.json").write_text(json.dumps(ADAPTER_CONFIG))
    for step in steps:
        make_checkpoint(run, step)
    if final:
        (run / "adapters.safetensors").write_bytes(b"final")
    if best:
        (run / "best").mkdir()
        (run / "best" / "adapters.safetensors").write_bytes(b"best")
    if latest is not None:
        (run / "latest").write_text(f"checkpoints/step-{latest}\n")
    return run


def test_find_the_run_above_an_adapter_folder_or_file(tmp_path):
    run = make_run(tmp_path)
    for inside in (run, run / "best", run / "checkpoints" / "step-4", run / "checkpoints" / "step-2",
                   run / "best" / "adapters.safetensors", run / "checkpoints" / "step-4" / "adapters.safetensors"):
        found = RunFolder.find(inside)
        assert found is not None and found.path == run.resolve(), inside
    bare = tmp_path / "bare" / "best"  # a folder named best with no run above it
    bare.mkdir(parents=True)
    assert RunFolder.find(bare) is None and RunFolder.find(tmp_path / "bare") is None
    assert RunFolder.find(run / "checkpoints") is None  # not an adapter folder of the run


def test_the_config_is_validated_and_a_broken_one_names_its_file(tmp_path):
    run = make_run(tmp_path)
    folder = RunFolder(run)
    assert folder.config().adapter.rank == 4
    (run / "config.yaml").write_text("adapter:\n  rank: [4\n")  # torn by a kill
    with pytest.raises(UserError, match="not valid YAML") as torn:
        folder.config()
    assert str(folder.config_path) in str(torn.value)
    (run / "config.yaml").write_text("adapter:\n  rank: -3\n")  # a bad value
    with pytest.raises(UserError, match="rank") as bad:
        folder.config()
    assert str(folder.config_path) in str(bad.value)
    (run / "config.yaml").write_text("adapter:\n  rankk: 4\n")  # an unknown (older or newer) setting
    with pytest.raises(UserError, match="rankk") as unknown:
        folder.config()
    assert str(folder.config_path) in str(unknown.value)
    assert folder.raw_config() == {"adapter": {"rankk": 4}}  # still readable for display
    (run / "config.yaml").unlink()
    with pytest.raises(UserError, match="not a run folder"):
        folder.config()
    assert folder.raw_config() == {}


def test_the_history_lists_a_run_whose_config_is_torn(tmp_path):
    run = make_run(tmp_path)
    (run / "config.yaml").write_text("model: {model: de")
    (summary,) = list_runs(tmp_path)
    assert summary.path == run and summary.status == "incomplete" and summary.model == ""
    assert summary.checkpoints == ("final", "best", "step-4", "step-2")


@pytest.mark.parametrize("last, status", [("run_finished", "finished"), ("run_stopped", "stopped"),
                                          ("run_failed", "failed"), ("step_report", "incomplete")])
def test_status_comes_from_the_last_terminal_event(tmp_path, last, status):
    run = make_run(tmp_path)
    events = [{"event": "run_started", "step": 0}, {"event": "run_failed", "step": 1},
              {"event": "run_started", "step": 1, "resumed": True}, {"event": last, "step": 2}]
    if last == "step_report":  # a resumed run still going: its earlier failure is not its status
        events = events[2:]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "run_fin')
    folder = RunFolder(run)
    assert folder.status() == status
    assert [e["event"] for e in folder.metrics()] == [e["event"] for e in events]  # the torn line skipped


def test_adapters_by_choice_and_a_clear_error_when_absent(tmp_path):
    run = make_run(tmp_path, final=False, best=False, latest=2)
    folder = RunFolder(run)
    assert folder.adapter_choices() == ("step-4", "step-2")
    assert folder.adapter("step-4") == run.resolve() / "checkpoints" / "step-4"
    assert folder.adapter("latest") == run.resolve() / "checkpoints" / "step-2"  # the pointer, not the highest
    for absent in ("final", "best", "step-9"):
        with pytest.raises(UserError, match="no adapter there"):
            folder.adapter(absent)
    with pytest.raises(UserError, match="not an adapter of a run"):
        folder.adapter("newest")
    assert folder.has_checkpoint()
    assert not RunFolder(make_run(tmp_path, "fresh", steps=(), final=False, best=False)).has_checkpoint()


def test_resolve_adapter_follows_the_latest_pointer_not_the_highest_step(tmp_path):
    """A run killed mid-save (or resumed from an older checkpoint) can hold a step-N above the
    one ``latest`` names; the adapter of a run without final or best adapter is latest's."""
    run = make_run(tmp_path, steps=(2, 4), final=False, best=False, latest=2)
    files = resolve_adapter(run)
    assert files.weights == run.resolve() / "checkpoints" / "step-2" / "adapters.safetensors"
    assert files.run_dir == run.resolve() and files.label == "run/step-2"
    assert files.base_model() == "demo" and files.run_config().adapter.rank == 4
    (run / "latest").unlink()  # no pointer: the newest complete checkpoint
    assert resolve_adapter(run).weights.parent.name == "step-4"
    best = make_run(tmp_path, "with-best", final=False, latest=4)
    assert resolve_adapter(best).weights.parent.name == "best"  # best/ still comes before a checkpoint


def test_listing_runs_and_resolving_an_adapter_do_not_import_mlx(tmp_path):
    make_run(tmp_path, "a", latest=4)
    make_run(tmp_path, "b", final=False)
    code = ("import sys\n"
            "from mlx_lora.run_folder import RunFolder\n"
            "from mlx_lora.run_history import list_runs, load_run_curves\n"
            f"runs = list_runs({str(tmp_path)!r})\n"
            "assert [r.name for r in runs] and all(r.checkpoints for r in runs), runs\n"
            "for run in runs:\n"
            "    folder = RunFolder(run.path)\n"
            "    folder.config(); folder.status(); folder.adapter_choices(); folder.latest_checkpoint()\n"
            "    load_run_curves(run.path)\n"
            "from mlx_lora.adapters import resolve_adapter\n"  # what the Chat and Export pages resolve
            "assert resolve_adapter(runs[0].path).run_config() is not None\n"
            "print('mlx.core' in sys.modules, 'mlx_lm' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
