"""GRPO's arithmetic against hand-computed numbers: the group normalisation (std and
Dr. GRPO's mean-only), the clipped surrogate with its KL term, and the per-answer
averaging."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_lora.train.grpo import GRPOLoss, group_advantages, grpo_token_loss


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


def test_the_loss_averages_each_answer_over_its_tokens_or_over_the_budget():
    """Two answers (rows) of a 3-token window, vocabulary 2, fixed logits: the GRPOLoss of
    the batch against the per-token formula averaged by hand."""
    logits = np.log(np.array([[[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]],
                              [[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]]], np.float32))

    def model(inputs):
        return mx.array(logits)

    inputs = mx.zeros((2, 3), mx.int32)
    targets = mx.array([[1, 1, 0], [0, 1, 0]])
    mask = mx.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # answer tokens: row 0 at 1, 2; row 1 at 0
    positions = mx.array([1, 2, 3])
    advantages = mx.array([1.5, -1.0])
    old = mx.array([math.log(0.7), math.log(0.9), math.log(0.3)])
    ref = mx.array([math.log(0.8), math.log(0.8), math.log(0.4)])
    p = [0.8, 0.9, 0.3]  # the answer tokens' probabilities under the "model"
    eps, beta = 0.2, 0.1

    def token(prob, old_prob, ref_prob, a):
        ratio = prob / old_prob
        k3 = ref_prob / prob - math.log(ref_prob / prob) - 1
        return -min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a) + beta * k3

    t = [token(p[0], 0.7, 0.8, 1.5), token(p[1], 0.9, 0.8, 1.5), token(p[2], 0.3, 0.4, -1.0)]
    std_loss = GRPOLoss(eps, beta, "std", 8)
    total, count = std_loss(model, inputs, targets, mask, positions, advantages, old, ref)
    assert count.item() == 2
    assert total.item() == pytest.approx((t[0] + t[1]) / 2 + t[2], rel=1e-5)
    assert std_loss.last_kl.item() == pytest.approx(np.mean([0.8 / q - math.log(0.8 / q) - 1 if i < 2 else
                                                             0.4 / q - math.log(0.4 / q) - 1
                                                             for i, q in enumerate(p)]), rel=1e-5)
    total, _ = GRPOLoss(eps, beta, "none", 8)(model, inputs, targets, mask, positions, advantages, old, ref)
    assert total.item() == pytest.approx((t[0] + t[1]) / 8 + t[2] / 8, rel=1e-5)
    # on-policy (no old log-probabilities): ratio 1, the loss is -A per answer plus the KL
    empty = mx.zeros((0,))
    total, _ = GRPOLoss(eps, 0.0, "std", 8)(model, inputs, targets, mask, positions, advantages, empty, empty)
    assert total.item() == pytest.approx(-1.5 + 1.0, rel=1e-5)


def test_on_policy_the_gradient_is_the_advantage_weighted_log_likelihood():
    """ratio = 1 at the sampled point: d loss / d logp = -A (+ β·(1 - e^(ref-logp)))."""
    old = mx.array([[-1.0, -2.0]])
    ref = mx.array([[-1.5, -2.0]])

    def total(lp):
        per_token, _ = grpo_token_loss(lp, mx.stop_gradient(lp), ref, mx.array([0.7]), 0.2, 0.1)
        return per_token.sum()

    grad = np.array(mx.grad(total)(old))[0]
    assert grad.tolist() == pytest.approx([-0.7 + 0.1 * (1 - math.exp(-0.5)), -0.7], rel=1e-5)
