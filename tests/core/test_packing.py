"""Sequence packing (mlx_lora/train/packing.py, packed_attention.py): rows hold every example
once within their capacity, in an order the seed fixes; a packed row's per-token losses are
each example's own unpacked losses in every supported family (so RoPE's offset does not
matter and no example sees another); the loss, its gradient and the validation loss equal
the unpacked ones; a packed run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_lora.config import AdapterConfig, TrainConfig
from mlx_lora.errors import UserError
from mlx_lora.events import RecordingReporter
from mlx_lora.train.batches import Example, batch_tokens, make_batch, micro_batches
from mlx_lora.train.evaluate import MaskedLoss, dataset_loss
from mlx_lora.train.packed_attention import block_causal_mask, check_supported, packed_attention
from mlx_lora.train.packing import PackedPlan, make_packed_batch, pack_rows, packed_eval_batches, row_lengths

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, vocab_size=97, rms_norm_eps=1e-5, max_position_embeddings=512,
             tie_word_embeddings=True, rope_theta=10000.0)
# module, config beyond SMALL: every supported family, with its rope scaling or sliding window
FAMILIES = {
    "llama": ("llama", {}),
    "llama3-rope": ("llama", dict(rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    "llama-yarn": ("llama", dict(rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 64})),
    "mistral-sliding": ("llama", dict(sliding_window=6, layer_types=["sliding_attention", "full_attention"])),
    "qwen2": ("qwen2", dict(rope_theta=1e6)),
    "qwen3": ("qwen3", dict(rope_theta=1e6)),
    "qwen3_moe": ("qwen3_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                    decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True)),
    "gemma2": ("gemma2", dict(query_pre_attn_scalar=8, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                              sliding_window=4096)),
    "gemma3-sliding": ("gemma3_text", dict(query_pre_attn_scalar=8, sliding_window=6, sliding_window_pattern=2,
                                           rope_local_base_freq=10000.0)),
    "phi3-longrope": ("phi3", dict(rope_scaling={"type": "longrope", "short_factor": [1.0] * 4,
                                                 "long_factor": [1.5, 2.0, 3.0, 4.0]},
                                   original_max_position_embeddings=64, max_position_embeddings=256)),
    "smollm3": ("smollm3", dict(no_rope_layers=[1, 0], no_rope_layer_interval=2)),
}


def build(family: str) -> nn.Module:
    import importlib

    module_name, extra = FAMILIES[family]
    module = importlib.import_module(f"mlx_lm.models.{module_name}")
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict({"model_type": module_name, **SMALL, **extra}))
    # random weights large enough that attention is not near-uniform (a leak must show)
    model.update(nn.utils.tree_map(lambda w: mx.random.normal(w.shape) * 0.3, model.parameters()))
    model.eval()
    return model


def examples(lengths, seed=0, vocab=97) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        trained = tuple([False] * (n // 3) + [True] * (n - n // 3))  # a prompt, then the answer
        out.append(Example(tuple(int(t) for t in rng.integers(3, vocab, n)), trained))
    return out


def token_losses(model, inputs, targets, segments=None) -> np.ndarray:
    def forward():
        return nn.losses.cross_entropy(model(mx.array(inputs)).astype(mx.float32), mx.array(targets))

    if segments is None:
        return np.array(forward())
    with packed_attention(model, mx.array(segments)):
        return np.array(forward())


def unpacked_losses(model, example: Example) -> np.ndarray:
    tokens = np.array([example.tokens])
    return token_losses(model, tokens[:, :-1], tokens[:, 1:])[0]


LENGTHS = [14, 9, 11]  # longer than the sliding windows of 6: the window must hold inside each example


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_packed_row_gives_each_example_its_own_losses(family):
    model = build(family)
    check_supported(model)
    chosen = examples(LENGTHS)
    inputs, targets, mask, _, segments = make_packed_batch(chosen, np.array([[0, 1, 2]]))
    packed = token_losses(model, inputs, targets, segments)[0]
    start = 0
    for example in chosen:
        n = len(example.tokens) - 1
        # example 1 starts at 13, example 2 at 21: positions are not restarted (RoPE is relative)
        np.testing.assert_allclose(packed[start:start + n], unpacked_losses(model, example), rtol=2e-4, atol=2e-4)
        start += n
    # without the packed mask, the later examples would see the earlier ones
    leaked = token_losses(model, inputs, targets)[0]
    assert np.abs(leaked[13:] - packed[13:]).max() > 1e-2


@pytest.mark.parametrize("family", ["llama", "gemma3-sliding", "gemma2"])
def test_an_example_does_not_see_its_neighbours(family):
    model = build(family)
    chosen = examples(LENGTHS)
    changed = list(chosen)
    changed[0] = examples([14], seed=5)[0]  # other tokens in the first example only
    losses = []
    for row in (chosen, changed):
        inputs, targets, _, _, segments = make_packed_batch(row, np.array([[0, 1, 2]]))
        losses.append(token_losses(model, inputs, targets, segments)[0])
    assert np.abs(losses[0][:13] - losses[1][:13]).max() > 1e-2  # the changed example's losses moved
    np.testing.assert_allclose(losses[0][13:], losses[1][13:], rtol=1e-5, atol=1e-5)  # its neighbours' did not


def test_the_mask_is_block_diagonal_causal_with_the_window_inside_each_example():
    segments = mx.array([[0, 0, 0, 1, 1, -1]])
    mask = np.array(block_causal_mask(segments))[0, 0]
    expected = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                         [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], bool)
    assert (mask == expected).all()
    windowed = np.array(block_causal_mask(segments, window=2))[0, 0]
    assert not windowed[2, 0] and windowed[2, 1] and windowed[4, 3]


def test_rows_hold_every_example_once_within_their_capacity():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 60, 300)
    plan = PackedPlan(list(lengths), 4, seed=3, row_length=64)
    tables = plan.epoch(0)
    seen = np.concatenate([t[t >= 0] for t in tables])
    assert sorted(seen) == list(range(300))
    assert all((row_lengths(t, plan.lengths) <= 64).all() for t in tables)
    assert all(len(t) == 4 for t in tables[:-1])
    assert plan.padding_fraction() < 0.05  # first-fit decreasing leaves almost nothing empty
    # the order is a function of (seed, epoch): resume rebuilds it
    again = PackedPlan(list(lengths), 4, seed=3, row_length=64)
    assert all((a == b).all() for a, b in zip(again.epoch(0), tables))
    assert not all(a.shape == b.shape and (a == b).all() for a, b in zip(plan.epoch(1), again.epoch(0)))
    # max_batch_tokens cuts whole rows
    pieces = micro_batches(tables[0], plan.lengths, 128)
    assert [len(p) for p in pieces] == [2, 2]
    assert sum(batch_tokens(p, plan.lengths) for p in pieces) == batch_tokens(tables[0], plan.lengths)
    assert pack_rows(np.arange(3), np.array([100, 5, 5]), 63) == [[0], [1, 2]]  # too long: a row of its own


def test_a_packed_batch_is_the_unpacked_one_laid_end_to_end():
    chosen = examples([5, 3, 4])
    inputs, targets, mask, positions, segments = make_packed_batch(chosen, np.array([[0, 1], [2, -1]]), multiple=8)
    assert inputs.shape == (2, 8)
    assert list(segments[0]) == [0, 0, 0, 0, 1, 1, -1, -1] and list(segments[1]) == [0, 0, 0, -1, -1, -1, -1, -1]
    assert list(inputs[0, :6]) == list(chosen[0].tokens[:-1]) + list(chosen[1].tokens[:-1])
    assert list(targets[0, :6]) == list(chosen[0].tokens[1:]) + list(chosen[1].tokens[1:])
    assert list(mask[0, :6]) == [float(t) for t in chosen[0].trained[1:] + chosen[1].trained[1:]]
    assert mask[:, 6:].sum() == 0 and list(positions) == list(np.flatnonzero(mask))
    plain = make_batch(chosen, np.array([0, 1, 2]))
    assert plain[2].sum() == mask.sum()  # the same trained tokens


def lora_model(family: str) -> nn.Module:
    from mlx_lora.train.prepare import apply_method

    model = build(family)
    mx.random.seed(1)
    apply_method(model, AdapterConfig(rank=4, num_layers=-1))
    # LoRA's B starts at zero; give it values so the adapter's gradient flows through both
    model.update(nn.utils.tree_map(lambda w: mx.random.normal(w.shape) * 0.05, model.trainable_parameters()))
    model.train()
    return model


@pytest.mark.parametrize("family", ["llama", "gemma3-sliding"])
def test_the_loss_and_its_gradient_equal_the_unpacked_ones(family):
    from mlx_lora.train.step import loss_and_grad

    model = lora_model(family)
    loss = MaskedLoss()
    loss.check(model, mx.array([[5, 6, 7]]))
    chosen = examples([14, 9, 11, 6, 12], seed=2)
    value_and_grad = loss_and_grad(model, loss, compiled=False)
    plain = make_batch(chosen, np.arange(5))
    packed = make_packed_batch(chosen, np.array([[0, 1, 3], [2, 4, -1]]))
    (sum_a, count_a), grads_a = value_and_grad(model, *map(mx.array, plain))
    (sum_b, count_b), grads_b = value_and_grad(model, *map(mx.array, packed))
    assert count_a.item() == count_b.item()
    assert sum_b.item() == pytest.approx(sum_a.item(), rel=1e-5)
    flat_a, flat_b = dict(tree_flatten(grads_a)), dict(tree_flatten(grads_b))
    assert flat_a.keys() == flat_b.keys() and len(flat_a) > 4
    for name in flat_a:
        np.testing.assert_allclose(np.array(flat_b[name]), np.array(flat_a[name]), rtol=1e-3, atol=1e-5,
                                   err_msg=name)
    # the compiled step (the GPU's) takes the packed batch too
    compiled = loss_and_grad(model, loss, compiled=True)
    (sum_c, _), _ = compiled(model, *map(mx.array, packed))
    assert sum_c.item() == pytest.approx(sum_a.item(), rel=1e-5)


def test_the_validation_loss_equals_the_unpacked_one():
    model = lora_model("llama")
    loss = MaskedLoss()
    loss.check(model, mx.array([[5, 6, 7]]))
    chosen = examples([14, 9, 11, 6, 12, 20, 5, 8], seed=4)
    plain, tokens = dataset_loss(model, loss, chosen, 2, 3, seed=0)
    packed, packed_tokens = dataset_loss(model, loss, chosen, 2, 3, seed=0, pack_length=32)
    assert packed_tokens == tokens and packed == pytest.approx(plain, rel=1e-5)
    assert sum(len(t[t >= 0]) for t in packed_eval_batches(chosen, 2, 3, 0, 32)) == 6  # 3 batches of 2


def test_packing_needs_sft_and_a_supported_family():
    with pytest.raises(UserError, match="pack.*sft"):
        TrainConfig().replace(pack=True, objective="dpo")

    class Other(nn.Module):
        pass

    with pytest.raises(UserError, match="pack .*not this model's"):
        check_supported(Other())


def test_a_packed_run_trains_and_resumes_exactly(tiny_model, tmp_path):
    from mlx_lora.run_folder import resume_config
    from mlx_lora.train import RunStarted, train
    from tests.core.test_train_helpers import losses, tiny_config, write_dataset

    data = write_dataset(tmp_path / "data", train=24, valid=6, test=0)
    settings = dict(pack=True, batch_size=2, max_seq_length=128, iters=4, grad_accumulation_steps=2, save_every=2,
                    steps_per_eval=2, max_batch_tokens=128, val_batches=-1)
    whole = RecordingReporter()
    straight = train(tiny_config(tiny_model, data, tmp_path / "straight", **settings), whole)
    started = whole.of(RunStarted)[0]
    assert any("sequence packing" in note for note in started.notes)
    assert started.padding_fraction < 0.2

    first = RecordingReporter()
    stopped = train(tiny_config(tiny_model, data, tmp_path / "resumed", **settings), first,
                    lambda: any(getattr(e, "step", 0) >= 2 and type(e).__name__ == "StepReport" for e in first.events))
    assert stopped.step == 2
    second = RecordingReporter()
    resumed = train(resume_config(stopped.run_dir), second)
    assert resumed.step == 4
    expected, got = losses(whole.events), {**losses(first.events), **losses(second.events)}
    assert list(got) == list(expected) == [1, 2, 3, 4]
    for step in expected:
        assert got[step] == pytest.approx(expected[step], abs=1e-5), step
    a = mx.load(str(Path(straight.run_dir) / "adapters.safetensors"))
    b = mx.load(str(Path(resumed.run_dir) / "adapters.safetensors"))
    for name in a:
        assert mx.allclose(a[name], b[name], atol=1e-5).item(), name


def test_the_estimate_counts_the_packed_mask():
    from mlx_lora.train.memory import ModelShape, estimate_training_memory

    shape = ModelShape(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                       head_dim=16, vocab_size=1000)
    config = TrainConfig().replace(batch_size=4, max_seq_length=256, max_batch_tokens=0)
    plain = estimate_training_memory(config, shape=shape, device="cpu")
    packed = estimate_training_memory(config.replace(pack=True), shape=shape, device="cpu")
    # the same (rows, length) as the padded worst case, plus the (rows, 1, L, L) bool mask
    assert packed.batch == plain.batch == (4, 256)
    assert packed.parts["attention"] - plain.parts["attention"] == 4 * 256 * 256
