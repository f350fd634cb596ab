"""The export check's quality figures on synthetic logits (no model, no llama.cpp): mean KL,
the adapter's effect kept and the rule built on it (quantised GGUFs are refused only when
the adapter's effect is lost), the validation loss's formula, and the importance matrix's
statistic on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mlx_lora  # noqa: F401
from mlx_lora.export import val_loss
from mlx_lora.export.formats.gguf import MIN_EFFECT_KEPT, QUANTISED_THRESHOLDS, quality_warnings
from mlx_lora.export.verify import TOO_SMALL, compare_logits

V = 64
PROMPTS = [[1] * n for n in (5, 7, 6, 8, 5, 9, 6, 7)]


def _logits(seed: int, batch, scale: float = 1.0):
    import mlx.core as mx

    rng = np.random.default_rng([seed, len(batch), len(batch[0])])
    return mx.array(scale * rng.normal(size=(len(batch), len(batch[0]), V)).astype(np.float32))


def _check(export_of, thresholds=QUANTISED_THRESHOLDS["q4_k_m"]):
    """base: noise; tuned = base + a shift of its own; export = export_of(tuned, base, batch)."""
    reference = lambda batch: (_logits(1, batch) + _logits(2, batch), _logits(1, batch))  # noqa: E731
    return compare_logits(reference, lambda batch: export_of(*reference(batch), batch), PROMPTS, "synthetic",
                          thresholds)


def test_an_exact_export_keeps_all_of_the_effect_and_has_no_kl():
    check = _check(lambda tuned, base, batch: tuned)
    assert check.adapter_effect_kept == pytest.approx(1.0, abs=1e-5) and check.mean_kl == pytest.approx(0, abs=1e-5)
    assert check.adapter_top1_changes_kept == 1.0 and check.adapter_kl > 0.3 and check.passed


def test_noise_costs_kl_and_top1_but_not_the_effect_kept_and_is_a_pass():
    noisy = _check(lambda tuned, base, batch: tuned + _logits(3, batch, scale=1.5))
    # the noise alone is larger than the fine-tune's shift: the mean-error rule would call this lost
    assert noisy.mean_abs_logit_diff > 0.5 * noisy.adapter_effect
    assert noisy.mean_kl > 0.5 and noisy.top1_agreement < 0.6
    assert abs(noisy.adapter_effect_kept - 1.0) < 3 * noisy.adapter_effect_kept_se < 0.3
    assert noisy.passed and noisy.status == "checked"
    [top1, *rest] = quality_warnings("q4_k_m", noisy)
    assert top1.startswith("warning: the q4_k_m file agrees") and not rest


def test_an_export_that_dropped_the_adapter_keeps_nothing_and_is_refused():
    dropped = _check(lambda tuned, base, batch: base + _logits(3, batch, scale=0.3))
    assert abs(dropped.adapter_effect_kept) < 0.15 and dropped.adapter_effect_kept_se < 0.1
    assert not dropped.passed and dropped.status == "checked"
    assert "lost the adapter's effect: it keeps" in dropped.problems[0]
    assert f"less than the {MIN_EFFECT_KEPT:.0%} required" in dropped.problems[0]


def test_half_of_the_effect_is_measured_as_half_and_warned_about():
    half = _check(lambda tuned, base, batch: base + 0.6 * (tuned - base))
    assert half.adapter_effect_kept == pytest.approx(0.6, abs=1e-4) and half.passed
    assert any(n.startswith("warning: the q4_k_m file keeps 60%") for n in quality_warnings("q4_k_m", half))


def test_a_shift_lost_in_the_estimates_noise_is_too_small_to_verify_neither_kept_nor_lost():
    # a weak fine-tune under heavy noise: kept's standard error spans the minimum
    reference = lambda batch: (_logits(1, batch) + 0.05 * _logits(2, batch), _logits(1, batch))  # noqa: E731
    check = compare_logits(reference, lambda batch: reference(batch)[0] + _logits(3, batch, scale=3.0), PROMPTS,
                           "synthetic", QUANTISED_THRESHOLDS["q4_k_m"])
    assert check.adapter_effect_kept - 2 * check.adapter_effect_kept_se < MIN_EFFECT_KEPT
    assert check.adapter_effect_kept + 2 * check.adapter_effect_kept_se >= MIN_EFFECT_KEPT
    assert check.status == TOO_SMALL and not check.passed
    assert "too little against the export's noise (it keeps" in check.problems[0]


def test_validation_loss_is_the_mean_nll_of_the_trained_targets():
    log_probs = np.log(np.full((3, 4), 0.25))  # uniform over 4 tokens: 1.386 nats each
    log_probs[1, 2] = np.log(0.5)
    total, count = val_loss.loss_sums(lambda tokens: log_probs, [([0, 1, 2, 3], [False, True, True, False])])
    assert count == 2 and total / count == pytest.approx((math.log(4) + math.log(2)) / 2)


def test_the_importance_matrix_is_the_mean_square_of_each_layers_input(tiny_model):
    import mlx.core as mx
    from mlx_lm.utils import load_model

    from mlx_lora.export.imatrix import importance_matrix

    model, config = load_model(tiny_model)
    tokens = [[1, 5, 9, 200, 7], [3, 4]]
    matrix = importance_matrix(model, config, tokens)
    assert "blk.0.attn_q.weight" in matrix and "blk.1.ffn_down.weight" in matrix and "token_embd.weight" not in matrix
    layer = model.model.layers[0]
    x = mx.concatenate([layer.input_layernorm(model.model.embed_tokens(mx.array(t))) for t in tokens])  # (7, D)
    np.testing.assert_allclose(matrix["blk.0.attn_q.weight"], np.array((x * x).mean(axis=0)), rtol=1e-5)
    np.testing.assert_array_equal(matrix["blk.0.attn_q.weight"], matrix["blk.0.attn_v.weight"])  # one input
    assert model.model.layers[0].self_attn.q_proj.__class__.__name__ == "Linear"  # the layers put back


MOE = {"model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2}
ROUTED_PROMPTS = [[i] * 8 for i in range(25)]  # 200 positions: the 1 % spared is 2 of them


def _routed_check(jumps: int, config: dict):
    """An f16-like export (0.01 of noise) whose logits jump by 0.5 at the first position of the
    first ``jumps`` prompts, as where a router's near-tie picked another expert."""
    import mlx.core as mx

    from mlx_lora.export.formats.gguf import gguf_thresholds
    from mlx_lora.export.verify import for_model

    reference = lambda batch: (_logits(1, batch) + _logits(2, batch), _logits(1, batch))  # noqa: E731

    def export(batch):
        jump = np.zeros((len(batch), len(batch[0]), V), np.float32)
        for row, ids in enumerate(batch):
            if ids[0] < jumps:
                jump[row, 0, 0] = 0.5
        return reference(batch)[0] + _logits(3, batch, scale=0.01) + mx.array(jump)

    return compare_logits(reference, export, ROUTED_PROMPTS, "synthetic f16", for_model(gguf_thresholds("f16"), config))


def test_a_mixture_of_experts_spares_a_routers_near_ties_from_the_max_rule_and_no_more():
    dense = _routed_check(1, {"model_type": "qwen3"})
    assert not dense.passed and dense.problems[0].startswith("max |Δlogit| 0.4") and "tolerance 0.25" in dense.problems[0]
    moe = _routed_check(1, MOE)
    assert moe.passed, moe.problems
    assert moe.max_abs_logit_diff == pytest.approx(0.5, abs=0.05)  # reported as it is; only the rule spares it
    assert moe.thresholds["max_diff_spared"] == 0.01
    too_many = _routed_check(3, MOE)
    assert not too_many.passed
    assert "at 3 of 200 positions, more than the 2 a router's near-ties" in too_many.problems[0]
    # the top-1 rule still counts every position
    assert too_many.top1_agreement >= 0.99
