"""Encoding limits, length-bucketed batches and the loss over trained positions."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.train.batches import BatchPlan, Cursor, Example, eval_batches, fit_examples, make_batch
from mlx_lora.train.evaluate import MaskedLoss
from mlx_lora.train.prepare import prepare_model


def test_max_seq_length_truncates_or_drops_and_counts_it():
    long = (list(range(10)), [False] * 4 + [True] * 6)
    short = (list(range(5)), [False, False, True, True, True])
    prompt_only = (list(range(12)), [False] * 8 + [True] * 4)  # its answer lies past the cut
    truncated = fit_examples([long, short, prompt_only], max_seq_length=8, too_long="truncate")
    assert (truncated.truncated, truncated.dropped, len(truncated.examples)) == (2, 1, 2)
    assert truncated.examples[0].tokens == tuple(range(8))
    dropped = fit_examples([long, short, prompt_only], max_seq_length=8, too_long="drop")
    assert (dropped.truncated, dropped.dropped, len(dropped.examples)) == (0, 2, 1)


def test_an_epoch_visits_every_example_once_in_a_seeded_order():
    lengths = [int(x) for x in np.random.default_rng(0).integers(10, 500, size=103)]
    plan = BatchPlan(lengths, batch_size=4, seed=7)
    epoch = plan.epoch(0)
    assert len(epoch) == len(plan) == 26
    assert sorted(int(i) for batch in epoch for i in batch) == list(range(103))
    again = BatchPlan(lengths, batch_size=4, seed=7)
    assert all((a == b).all() for a, b in zip(again.epoch(0), epoch))
    assert [b.tolist() for b in plan.epoch(1)] != [b.tolist() for b in epoch]  # each epoch mixes differently


def test_length_buckets_pad_far_less_than_random_batches():
    lengths = [int(x) for x in np.random.default_rng(1).integers(20, 800, size=512)]
    plan = BatchPlan(lengths, batch_size=8, seed=0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(lengths))
    random_padded = sum(max(lengths[i] for i in order[s:s + 8]) * 8 for s in range(0, 512, 8))
    random_fraction = 1 - sum(lengths) / random_padded
    assert random_fraction > 0.3
    assert plan.padding_fraction() < 0.05


def test_the_stream_continues_from_a_cursor_exactly():
    plan = BatchPlan(list(range(10, 40)), batch_size=4, seed=3)  # 8 batches per epoch
    whole = [(c, b.tolist()) for c, b in itertools.islice(plan.stream(Cursor()), 20)]
    cursor = whole[10][0]  # after 11 batches: epoch 1, batch 3
    assert cursor == Cursor(1, 3)
    resumed = [(c, b.tolist()) for c, b in itertools.islice(BatchPlan(list(range(10, 40)), 4, 3).stream(cursor), 9)]
    assert resumed == whole[11:20]


def test_batches_are_padded_to_their_longest_example_with_a_target_mask():
    a = Example((1, 2, 3, 4, 5), (False, False, True, True, True))
    b = Example((6, 7, 8), (False, True, True))
    inputs, targets, mask, positions = make_batch([a, b], [0, 1])
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, 8, 0]]
    assert targets.tolist() == [[2, 3, 4, 5], [7, 8, 0, 0]]
    assert mask.tolist() == [[0, 1, 1, 1], [1, 1, 0, 0]]
    assert positions.tolist() == [1, 2, 3, 4, 5]


def test_eval_batches_are_a_fixed_sample():
    examples = [Example(tuple(range(n)), (True,) * n) for n in range(3, 40)]
    first = eval_batches(examples, 4, 2, seed=0)
    assert sum(len(b) for b in first) == 8
    assert all((x == y).all() for x, y in zip(first, eval_batches(examples, 4, 2, seed=0)))
    assert sum(len(b) for b in eval_batches(examples, 4, -1, seed=0)) == len(examples)


def test_the_loss_counts_trained_positions_only_and_both_paths_agree(tiny_model):
    model = prepare_model(TrainConfig().replace(model=str(tiny_model))).model
    model.eval()
    rng = np.random.default_rng(0)
    tokens = tuple(int(t) for t in rng.integers(3, 40000, size=30))
    trained = (False,) * 12 + (True,) * 18
    fast, full = MaskedLoss(), MaskedLoss()
    assert fast.check(model, mx.array([tokens]))
    batch = list(map(mx.array, make_batch([Example(tokens, trained)], [0])))
    loss_fast, count_fast = fast(model, *batch)
    loss_full, count_full = full(model, *batch)  # never checked: the whole-logits path
    assert count_fast.item() == count_full.item() == 18
    assert loss_fast.item() == pytest.approx(loss_full.item(), rel=1e-5)
    # the targets at masked (prompt) positions do not count at all
    changed = list(batch)
    changed[1] = mx.where(batch[2] > 0, batch[1], mx.zeros_like(batch[1]) + 5)
    assert fast(model, *changed)[0].item() == pytest.approx(loss_fast.item(), rel=1e-6)
    assert full(model, *changed)[0].item() == pytest.approx(loss_full.item(), rel=1e-6)


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch(tiny_model):
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_map

    model = prepare_model(TrainConfig().replace(model=str(tiny_model), targets=("q", "down_proj"))).model
    for layer in model.layers:  # non-zero B so every adapter matrix has a gradient
        layer.self_attn.q_proj.lora_b = mx.full(layer.self_attn.q_proj.lora_b.shape, 0.01)
    loss = MaskedLoss()
    loss.check(model, mx.array([list(range(3, 20))]))
    rng = np.random.default_rng(0)
    examples = [Example(tuple(int(t) for t in rng.integers(3, 40000, size=n)), (False,) * 4 + (True,) * (n - 4))
                for n in (9, 23, 14, 30)]  # different lengths and trained-token counts
    value_and_grad = nn.value_and_grad(model, loss)

    def summed(indices):
        (total, tokens), grads = value_and_grad(model, *map(mx.array, make_batch(examples, indices)))
        return total, tokens, grads

    whole_total, whole_tokens, whole = summed([0, 1, 2, 3])
    t1, n1, g1 = summed([0, 1])
    t2, n2, g2 = summed([2, 3])
    accumulated = tree_map(lambda a, b: (a + b) / (n1 + n2), g1, g2)
    assert (n1 + n2).item() == whole_tokens.item()
    assert (t1 + t2).item() == pytest.approx(whole_total.item(), rel=1e-5)
    for (name, a), (_, b) in zip(tree_flatten(accumulated), tree_flatten(tree_map(lambda g: g / whole_tokens, whole))):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-8, err_msg=name)
