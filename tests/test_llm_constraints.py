"""Constraint objectives (Safe RLHF's Lagrangian at the advantage level): parsing, the
multipliers' dual ascent and PID updates against the update written out by hand, the combined
advantage against its formula, and training with a constraint through the loop, logged,
checkpointed and resumed."""

from __future__ import annotations

import json

import pytest
import torch

from mogradient import get_aggregator
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.objectives.constraints import Constraint, Lagrangian
from mogradient_llm.objectives.loss import MultiObjectiveLoss


def test_constraints_parse_and_refuse_what_is_not_one() -> None:
    assert Constraint.parse("sentiment>=0.8") == Constraint("sentiment", ">=", 0.8)
    assert Constraint.parse(" length <= -1e-1 ") == Constraint("length", "<=", -0.1)
    for bad in ("sentiment>0.8", "sentiment=0.8", ">=0.8", "sentiment>=high"):
        with pytest.raises(ValueError, match="OBJECTIVE>=VALUE|not a number"):
            Constraint.parse(bad)
    with pytest.raises(ValueError, match="no reward is named"):
        Lagrangian(["toxicity<=0.1"], ["helpful", "short"])
    with pytest.raises(ValueError, match="leave at least one unconstrained"):
        Lagrangian(["helpful>=0", "short<=1"], ["helpful", "short"])
    with pytest.raises(ValueError, match="one constraint per objective"):
        Lagrangian(["short<=1", "short<=2"], ["helpful", "short"])


def test_dual_ascent_follows_the_violation_and_stays_non_negative() -> None:
    """λ ← max(0, λ + η (τ − J)) for ≥, η (J − τ) for ≤."""
    lag = Lagrangian(["b>=0.5", "c<=1.0"], ["a", "b", "c"], lr=0.1)
    lag.update(torch.tensor([0.0, 0.2, 1.5], dtype=torch.float64))  # b: −0.3, c: +0.5
    assert lag.multipliers == pytest.approx([0.03, 0.05], abs=1e-15)
    lag.update(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # b: 0.03 − 0.05 < 0
    assert lag.multipliers == pytest.approx([0.0, 0.0], abs=1e-15)
    stats = lag.stats()
    assert stats["constraint/b/value"] == 1.0 and stats["constraint/b/satisfied"] == 1.0


def test_the_pid_lagrangian_adds_proportional_and_derivative_terms() -> None:
    """Stooke et al. 2020: λ = max(0, kp e + I + kd max(0, e − e_prev)), I ← max(0, I + ki e)."""
    lag = Lagrangian(["b>=1.0"], ["a", "b"], lr=0.1, kp=2.0, kd=3.0)
    lag.update(torch.tensor([0.0, 0.5], dtype=torch.float64))  # e = 0.5: λ = 1 + 0.05 + 1.5
    assert lag.multipliers[0] == pytest.approx(2.55, abs=1e-15)
    lag.update(torch.tensor([0.0, 0.75], dtype=torch.float64))  # e = 0.25, falling: no kd term
    assert lag.multipliers[0] == pytest.approx(0.575, abs=1e-15)


def test_the_constrained_advantage_is_safe_rlhfs() -> None:
    """A = (A_primary + Σ λⱼ sⱼ Aⱼ) / (1 + Σ λⱼ), the primary objectives combined by the
    aggregator (linear, p = (0.25, 0.75)) first."""
    names = ["a", "b", "c", "d"]
    lag = Lagrangian(["c>=0.5", "d<=1.0"], names)
    lag.multipliers = [0.4, 0.6]
    loss = MultiObjectiveLoss(
        get_aggregator("linear", preference=[0.25, 0.75]), names, constraints=lag
    )
    adv = torch.arange(24, dtype=torch.float64).reshape(4, 2, 3) - 10.0
    mask = torch.ones(2, 3, dtype=torch.float64)
    combined, stats = loss.prepare(Advantages.of(adv, names), mask, torch.zeros(4))
    primary = 0.25 * adv[0] + 0.75 * adv[1]
    expected = (primary + 0.4 * adv[2] - 0.6 * adv[3]) / 2.0
    torch.testing.assert_close(combined.values[0], expected, rtol=0, atol=1e-13)
    assert combined.is_combined and stats["agg/weight/b"] == 0.75
    assert loss.scalarizer(torch.zeros(4), {}) is None  # not inside the estimator's pipeline


def test_gramian_methods_take_constraints_with_one_primary_objective_only() -> None:
    lag = Lagrangian(["b>=0.5"], ["a", "b"])
    loss = MultiObjectiveLoss(get_aggregator("mgda"), ["a", "b"], constraints=lag)
    assert not loss.gradient_level  # one primary row joined with the constraint: one loss
    with pytest.raises(ValueError, match="advantage- or loss-level aggregator"):
        MultiObjectiveLoss(
            get_aggregator("mgda"), ["a", "b", "c"], constraints=Lagrangian(["c>=0"], "abc")
        )


def _constrained_trainer(algorithm: str):
    from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
    from tests.llm_fixtures import make_trainer

    return make_trainer(
        [LengthReward(), VaderReward()],
        algorithm=algorithm,
        aggregator="pama",
        constraints=["length>=10"],
        constraint_lr=0.01,
    )


@pytest.mark.parametrize("algorithm", ["grpo", "ppo", "rloo"])
def test_a_violated_constraint_raises_its_multiplier_in_training(algorithm) -> None:
    """Length ≥ 10 cannot hold (the length reward is at most 1.5): λ grows by η (10 − J) per
    step, J the step's mean length score, and is logged."""
    stats = _constrained_trainer(algorithm).step()
    expected = 0.01 * (10 - stats["objective/scores/length"])
    assert stats["constraint/length/multiplier"] == pytest.approx(expected, rel=1e-12)
    assert stats["constraint/length/satisfied"] == 0.0


def test_the_multipliers_are_checkpointed_and_resumed(tmp_path) -> None:
    first = _constrained_trainer("grpo")
    first.step()
    first.save(tmp_path / "checkpoint-1")
    state = json.loads((tmp_path / "checkpoint-1" / "trainer_state.json").read_text())
    multipliers = first.objective.constraints.multipliers
    assert state["objective"]["constraints"]["multipliers"] == multipliers and multipliers[0] > 0
    resumed = _constrained_trainer("grpo")
    resumed.load_checkpoint(tmp_path / "checkpoint-1")
    assert resumed.objective.constraints.multipliers == multipliers
