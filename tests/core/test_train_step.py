"""The performance paths give the same loss as the plain one: the compiled, dense-head step
(GPU), widths rounded up, the token cap's micro-batches, LoRA products in the compute dtype."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_lora.config import TrainConfig
from mlx_lora.train import step as step_fn
from mlx_lora.train.batches import BatchPlan, Example, make_batch, micro_batches
from mlx_lora.train.evaluate import MaskedLoss
from mlx_lora.train.prepare import prepare_model


def _examples(rng, count=6):
    examples = []
    for _ in range(count):
        n = int(rng.integers(8, 40))
        trained = [False] * (n // 3) + [True] * (n - n // 3)
        examples.append(Example(tuple(int(t) for t in rng.integers(0, 1000, n)), tuple(trained)))
    return examples


def test_the_compiled_dense_step_with_padded_widths_matches_the_eager_one(tiny_model):
    model = prepare_model(TrainConfig().replace(model=str(tiny_model), rank=4)).model
    model.train()
    examples = _examples(np.random.default_rng(0))
    loss = MaskedLoss(chunk=16)  # several chunks, in both paths
    assert loss.check(model, mx.array([examples[0].tokens]))
    eager = step_fn.loss_and_grad(model, loss, compiled=False)
    compiled = step_fn.loss_and_grad(model, loss, compiled=True)
    mx.eval(model.parameters())
    (value, count), grads = eager(model, *map(mx.array, make_batch(examples, range(6))))
    mx.eval(value, grads)
    padded = make_batch(examples, range(6), multiple=64)
    assert padded[0].shape[1] == 64  # the inputs' width rounded up (the tokens are one wider)
    assert make_batch([Example(tuple(range(65)), (True,) * 65)], [0], 64)[0].shape[1] == 64  # 65 tokens: 64 inputs
    for _ in range(2):  # the second call reuses the compiled graph
        (c_value, c_count), c_grads = compiled(model, *map(mx.array, padded))
        mx.eval(c_value, c_grads)
        assert c_count.item() == count.item()
        assert c_value.item() == pytest.approx(value.item(), rel=1e-5)
        flat, c_flat = dict(tree_flatten(grads)), dict(tree_flatten(c_grads))
        assert any(float(mx.abs(g).max()) > 0 for g in flat.values())
        for name, grad in flat.items():
            assert mx.allclose(grad, c_flat[name], atol=1e-5).item(), name


def test_the_compiled_optimizer_update_matches_the_eager_one(tiny_model):
    from mlx_lora.train.optim import Optimizer

    config = TrainConfig().replace(model=str(tiny_model), rank=4)
    models = [prepare_model(config).model for _ in range(2)]
    optimizers = [Optimizer(config) for _ in range(2)]
    updates = []
    for model, optimizer, compiled in zip(models, optimizers, (False, True)):
        optimizer.inner.init(model.trainable_parameters())
        updates.append(step_fn.optimizer_update(model, optimizer, plain=True, compiled=compiled))
    names = [name for name, _ in tree_flatten(models[0].trainable_parameters())]
    for step, lr in enumerate((1e-2, 5e-3, 1e-3)):
        grads = {name: mx.random.normal(value.shape, key=mx.random.key(step))
                 for name, value in tree_flatten(models[0].trainable_parameters())}
        from mlx.utils import tree_unflatten

        for model, optimizer, update in zip(models, optimizers, updates):
            optimizer.set_learning_rate(lr)  # the schedule changes the rate between compiled calls
            update(model, tree_unflatten(list(grads.items())))
            mx.eval(model.parameters(), optimizer.state)
    eager, compiled = (dict(tree_flatten(m.trainable_parameters())) for m in models)
    assert any(float(mx.abs(eager[n] - dict(tree_flatten(prepare_model(config).model.trainable_parameters()))[n])
                     .max()) > 0 for n in names)  # the updates moved the weights
    for name in names:
        assert mx.allclose(eager[name], compiled[name], atol=1e-6).item(), name


def test_a_token_cap_cuts_only_the_batches_past_it_into_micro_batches_that_keep_every_example():
    lengths = np.array([int(x) for x in np.random.default_rng(2).lognormal(4.5, 0.8, size=400).clip(5, 1024)])
    batches = BatchPlan(list(lengths), batch_size=8, seed=0).epoch(0)
    assert max(len(b) * lengths[b].max() for b in batches) > 4000  # a long batch the cap must cut
    cut = 0
    for batch in batches:
        pieces = micro_batches(batch, lengths, 2048)
        assert sorted(int(i) for p in pieces for i in p) == sorted(int(i) for i in batch)
        assert all(len(p) * lengths[p].max() <= 2048 or len(p) == 1 for p in pieces)
        if len(batch) * lengths[batch].max() <= 2048:
            assert [p.tolist() for p in pieces] == [batch.tolist()]
        else:
            cut += 1
            assert len(pieces) > 1
    assert 0 < cut < len(batches) / 2  # on a long-tailed set only the long batches are cut
    assert micro_batches(np.array([3]), np.array([0, 0, 0, 5000]), 2048)[0].tolist() == [3]  # one row at least
    assert [p.tolist() for p in micro_batches(batches[0], lengths, 0)] == [batches[0].tolist()]  # 0: no cap


def test_a_token_cap_leaves_the_training_unchanged(tiny_model, tmp_path):
    """The micro-batches' gradients add up to the whole batch's: same losses, same adapter."""
    from mlx_lora.events import RecordingReporter
    from mlx_lora.train import RunStarted, train
    from tests.core.test_train_helpers import losses, tiny_config, write_dataset

    data = write_dataset(tmp_path / "data", train=24, valid=0, test=0)
    runs, notes = [], []
    for cap in (0, 64):
        recorder = RecordingReporter()
        config = tiny_config(tiny_model, data, tmp_path / f"cap-{cap}", iters=6, batch_size=6, max_batch_tokens=cap,
                             steps_per_report=1)
        result = train(config, recorder)
        notes.append([n for n in recorder.of(RunStarted)[0].notes if "max_batch_tokens" in n])
        runs.append((list(losses(recorder.events).values()), mx.load(str(result.run_dir / "adapters.safetensors"))))
    (plain_losses, plain), (capped_losses, capped) = runs
    assert notes[0] == [] and notes[1] == ["4 of 4 batches per epoch pass max_batch_tokens (64) and run as several "
                                           "passes each (the same steps, less memory)"]
    assert len(plain_losses) == 6
    assert capped_losses == pytest.approx(plain_losses, rel=1e-5)
    for name in plain:
        assert mx.allclose(plain[name], capped[name], atol=1e-5).item(), name


def test_train_takes_its_batch_plan_micro_batches_and_compile_switch_as_keywords(tiny_model, tmp_path):
    """bench/ swaps these without patching modules: the plan decides the batches, every step's
    batch goes through the given splitter, and compiled=True runs the compiled step (on CPU too)."""
    from mlx_lora.events import RecordingReporter
    from mlx_lora.train import RunStarted, StepReport, train
    from tests.core.test_train_helpers import tiny_config, write_dataset

    plans, pieces = [], []

    class Recorded(BatchPlan):
        def __init__(self, *args):
            super().__init__(*args)
            plans.append(self)

    def counted(indices, lengths, cap):
        pieces.append(indices.tolist())
        return micro_batches(indices, lengths, cap)

    class Recorder(RecordingReporter):
        def emit(self, event):
            if isinstance(event, RunStarted):
                pieces.clear()  # the setup counts the batches the cap cuts; count the steps only
            super().emit(event)

    config = tiny_config(tiny_model, write_dataset(tmp_path / "data", train=8, valid=2), tmp_path / "run",
                         iters=3, steps_per_eval=10, save_every=10)
    recorder = Recorder()
    train(config, recorder, batch_plan=Recorded, micro_batches=counted, compiled=True)
    assert len(plans) == 1 and [p for p in pieces] == [b.tolist() for b in plans[0].epoch(0)[:3]]
    assert len(recorder.of(StepReport)) == 3
