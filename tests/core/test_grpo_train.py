"""GRPO runs on the tiny model: rewards are reported (and logged), the adapter moves, a
stopped run resumes exactly (sampling included, and the reused samples of
policy_updates > 1), a failing reward ends the run with its named error, and the adapter
loads in mlx-lm like any LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter
from mlx_lora.run_events import RewardReport, RunFailed, RunFinished, StepReport
from mlx_lora.run_folder import RunFolder, resume_config
from mlx_lora.train import train
from tests.core.test_train_helpers import tiny_config


def write_prompts(folder: Path, train: int = 12, valid: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"What is {n} plus one? Reply with just the number.", "answer": str(n + 1)}
            for n in range(train + valid)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:train]))
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[train:]))
    return folder


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "plus-one")


# Random tokens decode to words: about half the answers start with a lowercase a-m, so the
# groups disagree and the advantages are not all zero.
GRPO = dict(objective="grpo", iters=4, group_size=4, max_completion_tokens=6, rewards=("format", "length:0.1"),
            reward_pattern=r"^ ?[a-m]", grpo_beta=0.1, save_every=2, steps_per_eval=4, val_batches=1,
            learning_rate=2e-2)


def run(tiny_model, data, run_dir, should_stop=None, **settings):
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, data, run_dir, **{**GRPO, **settings})
    result = train(config, recorder, should_stop) if should_stop else train(config, recorder)
    return result, recorder.events


@pytest.fixture(scope="module")
def grpo_run(tiny_model, prompts, tmp_path_factory):
    return run(tiny_model, prompts, tmp_path_factory.mktemp("runs") / "grpo")


def test_a_grpo_run_reports_rewards_and_moves_the_adapter(grpo_run):
    result, events = grpo_run
    assert result.status == "finished" and result.step == 4
    reports = [e for e in events if isinstance(e, RewardReport)]
    assert [r.step for r in reports] == [1, 2, 3, 4]
    first = reports[0]
    assert set(first.rewards) == {"format", "length"}
    assert first.mean_reward == pytest.approx(first.rewards["format"] + first.rewards["length"], abs=1e-5)
    assert 0 < first.completion_tokens <= 6 and len(first.samples) == len(first.sample_prompts) == 2
    assert first.kl == pytest.approx(0.0, abs=1e-6)  # the adapter starts as the identity: policy = reference
    assert reports[-1].kl > 1e-6  # …and then moves away from it
    logged = [m for m in RunFolder(result.run_dir).metrics() if m["event"] == "reward_report"]
    assert [m["step"] for m in logged] == [1, 2, 3, 4]
    assert [e.val_reward for e in events if type(e).__name__ == "EvalReport"][0] is not None
    weights = mx.load(str(Path(result.run_dir) / "adapters.safetensors"))
    assert any(np.abs(np.array(v)).max() > 0 for k, v in weights.items() if k.endswith("lora_b"))


def _rewards(events):
    return [(e.step, e.mean_reward, e.samples, e.kl) for e in events if isinstance(e, RewardReport)]


@pytest.mark.parametrize("policy_updates, stop_at", [(1, 2), (2, 3)], ids=["on-policy", "reused-samples"])
def test_a_stopped_grpo_run_resumes_exactly(tiny_model, prompts, grpo_run, tmp_path, policy_updates, stop_at):
    # on-policy, the uninterrupted run is the module's grpo_run (the same settings)
    whole, whole_events = (grpo_run if policy_updates == 1 else
                           run(tiny_model, prompts, tmp_path / "whole", policy_updates=policy_updates))
    recorder_steps = []

    def stop():
        return len(recorder_steps) >= stop_at

    class Counting(RecordingReporter):
        def emit(self, event):
            if isinstance(event, StepReport):
                recorder_steps.append(event.step)

    config = tiny_config(tiny_model, prompts, tmp_path / "cut", **{**GRPO, "policy_updates": policy_updates})
    stopped = train(config, Counting(), stop)
    assert stopped.status == "stopped" and stopped.step == stop_at
    resumed = RecordingReporter()
    result = train(resume_config(tmp_path / "cut"), resumed)
    assert isinstance(resumed.events[-1], RunFinished) and result.step == 4
    expected = [r for r in _rewards(whole_events) if r[0] > stop_at]
    got = _rewards(resumed.events)
    assert [(s, m, c) for s, m, c, _ in got] == [(s, m, c) for s, m, c, _ in expected]  # the same samples
    a = mx.load(str(Path(whole.run_dir) / "adapters.safetensors"))
    b = mx.load(str(Path(result.run_dir) / "adapters.safetensors"))
    for key in a:
        np.testing.assert_allclose(np.array(a[key]), np.array(b[key]), rtol=1e-5, atol=1e-7)


def test_a_failing_reward_file_ends_the_run_with_its_error(tiny_model, prompts, tmp_path):
    reward = tmp_path / "reward.py"
    reward.write_text("def reward(prompt, completion, **row):\n    raise KeyError('score')\n")
    recorder = RecordingReporter()
    config = tiny_config(tiny_model, prompts, tmp_path / "run", **{**GRPO, "rewards": (), "reward_file": str(reward)})
    with pytest.raises(UserError, match=r"reward.py: reward\(\) raised KeyError: 'score' on (train|valid) record \d+"):
        train(config, recorder)
    failed = recorder.events[-1]
    assert isinstance(failed, RunFailed) and "record" in failed.reason


def test_the_grpo_adapter_loads_in_mlx_lm(grpo_run, tiny_model):
    from mlx_lm.utils import load

    result, _ = grpo_run
    model, _ = load(str(tiny_model), adapter_path=str(result.run_dir))
    assert model(mx.array([[1, 2, 3]])).shape[-1] == 49152


def test_one_update_makes_the_better_answers_of_a_group_likelier(tiny_model, prompts, tmp_path):
    """The sign and the plumbing of the whole step: sample a group, score it, one SGD step on
    the GRPO loss — the answers with a positive advantage gain log-probability, the others lose it."""
    import mlx.nn as nn
    import mlx.optimizers as optim

    from mlx_lora.data.dataset import load_splits
    from mlx_lora.train.grpo import _per_row, token_logps
    from mlx_lora.train.prepare import prepare_model
    from mlx_lora.train.objectives import objective_for

    config = tiny_config(tiny_model, prompts, tmp_path / "run", **{**GRPO, "group_size": 8, "grpo_beta": 0.0})
    splits = load_splits(config.data.data, seed=0)
    objective = objective_for(config, splits.format)
    prepared = prepare_model(config)
    model = prepared.model
    examples = objective.encode(prepared.tokenizer, splits.train, config.data).examples
    loss = objective.make_loss()
    loss.check(model, mx.array([examples[0].tokens]))
    objective.bind(model, prepared.tokenizer, 1, 1, lambda event: None)
    mx.random.seed(3)
    batch = [mx.array(a) for a in objective.make_batch(examples, [0, 1])]
    inputs, targets, mask, positions, advantages = batch[:5]
    assert float(mx.abs(advantages).sum()) > 0, "the groups should disagree"

    def row_logps():
        return _per_row(token_logps(model, loss.split, inputs, targets, positions), positions, *inputs.shape)

    before = row_logps()
    (value, count), grads = nn.value_and_grad(model, loss)(model, *batch)
    optim.SGD(learning_rate=0.01).update(model, grads)
    change = np.array(row_logps() - before)
    a = np.array(advantages)
    assert change[a > 0].mean() > 0 > change[a < 0].mean()
    assert np.corrcoef(a, change)[0, 1] > 0.5
