"""``train()`` end to end on the tiny model: the loss falls, the run folder is complete and
loads in mlx-lm, resume is exact, stopping is prompt, NaN never reaches a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import RunFolder, resume_config
from mlx_lora.train import (
    CheckpointSaved,
    EvalReport,
    RunFailed,
    RunFinished,
    RunStarted,
    RunStopped,
    StepReport,
    train,
)
from mlx_lora.train.evaluate import MaskedLoss, dataset_loss, evaluate_run
from tests.core.test_train_helpers import losses, tiny_config, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "persona", train=24, valid=6, test=4)


@pytest.fixture(scope="module")
def finished_run(tiny_model, dataset, tmp_path_factory):
    """One ordinary 12-step run, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, dataset, run_dir, iters=12, val_batches=-1)
    result = train(config, recorder)
    return config, result, recorder.events


def test_the_loss_falls(finished_run):
    _, result, events = finished_run
    curve = losses(events)
    assert result.status == "finished" and result.step == 12
    assert list(curve) == list(range(1, 13))
    assert np.mean([curve[s] for s in (10, 11, 12)]) < curve[1] - 1.0
    evals = [e for e in events if isinstance(e, EvalReport)]
    assert [e.step for e in evals] == [0, 4, 8, 12]
    assert evals[-1].val_loss < evals[0].val_loss - 1.0


def test_events_come_in_order_with_what_a_person_needs(finished_run):
    config, result, events = finished_run
    started = events[[type(e) for e in events].index(RunStarted)]
    assert (started.train_examples, started.valid_examples, started.test_examples) == (24, 6, 4)
    assert started.trainable_parameters == 16384 and started.total_steps == 12
    assert started.train_tokens > started.trained_tokens_per_epoch > 0
    assert started.steps_per_epoch == 12 and 0 <= started.padding_fraction < 0.1
    assert isinstance(events[-1], RunFinished) and events[-1].reason == "completed"
    assert sum(isinstance(e, (RunFinished, RunStopped, RunFailed)) for e in events) == 1
    report = [e for e in events if isinstance(e, StepReport)][-1]
    assert report.trained_tokens > 0 and report.tokens_per_second > 0 and report.eta_s == 0
    assert report.peak_memory_gb > 0 and report.learning_rate == config.optimizer.learning_rate
    assert json.loads(report.to_json())["event"] == "step_report"


def test_the_run_folder_holds_the_config_metrics_checkpoints_and_best(finished_run):
    config, result, events = finished_run
    run = RunFolder(result.run_dir)
    assert TrainConfig.from_yaml(run.config_path) == config
    lines = run.metrics()
    assert [line["event"] for line in lines] == [e.kind for e in events if hasattr(e, "step")]
    assert all("step" in line for line in lines)
    assert run.checkpoint_steps() == [4, 8, 12]
    for step in (4, 8, 12):
        files = {p.name for p in (run.checkpoints / f"step-{step}").iterdir()}
        assert files == {"adapters.safetensors", "adapter_config.json", "optimizer.safetensors",
                         "trainer_state.json"}
    assert run.latest_path.read_text().strip() == "checkpoints/step-12"
    state = json.loads((run.checkpoints / "step-8" / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["data"]["epoch"] == 0 and state["data"]["batch"] == 8
    assert len(state["data"]["fingerprint"]) == 16
    best = [e for e in events if isinstance(e, EvalReport) and e.best][-1]
    assert json.loads((run.best / "trainer_state.json").read_text())["step"] == best.step
    assert [e.step for e in events if isinstance(e, CheckpointSaved)] == [4, 8, 12]
    assert not list(run.path.rglob("*.tmp*"))  # no temporary file left behind


def test_the_adapter_loads_in_mlx_lm_and_gives_the_runs_validation_loss(finished_run, tiny_model):
    import mlx_lm

    from mlx_lora.train.batches import encode_records
    from mlx_lora.data.dataset import load_splits

    config, result, events = finished_run
    model, tokenizer = mlx_lm.load(str(tiny_model), adapter_path=str(result.run_dir))
    assert type(model.layers[0].mlp.down_proj).__name__ == "LoRALinear"
    splits = load_splits(config.data.data)
    valid = encode_records(tokenizer, splits.valid, True, 128, "truncate").examples
    loss, _ = dataset_loss(model, MaskedLoss(), valid, 2, -1, seed=0)
    final_eval = [e for e in events if isinstance(e, EvalReport)][-1]
    assert loss == pytest.approx(final_eval.val_loss, rel=1e-5)
    assert evaluate_run(result.run_dir, split="valid").loss == pytest.approx(final_eval.val_loss, rel=1e-5)
    test = evaluate_run(result.run_dir, split="test")
    assert test.examples == 4 and test.perplexity == pytest.approx(np.exp(test.loss))


def stop_after(step: int):
    """A reporter and should_stop that ask to stop once ``step`` is reported."""
    recorder = RecordingReporter()
    return recorder, lambda: any(isinstance(e, StepReport) and e.step >= step for e in recorder.events)


def test_resume_continues_exactly_where_the_stop_left_off(tiny_model, dataset, tmp_path):
    settings = dict(iters=8, dropout=0.1, grad_accumulation_steps=2, lr_schedule="cosine", warmup_steps=2,
                    save_every=3, steps_per_eval=4)
    whole = RecordingReporter()
    straight = train(tiny_config(tiny_model, dataset, tmp_path / "straight", **settings), whole)

    first, stop = stop_after(5)
    stopped = train(tiny_config(tiny_model, dataset, tmp_path / "resumed", **settings), first, stop)
    assert (stopped.status, stopped.step) == ("stopped", 5)
    assert isinstance(first.events[-1], RunStopped) and first.events[-1].checkpoint.endswith("step-5")

    second = RecordingReporter()
    resumed = train(resume_config(stopped.run_dir), second)
    started = second.of(RunStarted)[0]
    assert started.resumed and started.step == 5
    assert not any("data changed" in note for note in started.notes)
    assert list(losses(second.events)) == [6, 7, 8]  # no batch replayed
    assert (resumed.status, resumed.step) == ("finished", 8)

    expected, got = losses(whole.events), {**losses(first.events), **losses(second.events)}
    assert list(got) == list(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    assert [e.val_loss for e in second.of(EvalReport)] == pytest.approx(
        [e.val_loss for e in whole.of(EvalReport) if e.step > 5], abs=1e-5)
    a = mx.load(str(straight.run_dir / "adapters.safetensors"))
    b = mx.load(str(resumed.run_dir / "adapters.safetensors"))
    for name in a:
        assert mx.allclose(a[name], b[name], atol=1e-5).item(), name
    reports = [line["step"] for line in RunFolder(resumed.run_dir).metrics() if line["event"] == "step_report"]
    assert reports == list(range(1, 9))


def test_a_stop_request_drops_the_unfinished_step_and_checkpoints_the_last_one(tiny_model, dataset, tmp_path):
    calls = []

    def should_stop() -> bool:  # asked before each of the 3 micro-batches of a step
        calls.append(1)
        return len(calls) >= 8  # the 2nd micro-batch of step 3

    recorder = RecordingReporter()
    no_validation = write_dataset(tmp_path / "data", train=24, valid=0)
    result = train(tiny_config(tiny_model, no_validation, tmp_path / "run", grad_accumulation_steps=3,
                               valid_ratio=0.0, iters=10), recorder, should_stop)
    assert "no validation set" in " ".join(recorder.of(RunStarted)[0].notes)
    assert len(calls) == 8  # nothing more was computed once it said stop
    assert (result.status, result.step) == ("stopped", 2)
    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["data"]["batch"] == 6  # the dropped step's batches come again
    assert "--resume" in recorder.events[-1].reason


def test_a_diverging_run_fails_without_saving_a_nan(tiny_model, dataset, tmp_path):
    # float16 with an absurd learning rate overflows on the second step
    recorder = RecordingReporter()
    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", compute_dtype="float16",
                               learning_rate=1e3, save_every=1), recorder)
    assert (result.status, result.step) == ("failed", 1)
    failed = recorder.events[-1]
    assert isinstance(failed, RunFailed)
    assert "diverged at step 2" in failed.reason and "learning-rate" in failed.reason
    assert failed.checkpoint.endswith("step-1")
    run = RunFolder(result.run_dir)
    assert run.checkpoint_steps() == [1] and run.latest_checkpoint().name == "step-1"
    for path in run.path.rglob("*.safetensors"):
        for name, value in mx.load(str(path)).items():
            if mx.issubdtype(value.dtype, mx.floating):
                assert mx.all(mx.isfinite(value)).item(), (path, name)


def test_early_stopping_ends_the_run_when_validation_stops_improving(tiny_model, dataset, tmp_path):
    recorder = RecordingReporter()
    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", iters=12, steps_per_eval=2,
                               early_stopping_patience=1, early_stopping_min_delta=100.0), recorder)
    assert (result.status, result.step) == ("finished", 4)
    assert result.reason.startswith("early stopping") and result.best_step == 2
    assert (RunFolder(result.run_dir).best / "adapters.safetensors").is_file()


def test_epochs_set_the_number_of_steps_and_an_immediate_stop_saves_nothing(tiny_model, dataset, tmp_path):
    recorder = RecordingReporter()
    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", epochs=2, grad_accumulation_steps=3),
                   recorder, lambda: True)
    started = recorder.of(RunStarted)[0]
    assert started.total_steps == 8 and started.steps_per_epoch == 4  # 12 batches of 2, 3 per step
    assert (result.status, result.step, result.checkpoint) == ("stopped", 0, None)
    assert recorder.events[-1].checkpoint is None


@pytest.mark.parametrize("settings, kind", [
    ({"fine_tune_type": "dora", "optimizer": "adamw", "weight_decay": 0.01}, "DoRALinear"),
    ({"fine_tune_type": "full", "num_layers": 1}, "Linear"),
    ({"quantize_bits": 8, "quantize_group_size": 32, "lora_plus_ratio": 16.0, "rslora": True}, "LoRALinear"),
])
def test_every_method_trains_and_loads_in_mlx_lm(tiny_model, dataset, tmp_path, settings, kind):
    import mlx_lm

    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", iters=2, **settings))
    assert result.status == "finished"
    model, _ = mlx_lm.load(str(tiny_model), adapter_path=str(result.run_dir))
    assert type(model.layers[-1].self_attn.q_proj).__name__ == kind


def test_the_default_run_folder_is_named_after_time_model_and_dataset(tiny_model, dataset):
    from mlx_lora import paths
    from mlx_lora.run_folder import default_run_dir

    folder = default_run_dir(tiny_config(tiny_model, dataset, Path("unused")).replace(run_dir=""))
    assert folder.parent == paths.runs_dir()
    assert folder.name.endswith("-tiny-llama-persona") and folder.name[:8].isdigit()


def test_a_used_run_folder_or_a_broken_dataset_is_refused_with_a_run_failed_event(tiny_model, dataset, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    recorder = RecordingReporter()
    with pytest.raises(UserError, match="not empty.*--resume"):
        train(tiny_config(tiny_model, dataset, used), recorder)
    assert isinstance(recorder.events[-1], RunFailed)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(UserError, match="broken.jsonl"):
        train(tiny_config(tiny_model, broken, tmp_path / "run2"), RecordingReporter())


def test_only_the_latest_checkpoints_are_kept(tiny_model, dataset, tmp_path):
    result = train(tiny_config(tiny_model, dataset, tmp_path / "run", iters=5, save_every=1, keep_checkpoints=2,
                               steps_per_eval=100))
    run = RunFolder(result.run_dir)
    assert run.checkpoint_steps() == [4, 5]
    assert run.latest_checkpoint().name == "step-5"
    assert json.loads((run.best / "trainer_state.json").read_text())["step"] == 5
