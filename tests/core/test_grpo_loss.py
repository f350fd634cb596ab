"""GRPO's arithmetic against hand-computed numbers: the group normalisation (std and
Dr. GRPO's mean-only), the clipped surrogate with its KL term, and the per-answer
averaging."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.train.grpo import group_advantages, grpo_token_loss, sequence_mean


def test_advantages_are_normalised_within_each_group():
    rewards = np.array([1.0, 0.0, 0.0, 1.0,   2.0, 2.0, 2.0, 2.0])
    # group 1: mean 0.5, sample std sqrt(((.5)^2 * 4) / 3) = 0.57735
    a = group_advantages(rewards, 4, "std")
    std = math.sqrt(4 * 0.25 / 3)
    assert a[:4] == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 1 + [-0.5 / (std + 1e-4),
                                                                                     0.5 / (std + 1e-4)], rel=1e-6)
    assert a[4:] == pytest.approx([0.0] * 4)  # a group that agrees teaches nothing
    none = group_advantages(rewards, 4, "none")
    assert none.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_the_clipped_loss_and_kl_match_a_hand_computation():
    # one answer, three tokens; ratios e^0.5 = 1.6487 (clipped to 1.2), e^-0.5 = 0.6065 (clipped to 0.8), 1
    logps = mx.array([[-1.0, -2.0, -0.5]])
    old = mx.array([[-1.5, -1.5, -0.5]])
    ref = mx.array([[-1.0, -1.0, -1.0]])
    eps, beta = 0.2, 0.1
    for advantage in (2.0, -2.0):
        per_token, kl = grpo_token_loss(logps, old, ref, mx.array([advantage]), eps, beta)
        expected = []
        for lp, o, rf in ((-1.0, -1.5, -1.0), (-2.0, -1.5, -1.0), (-0.5, -0.5, -1.0)):
            ratio = math.exp(lp - o)
            surrogate = min(ratio * advantage, min(max(ratio, 1 - eps), 1 + eps) * advantage)
            k3 = math.exp(rf - lp) - (rf - lp) - 1
            expected.append(-surrogate + beta * k3)
        assert np.array(per_token)[0].tolist() == pytest.approx(expected, rel=1e-5)
        assert np.array(kl)[0].tolist() == pytest.approx([0.0, math.exp(1) - 2, math.exp(-0.5) - 0.5], rel=1e-5)
    # advantage +2: token 1 is clipped at 1.2 (-2.4), token 2 keeps its ratio (the min), token 3 ratio 1
    per_token, _ = grpo_token_loss(logps, old, ref, mx.array([2.0]), eps, 0.0)
    assert np.array(per_token)[0].tolist() == pytest.approx([-2.4, -2 * math.exp(-0.5), -2.0], rel=1e-5)


def test_each_answer_is_averaged_over_its_tokens_or_over_the_budget():
    per_token = mx.array([[1.0, 2.0, 3.0, 9.0], [4.0, 0.0, 0.0, 0.0]])
    mask = mx.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert np.array(sequence_mean(per_token, mask, "std", 8)).tolist() == pytest.approx([2.0, 4.0])
    assert np.array(sequence_mean(per_token, mask, "none", 8)).tolist() == pytest.approx([6 / 8, 4 / 8])


def test_on_policy_the_gradient_is_the_advantage_weighted_log_likelihood():
    """ratio = 1 at the sampled point: d loss / d logp = -A (+ β·(1 - e^(ref-logp)))."""
    old = mx.array([[-1.0, -2.0]])
    ref = mx.array([[-1.5, -2.0]])

    def total(lp):
        per_token, _ = grpo_token_loss(lp, mx.stop_gradient(lp), ref, mx.array([0.7]), 0.2, 0.1)
        return per_token.sum()

    grad = np.array(mx.grad(total)(old))[0]
    assert grad.tolist() == pytest.approx([-0.7 + 0.1 * (1 - math.exp(-0.5)), -0.7], rel=1e-5)
