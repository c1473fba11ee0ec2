"""Every registered method runs inside every estimator (PPO, GRPO, RLOO) at the level its kind
calls for (Jacobian weightings: the parameters with ``parameter_gramian="jacobian"``).

Rewards stay negative, so the objectives' losses (−mean score) are positive and the methods
that take logarithms or ratios of losses (GLS, DWA, FAMO, UW) can run; with positive rewards
they must refuse by name.
"""

from __future__ import annotations

import math

import pytest

import mogradient
from mogradient_llm.inputs.builtin_rewards import LengthReward
from mogradient_llm.inputs.rewards import Reward
from tests.llm_fixtures import make_trainer

#: The methods whose class says they refuse negative losses (``needs_positive_losses``).
NEEDS_POSITIVE_LOSSES = {n for n, c in mogradient.registered().items() if c.needs_positive_losses}


def _negative_rewards() -> list[Reward]:
    def short(prompts, completions):  # in [-2, -1]: shorter is better
        return [-1.0 - min(len(c) / 40.0, 1.0) for c in completions]

    def wordy(prompts, completions):  # in [-3, -1]: more words is better
        return [-3.0 + min(len(c.split()) / 4.0, 2.0) for c in completions]

    return [Reward(short, name="short"), Reward(wordy, name="wordy")]


#: The methods that decide from two independent batches (``needs_two_batches``): refused by
#: the RL loss, which has one minibatch per step.
NEEDS_TWO_BATCHES = {n for n, c in mogradient.registered().items() if c.needs_two_batches}


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo"])
@pytest.mark.parametrize("name", sorted(set(mogradient.registered()) - NEEDS_TWO_BATCHES))
def test_one_step_with_every_method(name: str, algorithm: str) -> None:
    settings = _level_of(name)
    trainer = make_trainer(_negative_rewards(), aggregator=name, algorithm=algorithm, **settings)
    stats = trainer.step()
    if settings:  # a direction, not weights
        assert math.isfinite(stats["agg/direction_norm"]), (name, stats)
    else:
        weights = [stats[k] for k in ("agg/weight/short", "agg/weight/wordy")]
        assert all(math.isfinite(w) for w in weights), (name, stats)
    assert math.isfinite(stats["loss/policy_avg"])


def _level_of(name: str) -> dict[str, str]:
    """The setting a Jacobian weighting needs in the loop (none for the other kinds)."""
    if issubclass(mogradient.registered()[name], mogradient.JacobianWeighting):
        return {"parameter_gramian": "jacobian"}
    return {}


@pytest.mark.parametrize("name", sorted(NEEDS_POSITIVE_LOSSES & set(mogradient.registered())))
def test_methods_needing_positive_losses_refuse_positive_rewards(name: str) -> None:
    rewards = [
        Reward(LengthReward(scale=20.0 * i, low=0.5, high=2.0), name=f"len{i}") for i in (1, 2)
    ]
    trainer = make_trainer(rewards, aggregator=name, **_level_of(name))
    with pytest.raises(ValueError, match="objective"):
        trainer.step()


@pytest.mark.parametrize("name", sorted(NEEDS_TWO_BATCHES))
def test_methods_needing_two_batches_are_refused_with_the_fix(name: str) -> None:
    with pytest.raises(ValueError, match="needs_two_batches.*second_losses="):
        make_trainer(_negative_rewards(), aggregator=name)
