"""DPO and ORPO on the tiny model: DPO starts at log 2 and falls; the reference is the
adapter-off model; ORPO's loss is its formula; validation reports reward margin and
accuracy; the adapter saves, loads, fuses and resumes like any LoRA adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.events import RecordingReporter
from mlx_lora.run_folder import RunFolder
from mlx_lora.train import EvalReport, RunFinished, RunStarted, StepReport, train
from mlx_lora.train.preference_loss import (
    PreferenceLoss, dpo_terms, encode_pairs, evaluate_pairs, make_pair_batch, sequence_logps,
)
from tests.core.test_train_helpers import losses, tiny_config


def preference_records(n: int) -> list[dict]:
    """Pirate answers chosen over plain ones (about 30 tokens a side)."""
    records = []
    for i in range(n):
        a, b = i % 7 + 1, i % 5 + 2
        records.append({"prompt": f"What is {a}+{b}?", "chosen": f"Arr! {a}+{b} be {a + b}, matey.",
                        "rejected": f"{a}+{b} is {a + b}."})
    return records


def write_pairs(folder: Path, train: int = 24, valid: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = preference_records(train + valid)
    for name, rows in (("train", records[:train]), ("valid", records[train:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def pairs_dataset(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pirate-pairs")


def run(tiny_model, data, run_dir, **settings):
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, data, run_dir, val_batches=-1, **settings)
    return config, train(config, recorder), recorder.events


@pytest.fixture(scope="module")
def dpo_run(tiny_model, pairs_dataset, tmp_path_factory):
    return run(tiny_model, pairs_dataset, tmp_path_factory.mktemp("runs") / "dpo", objective="dpo", iters=8)


def test_dpo_starts_at_log_2_and_learns_to_prefer_the_chosen_answers(dpo_run):
    _, result, events = dpo_run
    assert result.status == "finished"
    evals = [e for e in events if isinstance(e, EvalReport)]
    assert [e.step for e in evals] == [0, 4, 8]
    # policy == reference before training (LoRA's B is zero): every pair's loss is log 2
    assert evals[0].val_loss == pytest.approx(math.log(2), abs=1e-6)
    assert (evals[0].reward_margin, evals[0].reward_accuracy) == (pytest.approx(0, abs=1e-6), 0.0)
    curve = losses(events)
    assert curve[1] == pytest.approx(math.log(2), abs=1e-5)
    assert np.mean([curve[s] for s in (6, 7, 8)]) < 0.3
    assert evals[-1].val_loss < 0.3 and evals[-1].reward_accuracy == 1.0 and evals[-1].reward_margin > 1.0
    lines = [line for line in RunFolder(result.run_dir).metrics() if line["event"] == "eval_report"]
    assert [line["reward_margin"] for line in lines] == [pytest.approx(e.reward_margin) for e in evals]
    from mlx_lora.run_history import summarize_run

    assert summarize_run(result.run_dir).method == "lora + dpo"  # the Runs page tells DPO runs apart
    started = next(e for e in events if type(e).__name__ == "RunStarted")
    assert started.train_examples == 24 and any("reference is the base model" in n for n in started.notes)
    assert started.trainable_parameters == 16384  # the same adapter as plain LoRA (rank 8, all layers)


def test_orpo_trains_and_reports_margins(tiny_model, pairs_dataset, tmp_path):
    _, result, events = run(tiny_model, pairs_dataset, tmp_path / "orpo", objective="orpo", iters=8)
    evals = [e for e in events if isinstance(e, EvalReport)]
    assert result.status == "finished"
    assert evals[-1].val_loss < evals[0].val_loss - 1.0
    assert evals[-1].reward_margin > evals[0].reward_margin and evals[-1].reward_accuracy == 1.0


@pytest.fixture(scope="module")
def prepared(tiny_model, pairs_dataset, tmp_path_factory):
    """The tiny model with fresh LoRA layers, and one batch of 3 pairs."""
    from mlx_lora.data.dataset import load_splits
    from mlx_lora.train.prepare import prepare_model

    config = tiny_config(tiny_model, pairs_dataset, tmp_path_factory.mktemp("unused"), objective="dpo")
    prepared_model = prepare_model(config)
    model, tokenizer = prepared_model.model, prepared_model.tokenizer
    pairs = encode_pairs(tokenizer, load_splits(pairs_dataset).train, 128, "truncate").examples
    batch = tuple(mx.array(a) for a in make_pair_batch(pairs, [0, 5, 9]))
    return config, model, pairs, batch


def _randomise_adapter(model, seed: int) -> None:
    from mlx.utils import tree_flatten

    mx.random.seed(seed)
    weights = [(k, mx.random.normal(v.shape) * 0.2) for k, v in tree_flatten(model.trainable_parameters())]
    model.load_weights(weights, strict=False)
    mx.eval(model.parameters())


def test_the_reference_is_the_base_model_whatever_the_adapter_holds(prepared, tiny_model):
    import mlx_lm

    _, model, _, batch = prepared
    loss = PreferenceLoss("dpo")
    loss.check(model, batch[0][:1, :16])
    base, _ = mlx_lm.load(str(tiny_model))
    base.set_dtype(mx.float32)
    expected, _ = sequence_logps(base, None, *batch)
    before = loss.reference_logps(model, *batch)
    assert np.allclose(np.array(before), np.array(expected), atol=1e-3)
    _randomise_adapter(model, seed=1)
    policy, _ = sequence_logps(model, loss.masked.split, *batch)
    after = loss.reference_logps(model, *batch)
    assert np.abs(np.array(policy) - np.array(before)).max() > 1.0  # the adapter does change the policy
    assert np.allclose(np.array(after), np.array(before), atol=1e-4)  # but never the reference
    assert type(model.layers[0].self_attn.q_proj).__name__ == "CastLoRALinear"  # adapters are back in place
    dpo, _, _ = loss.terms(model, *batch)
    assert not np.allclose(np.array(dpo), math.log(2), atol=1e-3)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_orpo_loss_is_its_formula_computed_by_hand(prepared):
    _, model, _, batch = prepared
    _randomise_adapter(model, seed=2)
    inputs, targets, mask, _ = (np.array(a) for a in batch)
    logps = _log_softmax(np.array(model(batch[0]), np.float64))  # (2B, L, V)
    token = np.take_along_axis(logps, targets[..., None].astype(np.int64), axis=-1)[..., 0] * mask
    mean = token.sum(axis=1) / mask.sum(axis=1)  # per row
    half = len(mean) // 2
    expected = []
    for c, r in zip(mean[:half], mean[half:]):
        odds_c, odds_r = c - math.log(1 - math.exp(c)), r - math.log(1 - math.exp(r))
        expected.append(-c + 0.25 * -math.log(1 / (1 + math.exp(-(odds_c - odds_r)))))
    loss = PreferenceLoss("orpo", orpo_lambda=0.25)
    loss.check(model, batch[0][:1, :16])
    got, chosen_reward, rejected_reward = loss.terms(model, *batch)
    assert np.allclose(np.array(got), expected, rtol=1e-4)
    assert np.allclose(np.array(chosen_reward), 0.25 * mean[:half], rtol=1e-4)
    total, count = loss(model, *batch)
    assert total.item() == pytest.approx(sum(expected), rel=1e-4) and count.item() == 3


def test_dpo_terms_match_the_paper():
    loss, chosen, rejected = dpo_terms(mx.array([-10.0]), mx.array([-12.0]), mx.array([-11.0]),
                                       mx.array([-11.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)), rel=1e-6)
    assert (chosen.item(), rejected.item()) == (pytest.approx(0.1), pytest.approx(-0.1))


def test_the_dpo_adapter_loads_in_mlx_lm_and_fuses_like_any_lora_adapter(dpo_run, tiny_model, tmp_path):
    import mlx_lm

    from mlx_lora.data.dataset import load_splits
    from mlx_lora.export import export_run

    config, result, events = dpo_run
    model, tokenizer = mlx_lm.load(str(tiny_model), adapter_path=str(result.run_dir))
    model.set_dtype(mx.float32)
    valid = encode_pairs(tokenizer, load_splits(config.data.data).valid, 128, "truncate").examples
    loss = PreferenceLoss("dpo", beta=config.preference.beta)
    loss.check(model, mx.array([valid[0].tokens[:16]]))
    val_loss, metrics = evaluate_pairs(model, loss, valid, 2, -1, seed=0)
    final = [e for e in events if isinstance(e, EvalReport)][-1]
    assert val_loss == pytest.approx(final.val_loss, rel=1e-3, abs=1e-4)
    assert metrics["reward_margin"] == pytest.approx(final.reward_margin, rel=1e-3)
    exported = export_run(result.run_dir, tmp_path / "fused", "mlx", torch_python=None)
    assert exported.checks[0].top1_agreement == 1.0
    fused, _ = mlx_lm.load(str(tmp_path / "fused"))
    assert type(fused.layers[0].self_attn.q_proj).__name__ == "Linear"


def test_a_stopped_dpo_run_resumes_exactly(tiny_model, pairs_dataset, dpo_run, tmp_path):
    from mlx_lora.run_folder import resume_config

    _, _, uninterrupted = dpo_run
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, pairs_dataset, tmp_path / "run", val_batches=-1, objective="dpo", iters=8)
    stopped = train(config, recorder, lambda: any(isinstance(e, StepReport) and e.step >= 3 for e in recorder.events))
    assert stopped.status == "stopped" and stopped.step == 3
    resumed = RecordingReporter()
    train(resume_config(tmp_path / "run"), resumed)
    assert isinstance(resumed.events[-1], RunFinished)
    expected = losses(uninterrupted)
    assert losses(resumed.events) == {s: pytest.approx(expected[s], rel=1e-4) for s in range(4, 9)}


@pytest.mark.parametrize("settings", [{"fine_tune_type": "dora"}, {"grad_checkpoint": True}, {"quantize_bits": 4}],
                         ids=["dora", "grad-checkpoint", "qlora"])
def test_dpo_with_dora_gradient_checkpointing_and_a_quantised_base(tiny_model, pairs_dataset, tmp_path, settings):
    _, result, events = run(tiny_model, pairs_dataset, tmp_path / "run", objective="dpo", iters=2,
                            steps_per_eval=2, **settings)
    evals = [e for e in events if isinstance(e, EvalReport)]
    assert result.status == "finished", result.reason
    assert evals[0].val_loss == pytest.approx(math.log(2), abs=1e-5)  # the reference is exactly the base
    assert evals[-1].val_loss < evals[0].val_loss


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_the_token_cap_leaves_preference_training_unchanged(tiny_model, pairs_dataset, tmp_path, objective):
    """Pairs cut into passes by max_batch_tokens sum to the same step as the whole batch."""
    runs = []
    for cap in (0, 48):
        config = tiny_config(tiny_model, pairs_dataset, tmp_path / f"{objective}-{cap}", objective=objective, iters=3,
                             batch_size=4, max_batch_tokens=cap, valid_ratio=0.0, steps_per_eval=100)
        recorder = RecordingReporter()
        result = train(config, recorder)
        runs.append((losses(recorder.events), mx.load(str(result.run_dir / "adapters.safetensors")),
                     [n for n in recorder.of(RunStarted)[0].notes if "max_batch_tokens" in n]))
    (plain, plain_weights, plain_notes), (capped, capped_weights, capped_notes) = runs
    assert not plain_notes and capped_notes  # the cap did cut batches
    assert list(capped.values()) == pytest.approx(list(plain.values()), rel=1e-5)
    for name in plain_weights:
        assert mx.allclose(plain_weights[name], capped_weights[name], atol=1e-5).item(), name
