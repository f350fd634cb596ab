"""AdaLoRA on the tiny model (2 layers × 7 linear layers = 14 adapted matrices): parameter
counts, the budget schedule, pruned singular values staying zero, the saved plain-LoRA
adapter giving the in-memory model's logits (chat, fuse), and an exact resume."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.methods.tensors.layers import AdaLoRALinear
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter, never_stop
from mlx_lora.run_folder import RunFolder, resume_config
from mlx_lora.train import RunStarted, train
from mlx_lora.methods.tensors.adalora import budget_at
from mlx_lora.run_events import AdapterRanks
from mlx_lora.train.distributed import World
from mlx_lora.train.loop import _Logged, _Trainer
from mlx_lora.train.prepare import prepare_model
from tests.core.test_train_helpers import losses, tiny_config, write_dataset
from tests.core.test_train_methods import LINEARS

MATRICES = 2 * len(LINEARS)  # 14
SETTINGS = dict(fine_tune_type="adalora", rank=4, adalora_target_rank=2, adalora_tinit=2, adalora_tfinal=6,
                adalora_delta_t=2, iters=16, learning_rate=1e-2)
TOKENS = mx.array([[1, 504, 2135, 314, 3580, 30, 216, 23, 32, 28, 1128, 13, 3076, 4]])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "persona", train=24, valid=6)


@pytest.fixture(scope="module")
def trained(tiny_model, dataset, tmp_path_factory):
    """A 16-step AdaLoRA run, kept in memory: (trainer, result, events)."""
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, dataset, tmp_path_factory.mktemp("runs") / "ada", **SETTINGS)
    trainer = _Trainer(config, _Logged(recorder), never_stop, World())
    result = trainer.run()
    return trainer, result, recorder.events


def logits(model) -> mx.array:
    model.eval()
    out = model(TOKENS)
    mx.eval(out)
    return out


def test_adalora_trains_p_lambda_q_on_every_chosen_matrix_and_starts_as_the_base(tiny_model):
    import mlx_lm

    p = prepare_model(TrainConfig().replace(model=str(tiny_model), fine_tune_type="adalora", rank=4, num_layers=-1))
    assert p.trainable_parameters == 2 * sum(4 * (i + o) + 4 for i, o in LINEARS.values()) == 8248
    q = p.model.layers[0].self_attn.q_proj
    assert isinstance(q, AdaLoRALinear) and q.lora_a.shape == (64, 4) and q.lora_b.shape == (4, 64)
    assert q.lora_e.shape == (4,) and not mx.any(q.lora_e).item()
    base, _ = mlx_lm.load(str(tiny_model))
    assert mx.allclose(logits(p.model), logits(base), atol=1e-5).item()  # λ = 0: the adapter starts as identity
    from mlx_lora.adapters import adapter_disabled

    q.lora_e = mx.ones((4,))
    assert not mx.allclose(logits(p.model), logits(base), atol=1e-4).item()
    with adapter_disabled(p.model):  # DPO's reference model is the base with the adapter switched off
        assert mx.allclose(logits(p.model), logits(base), atol=1e-5).item()


def test_the_loss_falls_and_the_total_rank_after_tfinal_is_the_budget(trained):
    trainer, result, events = trained
    curve = losses(events)
    assert result.status == "finished"
    assert np.mean([curve[s] for s in (14, 15, 16)]) < curve[1] - 0.5
    ranks = [e for e in events if isinstance(e, AdapterRanks)]
    assert len(ranks) == 1 and ranks[0].step == 16
    assert ranks[0].budget == 2 * MATRICES and ranks[0].total_rank == sum(ranks[0].ranks.values()) == 28
    assert len(ranks[0].ranks) == MATRICES and len(set(ranks[0].ranks.values())) > 1  # uneven: that is the point
    assert "AdaLoRA final ranks (total 28 of budget 28" in ranks[0].message
    # the run's adapter is a plain LoRA of the largest kept rank, with the ranks in its config
    config = RunFolder(result.run_dir).adapter()
    import json

    saved = json.loads((config / "adapter_config.json").read_text())
    assert saved["fine_tune_type"] == "lora" and saved["adalora"]["ranks"] == ranks[0].ranks
    assert saved["lora_parameters"]["rank"] == max(ranks[0].ranks.values())
    weights = mx.load(str(result.run_dir / "adapters.safetensors"))
    for path, rank in ranks[0].ranks.items():  # the columns past a module's rank are zero
        assert not mx.any(weights[f"{path}.lora_a"][:, rank:]).item(), path
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.fine_tune_type == "adalora"
    metrics = [line["event"] for line in RunFolder(result.run_dir).metrics()]
    assert metrics.index("adapter_ranks") < metrics.index("run_finished")


def test_the_budget_falls_on_the_cubic_schedule_and_pruned_values_stay_zero(trained):
    _, result, _ = trained
    folder = RunFolder(result.run_dir)

    def masks(step):
        state = folder.load_checkpoint(folder.checkpoints / f"step-{step}").method_state
        return state, {k: v for k, v in state.items() if k.startswith("adalora.mask.")}

    initial, target = 4 * MATRICES, 2 * MATRICES
    assert budget_at(4, initial, target, 2, 10) == 39  # 28 + 28 · (1 - 2/8)³
    _, at4 = masks(4)
    assert sum(int(m.sum().item()) for m in at4.values()) == 39
    state12, at12 = masks(12)
    state16, at16 = masks(16)  # pruning ended at step 16 - 6 = 10: the masks are fixed since
    assert sum(int(m.sum().item()) for m in at16.values()) == target
    for name, mask in at16.items():
        assert mx.array_equal(mask, at12[name]).item(), name
        path = name[len("adalora.mask."):]
        for state in (state12, state16):
            e = state[f"adalora.weight.{path}.lora_e"]
            assert not mx.any(mx.where(mask == 0, e, 0)).item(), path  # pruned λ are exactly 0
            assert mx.all(mx.where(mask == 1, e != 0, True)).item(), path  # kept ones still train


def test_the_saved_adapter_loads_for_chat_and_fuses_to_the_in_memory_model(trained, tiny_model):
    import mlx_lm

    from mlx_lora.adapters import apply_adapter, resolve_adapter
    from mlx_lora.export.fused import fused_model

    trainer, result, _ = trained
    expected = logits(trainer.prepared.model)
    base, _ = mlx_lm.load(str(tiny_model))
    assert not mx.allclose(logits(base), expected, atol=1e-3).item()  # the adapter changed something
    apply_adapter(base, result.run_dir)
    assert mx.allclose(logits(base), expected, atol=1e-4).item()
    fused, _, _ = fused_model(tiny_model, resolve_adapter(result.run_dir))
    assert mx.allclose(logits(fused), expected, atol=1e-4).item()
    loaded, _ = mlx_lm.load(str(tiny_model), adapter_path=str(result.run_dir))
    assert mx.allclose(logits(loaded), expected, atol=1e-4).item()


def test_resume_restores_the_masks_and_importance_and_continues_exactly(tiny_model, dataset, tmp_path):
    from mlx_lora.train import StepReport

    settings = {**SETTINGS, "save_every": 3}
    whole = RecordingReporter()
    straight = train(tiny_config(tiny_model, dataset, tmp_path / "straight", **settings), whole)
    first = RecordingReporter()
    stop = lambda: any(isinstance(e, StepReport) and e.step >= 7 for e in first.events)  # noqa: E731
    stopped = train(tiny_config(tiny_model, dataset, tmp_path / "resumed", **settings), first, stop)
    assert (stopped.status, stopped.step) == ("stopped", 7)  # mid-pruning (steps 3-10)
    second = RecordingReporter()
    resumed = train(resume_config(stopped.run_dir), second)
    expected, got = losses(whole.events), {**losses(first.events), **losses(second.events)}
    assert list(got) == list(expected)
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    assert second.of(AdapterRanks)[0].ranks == whole.of(AdapterRanks)[0].ranks
    a = mx.load(str(straight.run_dir / "adapters.safetensors"))
    b = mx.load(str(resumed.run_dir / "adapters.safetensors"))
    for name in a:
        assert mx.allclose(a[name], b[name], atol=1e-5).item(), name


def test_bad_adalora_settings_are_refused_naming_the_setting(tiny_model):
    with pytest.raises(UserError, match="adalora_target_rank.*at most rank"):
        TrainConfig().replace(fine_tune_type="adalora", rank=4, adalora_target_rank=8)
    with pytest.raises(UserError, match="adalora_tinit \\+ adalora_tfinal.*iters"):
        TrainConfig().replace(fine_tune_type="adalora", iters=20, adalora_tinit=10, adalora_tfinal=10)
    TrainConfig().replace(iters=20, adalora_tinit=10, adalora_tfinal=10)  # only checked for AdaLoRA
