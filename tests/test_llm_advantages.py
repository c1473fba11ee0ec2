"""GAE, whitening, normalisation, the Noon clip, PAMA's advantage combine and the PPO losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mogradient import PAMA, pama_weights
from mogradient_llm.estimators.advantages import (
    RunningMeanStd,
    gae,
    masked_whiten,
    normalize_scores,
    token_rewards,
)
from mogradient_llm.estimators.value_heads import clipped_value_loss
from mogradient_llm.objectives.advantages import noon_clip
from mogradient_llm.objectives.surrogate import clipped_surrogate, masked_mean, token_weights


def _mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).float()


def _naive_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    out, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        last = rewards[t] + gamma * next_value - values[t] + gamma * lam * last
        out[t] = last
    return out


def test_gae_matches_a_per_sample_loop_and_ignores_padding() -> None:
    torch.manual_seed(0)
    lengths, t = [5, 2, 7], 7
    mask = _mask(lengths, t)
    rewards, values = torch.randn(2, 3, t), torch.randn(2, 3, t)
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.95)
    for k in range(2):
        for b, n in enumerate(lengths):
            expected = _naive_gae(rewards[k, b, :n].tolist(), values[k, b, :n].tolist(), 0.9, 0.95)
            torch.testing.assert_close(advantages[k, b, :n], torch.tensor(expected))
            assert torch.all(advantages[k, b, n:] == 0)
    torch.testing.assert_close(returns, advantages + values * mask)


def test_linear_scalarisation_of_gae_equals_gae_of_scalarised_rewards() -> None:
    """MORLHF: Σ wᵢ GAE(rᵢ, Vᵢ) == GAE(Σ wᵢ rᵢ, Σ wᵢ Vᵢ), with the KL penalty counted once."""
    torch.manual_seed(1)
    k, b, t = 3, 4, 6
    mask = _mask([6, 3, 1, 5], t)
    w = torch.tensor([0.2, 0.5, 0.3])
    scores, kl, values = torch.randn(k, b), torch.randn(b, t), torch.randn(k, b, t)
    rewards = token_rewards(scores, kl, mask, kl_coef=0.2)
    adv, _ = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    scalar_rewards = token_rewards((w[:, None] * scores).sum(0, keepdim=True), kl, mask, 0.2)
    torch.testing.assert_close(torch.einsum("k,kbt->bt", w, rewards), scalar_rewards[0])
    scalar_adv, _ = gae(scalar_rewards, torch.einsum("k,kbt->bt", w, values)[None], mask, 1.0, 0.95)
    torch.testing.assert_close(torch.einsum("k,kbt->bt", w, adv), scalar_adv[0])


def test_token_rewards_put_the_score_on_the_last_response_token() -> None:
    mask = _mask([3, 1], 4)
    kl = torch.ones(2, 4)
    rewards = token_rewards(torch.tensor([[10.0, 20.0]]), kl, mask, kl_coef=0.5)
    expected = torch.tensor([[[-0.5, -0.5, 9.5, 0.0], [19.5, 0.0, 0.0, 0.0]]])
    torch.testing.assert_close(rewards, expected)


def test_masked_whiten_is_per_objective() -> None:
    torch.manual_seed(2)
    mask = _mask([4, 2, 3], 4)
    x = torch.randn(2, 3, 4) * torch.tensor([1.0, 10.0])[:, None, None] + 5
    white = masked_whiten(x, mask)
    for k in range(2):
        values = white[k][mask.bool()]
        assert abs(float(values.mean())) < 1e-5
        assert abs(float(values.var(unbiased=False)) - 1) < 1e-4
    assert torch.all(white[:, ~mask.bool()] == 0)


def test_running_mean_std_matches_numpy_over_all_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(2, n)) * [[1.0], [3.0]] + [[1.0], [-2.0]] for n in (5, 8, 3)]
    stats = RunningMeanStd(2)
    for batch in batches:
        stats.update(torch.tensor(batch))
    data = np.concatenate(batches, axis=1)
    np.testing.assert_allclose(stats.mean.numpy(), data.mean(1))
    np.testing.assert_allclose(stats.var.numpy(), data.var(1))
    scores = torch.tensor(batches[0], dtype=torch.float64)
    normed = normalize_scores(scores, stats, use_score_norm=True)
    expected = (batches[0] - data.mean(1, keepdims=True)) / np.sqrt(data.var(1, keepdims=True))
    np.testing.assert_allclose(normed.numpy(), expected, rtol=1e-6)
    scaled = normalize_scores(scores, stats, use_score_norm=False, clip=0.5)
    assert float(scaled.abs().max()) <= 0.5


def test_pama_token_mode_is_the_minimum_of_the_clipped_advantages() -> None:
    torch.manual_seed(3)
    mask = _mask([5, 2, 4], 5)
    clipped = noon_clip(torch.randn(3, 3, 5))
    assert torch.all(clipped >= 0)
    combined, weights, s_star = PAMA("token").combine(clipped, mask)
    torch.testing.assert_close(combined, clipped.min(0).values * mask)
    torch.testing.assert_close((weights * clipped).sum(0), s_star)


def test_pama_batch_mode_uses_one_weight_vector_from_the_batch_means() -> None:
    torch.manual_seed(4)
    mask = _mask([5, 2, 4], 5)
    advantages = torch.randn(2, 3, 5)
    advantages[1] += 3.0  # objective 0 has the smaller batch mean
    clipped = noon_clip(advantages)
    combined, weights, _ = PAMA("batch").combine(clipped, mask)
    means = torch.stack([clipped[i][mask.bool()].mean() for i in range(2)])
    assert means[0] < means[1]
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.0]))  # one-hot on the argmin
    torch.testing.assert_close(combined, clipped[0] * mask)
    # Without the Noon clip, straddling means get weights with Σ cᵢ mean(Aᵢ) = 0.
    raw = torch.stack([advantages[0] - 2.0, advantages[1]])
    _, c, s_star = PAMA("batch").combine(raw, mask)
    raw_means = torch.stack([masked_mean(raw[i], mask) for i in range(2)])
    expected_c, _ = pama_weights(raw_means)
    torch.testing.assert_close(c, expected_c)
    assert raw_means[0] < 0 < raw_means[1] and float(s_star) == 0.0
    assert abs(float(c @ raw_means)) < 1e-6


def test_linear_loss_equals_loss_of_linear_advantage_after_noon() -> None:
    torch.manual_seed(5)
    mask = _mask([4, 3], 4)
    old = torch.randn(2, 4)
    new = old + 0.3 * torch.randn(2, 4)
    advantages = noon_clip(torch.randn(3, 2, 4))
    w = torch.tensor([0.6, 0.3, 0.1])
    weights = token_weights(mask, "token", rows=2, tokens=float(mask.sum()), max_length=4)
    losses, stats = clipped_surrogate(new, old, advantages, weights, epsilon=0.2)
    combined, _ = clipped_surrogate(
        new, old, torch.einsum("k,kbt->bt", w, advantages)[None], weights, 0.2
    )
    torch.testing.assert_close(w @ losses, combined[0])
    assert 0 <= float(stats["policy/clipfrac_avg"]) <= 1


def test_policy_loss_clips_the_ratio() -> None:
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[2.0, 0.5]]))
    weights = token_weights(mask, "token", rows=1, tokens=2.0, max_length=2)
    losses, stats = clipped_surrogate(new, old, torch.ones(1, 1, 2), weights, epsilon=0.2)
    assert float(losses[0]) == pytest.approx(-(1.2 + 0.5) / 2)
    assert float(stats["policy/clipfrac_avg"]) == pytest.approx(0.5)


def test_value_loss_sums_over_heads() -> None:
    mask = torch.ones(1, 3)
    values = torch.zeros(2, 1, 3)
    returns = torch.stack([torch.ones(1, 3), 2 * torch.ones(1, 3)])
    weights = token_weights(mask, "token", rows=1, tokens=3.0, max_length=3)
    loss, _ = clipped_value_loss(values, values, returns, weights, cliprange_value=10.0)
    assert float(loss) == pytest.approx(0.5 * 1 + 0.5 * 4)
