"""ReLoRA on the tiny model: a merge keeps the model's function and resets the optimiser,
the learning rate re-warms, merges are events in metrics.jsonl, resume across a merge
is exact, and the saved adapter (merged deltas + current adapter) is the in-memory model."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter, never_stop
from mlx_lora.run_folder import RunFolder, resume_config
from mlx_lora.train import StepReport, train
from mlx_lora.train.batches import Example, make_batch
from mlx_lora.train.evaluate import MaskedLoss
from mlx_lora.run_events import AdapterMerged
from mlx_lora.train.distributed import World
from mlx_lora.train.loop import _Logged, _Trainer
from mlx_lora.train.prepare import prepare_model
from mlx_lora.train.optim import Optimizer, learning_rate_at
from mlx_lora.methods.tensors.relora import ReLoRAHook
from tests.core.test_train_helpers import losses, tiny_config, write_dataset

SETTINGS = dict(relora_every=4, relora_warmup=2, iters=12, rank=4)
TOKENS = mx.array([[1, 504, 2135, 314, 3580, 30, 216, 23, 32, 28, 1128, 13, 3076, 4]])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "persona", train=24, valid=6)


@pytest.fixture(scope="module")
def trained(tiny_model, dataset, tmp_path_factory):
    """A 12-step ReLoRA run (merges after steps 4 and 8), kept in memory: (trainer, result, events)."""
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, dataset, tmp_path_factory.mktemp("runs") / "re", **SETTINGS)
    trainer = _Trainer(config, _Logged(recorder), never_stop, World())
    return trainer, trainer.run(), recorder.events


def logits(model) -> mx.array:
    model.eval()
    out = model(TOKENS)
    mx.eval(out)
    return out


def test_a_merge_keeps_the_function_restarts_the_adapter_and_resets_the_optimizer(tiny_model):
    config = TrainConfig().replace(model=str(tiny_model), num_layers=-1, rank=4, relora_every=2, relora_warmup=1,
                                   learning_rate=1e-2)
    model = prepare_model(config).model
    optimizer = Optimizer(config)
    example = Example(tuple(range(5, 25)), (False,) * 5 + (True,) * 15)
    for _ in range(2):  # two updates: B is no longer zero, Adam has moments
        _, grads = nn.value_and_grad(model, MaskedLoss())(model, *map(mx.array, make_batch([example], [0])))
        optimizer.inner.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
    q = model.layers[0].self_attn.q_proj
    old_a, old_w = q.lora_a, q.linear.weight
    assert mx.any(q.lora_b).item() and int(optimizer.state["step"].item()) == 2
    before = logits(model)
    events = RecordingReporter()
    hook = ReLoRAHook(model, optimizer, every=2, total_steps=10, seed=0, emit=events.emit)
    hook.after_update(1, grads)
    assert not events.events  # not a merge step
    hook.after_update(2, grads)
    assert mx.allclose(logits(model), before, atol=1e-5).item()  # merged + fresh adapter = same function
    assert not mx.any(q.lora_b).item() and not mx.allclose(q.lora_a, old_a).item()
    assert not mx.allclose(q.linear.weight, old_w).item()
    assert int(optimizer.state["step"].item()) == 0
    moments = [v for k, v in tree_flatten(optimizer.state) if k.rsplit(".", 1)[-1] in ("m", "v")]
    assert moments and all(not mx.any(v).item() for v in moments)
    assert [(e.step, e.merge_index) for e in events.events] == [(2, 1)]
    hook.after_update(10, grads)  # the run's last step: no merge (a restart would train nothing)
    assert len(events.events) == 1


def test_the_learning_rate_re_warms_after_each_merge(tiny_model):
    config = TrainConfig().replace(learning_rate=1e-3, lr_schedule="constant", warmup_steps=2, relora_every=4,
                                   relora_warmup=2)
    rates = [learning_rate_at(step, config, 12) for step in range(1, 13)]
    assert rates == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 1e-3, 1e-3, 1e-3])


def test_the_loss_falls_and_merges_are_events_in_the_metrics(trained):
    trainer, result, events = trained
    curve = losses(events)
    assert result.status == "finished"
    assert np.mean([curve[s] for s in (10, 11, 12)]) < curve[1] - 1.0
    assert [(e.step, e.merge_index) for e in events if isinstance(e, AdapterMerged)] == [(4, 1), (8, 2)]
    merged = [line for line in RunFolder(result.run_dir).metrics() if line["event"] == "adapter_merged"]
    assert [(m["step"], m["merge_index"]) for m in merged] == [(4, 1), (8, 2)]
    assert "merged into the base weights and restarted" in merged[0]["message"]
    reports = {e.step: e.learning_rate for e in events if isinstance(e, StepReport)}
    assert reports[5] == pytest.approx(reports[4] / 2) and reports[6] == pytest.approx(reports[4])
    saved = json.loads((result.run_dir / "adapter_config.json").read_text())
    assert saved["relora"] == {"merges": 2, "every": 4, "adapter_rank": 4}
    assert saved["fine_tune_type"] == "lora" and saved["lora_parameters"]["rank"] == 12
    from mlx_lora.run_history import summarize_run

    assert summarize_run(result.run_dir).method == "relora"  # the Runs page's method column


def test_the_saved_adapter_is_the_in_memory_model_for_chat_fuse_and_peft(trained, tiny_model, tmp_path):
    import mlx_lm

    from mlx_lora.adapters import apply_adapter, resolve_adapter
    from mlx_lora.export.fused import fused_model
    from mlx_lora.export.peft_export import dense_deltas, write_peft

    trainer, result, _ = trained
    expected = logits(trainer.prepared.model)
    base, _ = mlx_lm.load(str(tiny_model))
    assert not mx.allclose(logits(base), expected, atol=1e-3).item()
    apply_adapter(base, result.run_dir)
    assert mx.allclose(logits(base), expected, atol=1e-4).item()
    fused, _, _ = fused_model(tiny_model, resolve_adapter(result.run_dir))
    assert mx.allclose(logits(fused), expected, atol=1e-4).item()
    # PEFT's convention alone (numpy) gives the in-memory merged weights + the current adapter
    write_peft(resolve_adapter(result.run_dir), tmp_path, "tiny")
    q = trainer.prepared.model.layers[1].self_attn.q_proj
    raw, _ = mlx_lm.load(str(tiny_model))
    name = "model.layers.1.self_attn.q_proj.weight"
    weights = {k: np.array(v) for k, v in tree_flatten(raw.parameters()) if k.endswith("_proj.weight")}
    peft = dense_deltas(tmp_path, weights)[name]
    in_memory = q.linear.weight + (q.scale * q.lora_b.T) @ q.lora_a.T
    assert np.allclose(peft, np.array(in_memory), atol=1e-5)


def test_resume_across_a_merge_is_exact(tiny_model, dataset, tmp_path):
    settings = {**SETTINGS, "save_every": 5, "dropout": 0.1}
    whole = RecordingReporter()
    straight = train(tiny_config(tiny_model, dataset, tmp_path / "straight", **settings), whole)
    first = RecordingReporter()
    stop = lambda: any(isinstance(e, StepReport) and e.step >= 6 for e in first.events)  # noqa: E731
    stopped = train(tiny_config(tiny_model, dataset, tmp_path / "resumed", **settings), first, stop)
    assert (stopped.status, stopped.step) == ("stopped", 6)  # one merge (step 4) behind it
    second = RecordingReporter()
    resumed = train(resume_config(stopped.run_dir), second)
    assert [e.step for e in second.of(AdapterMerged)] == [8]
    expected, got = losses(whole.events), {**losses(first.events), **losses(second.events)}
    assert list(got) == list(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    a = mx.load(str(straight.run_dir / "adapters.safetensors"))
    b = mx.load(str(resumed.run_dir / "adapters.safetensors"))
    for name in a:
        assert mx.allclose(a[name], b[name], atol=1e-5).item(), name
    merged = [line["step"] for line in RunFolder(resumed.run_dir).metrics() if line["event"] == "adapter_merged"]
    assert merged == [4, 8]


def test_relora_needs_plain_lora_and_a_full_precision_base(tiny_model, monkeypatch):
    with pytest.raises(UserError, match="relora_every.*fine_tune_type dora"):
        TrainConfig().replace(fine_tune_type="dora", relora_every=10)
    with pytest.raises(UserError, match="relora_every.*DPO's reference model"):
        TrainConfig().replace(objective="dpo", relora_every=10)
    with pytest.raises(UserError, match="relora_warmup.*less than relora_every"):
        TrainConfig().replace(relora_every=4, relora_warmup=4)
    # on a GPU a quantised base stays quantised for LoRA, but ReLoRA dequantises it (and says so)
    from mlx_lora import backend

    monkeypatch.setattr(backend, "device_kind", lambda: "gpu")
    config = TrainConfig().replace(model=str(tiny_model), quantize_bits=4, quantize_group_size=32,
                                   compute_dtype="float32", relora_every=10)
    p = prepare_model(config)
    assert any("for ReLoRA" in note for note in p.notes)
    assert isinstance(p.model.layers[0].self_attn.q_proj.linear, nn.Linear)
