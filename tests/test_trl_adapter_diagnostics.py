"""The TRL adapter's per-step work at the advantage level: the conflict diagnostics are computed
when TRL logs (a window of generation batches in one pass) and average as TRL averages the rest;
the objectives' loss values are formed only where a method or a constraint reads them.

References are numpy's Pearson correlation of the rewards TRL computed, independent of our
code. Tolerance: both sides compute in float64 from the same float32 rewards (m ≤ 16 columns),
so each correlation agrees within a few ``m·2⁻⁵³`` ≈ 1e-14; 1e-12 leaves room for TRL's mean of
a few of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.trl_adapter_fixtures import G, train, trainer, trl_args

PAIR = "mo/score_corr/length_reward/vowel_reward"


def _pearson(x: np.ndarray) -> float:
    """numpy's correlation of two rows (0 when one is constant, as logged)."""
    if np.ptp(x[0]) == 0 or np.ptp(x[1]) == 0:
        return 0.0
    return float(np.corrcoef(x)[0, 1])


def test_score_correlations_are_computed_when_trl_logs_and_average_over_the_window() -> None:
    """3 steps logged once (``logging_steps=3``): no generation batch computes its correlation,
    the one log holds the mean of the three steps' correlations of TRL's rewards."""
    from mogradient_llm.integrations import trl as a

    t = trainer(
        a.MOGRPOTrainer, trl_args(a.MOGRPOConfig, reward_weights=[0.7, 0.3], logging_steps=3)
    )
    generate = t._generate_and_score_completions
    seen: list[tuple[np.ndarray, bool]] = []

    def recorded(inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = generate(inputs)
        seen.append((t._mo_rewards.T.double().numpy().copy(), PAIR in t._metrics["train"]))
        return out

    t._generate_and_score_completions = recorded
    train(t)
    assert len(seen) == 3 and not any(computed for _, computed in seen)
    logged = [h for h in t.state.log_history if PAIR in h]
    assert len(logged) == 1
    expected = np.mean([_pearson(r) for r, _ in seen])
    assert logged[0][PAIR] == pytest.approx(expected, abs=1e-12)
    assert logged[0]["mo/conflict_rate"] == np.mean([_pearson(r) < 0 for r, _ in seen])


def test_a_window_of_steps_gives_each_steps_correlations() -> None:
    """Steps of both kinds and two shapes, scores with unscored completions: each step's stats
    are its own correlation over the completions every reward scored (over the masked tokens
    for advantages)."""
    from mogradient_llm.objectives.diagnostics import (
        advantage_correlation,
        correlation_stats,
        score_correlation,
    )

    gen = torch.Generator().manual_seed(0)
    scores = [torch.randn(2, n, generator=gen) for n in (8, 8, 12, 8)]
    scores[1][0, 3] = scores[2][1, 0] = float("nan")
    advantages = torch.randn(2, 4, 5, generator=gen)
    mask = (torch.rand(4, 5, generator=gen) > 0.3).float()
    steps = [score_correlation(s) for s in scores]
    steps.insert(2, advantage_correlation(advantages, mask))
    stats = correlation_stats(steps, ["a", "b"])

    expected = []
    for s in scores:
        kept = s[:, ~torch.isnan(s).any(0)].double().numpy()
        expected.append(("diag/score_corr/a/b", _pearson(kept)))
    kept = advantages[:, mask.bool()].double().numpy()
    expected.insert(2, ("diag/adv_corr/a/b", _pearson(kept)))
    assert len(stats) == len(expected)
    for got, (key, value) in zip(stats, expected):
        assert got[key] == pytest.approx(value, abs=1e-12)
        assert got["diag/conflict_rate"] == float(value < 0)


@pytest.mark.parametrize(
    "settings,reads",
    [
        ({"aggregator": "linear", "reward_weights": [0.7, 0.3]}, False),
        ({"aggregator": "pama"}, False),
        ({"aggregator": "dwa"}, True),
        ({"aggregator": "linear", "constraints": ["vowel_reward>=2.5"]}, True),
    ],
    ids=["linear", "pama", "dwa", "constrained"],
)
def test_loss_values_are_formed_only_where_read(settings: dict[str, Any], reads: bool) -> None:
    """``−`` each objective's mean reward, for a method that decides from it (DWA) or the
    constraints' measurement; ``linear`` and PAMA read none."""
    from mogradient_llm.integrations import trl as a
    from mogradient_llm.integrations.trl.advantages import objective_advantages

    t = trainer(a.MOGRPOTrainer, trl_args(a.MOGRPOConfig, **settings))
    # negative rewards: DWA divides consecutive losses, which must stay positive
    rewards = -torch.tensor([[1.0, 2.0], [3.0, 0.5], [2.0, 2.0], [0.5, 4.0]] * 2)
    result = objective_advantages(t.mo_objective, t._estimator(G), rewards)
    if not reads:
        assert result.losses is None
    else:
        assert result.losses is not None
        torch.testing.assert_close(result.losses, -rewards.mean(0), rtol=0, atol=1e-6)
