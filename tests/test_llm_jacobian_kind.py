"""Jacobian weightings in the RL wing: the multi-objective loss at the parameters level backs
the method's direction (decided from the policy losses' Jacobian) through one scalar, and the
features level, the layer-by-layer Gramian and a weighting of several constrained objectives
are refused naming the setting that works; our loop trains with
``parameter_gramian="jacobian"``, with one micro-batch or several."""

from __future__ import annotations

import math

import pytest
import torch

from mogradient import get_aggregator
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.objectives.loss import MultiObjectiveLoss
from mogradient_llm.objectives.surrogate import clipped_surrogate
from tests.llm_fixtures import make_trainer
from tests.trl_adapter_fixtures import trl_args

NAMES = ("helpful", "short")


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A mask [3, 4], advantages [2, 3, 4], a linear head W (leaf), its log-probs, old ones."""
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    adv = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    features = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    logprobs = -torch.nn.functional.softplus(features @ weight)
    return mask, adv, weight, logprobs, logprobs.detach() - 0.05


@pytest.mark.parametrize("name", ["excess-mtl", "db-mtl", "moco"])
def test_the_loss_backs_the_direction_of_the_jacobian(name: str) -> None:
    """Two calls: the gradient of the returned scalar over W is the direction a twin instance
    gives on the Jacobian of the per-objective policy losses (taken here by autograd)."""
    mask, adv, weight, logprobs, old = _problem()
    agg, twin = get_aggregator(name), get_aggregator(name)
    loss = MultiObjectiveLoss(agg, NAMES, level="parameters")
    token_weights = mask / mask.sum()

    def policy(rows: torch.Tensor) -> torch.Tensor:
        return clipped_surrogate(logprobs, old, rows, token_weights, 0.2)[0]

    values = torch.tensor([1.5, 0.5], dtype=torch.float64)
    for call in range(2):
        out = loss(Advantages.of(adv, NAMES), policy, mask, gradient_of=[weight], losses=values)
        each = policy(adv * mask)
        jac = torch.stack([torch.autograd.grad(li, weight, retain_graph=True)[0] for li in each])
        expected = twin(jac, values)
        (got,) = torch.autograd.grad(out.loss, weight)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0.0, msg=f"call {call}")
        assert out.weights is None
        assert out.stats["agg/direction_norm"] == pytest.approx(float(expected.norm()))
        assert "diag/grad_cos/helpful/short" in out.stats


def test_the_features_level_is_refused_naming_the_setting_that_works() -> None:
    with pytest.raises(
        ValueError, match="gramian_level='parameters'.*parameter_gramian='jacobian'"
    ):
        MultiObjectiveLoss(get_aggregator("moco"), NAMES, level="features")


def _rewards() -> list[Reward]:
    def short(prompts, completions):  # in [-2, -1]: positive losses for db-mtl
        return [-1.0 - min(len(c) / 40.0, 1.0) for c in completions]

    def wordy(prompts, completions):
        return [-3.0 + min(len(c.split()) / 4.0, 2.0) for c in completions]

    return [Reward(short, name="short"), Reward(wordy, name="wordy")]


def test_the_loop_refuses_the_features_level() -> None:
    with pytest.raises(ValueError, match="parameter_gramian='jacobian'"):
        make_trainer(_rewards(), aggregator="moco", gramian_level="features")


def test_the_loop_refuses_the_layer_by_layer_gramian() -> None:
    with pytest.raises(ValueError, match="set parameter_gramian='jacobian'"):
        make_trainer(_rewards(), aggregator="excess-mtl", parameter_gramian="layers")


def test_constraints_over_several_weighed_objectives_are_refused() -> None:
    rewards = [*_rewards(), Reward(lambda p, c: [-1.0] * len(c), name="third")]
    with pytest.raises(ValueError, match="decides from gradients"):
        make_trainer(
            rewards,
            aggregator="moco",
            parameter_gramian="jacobian",
            constraints=["third>=-2"],
        )


@pytest.mark.parametrize("micro_batches", [1, 2])
@pytest.mark.parametrize("name", ["excess-mtl", "db-mtl", "moco"])
def test_the_loop_trains_with_the_jacobian(name: str, micro_batches: int) -> None:
    trainer = make_trainer(
        _rewards(),
        aggregator=name,
        parameter_gramian="jacobian",
        gradient_accumulation_steps=micro_batches,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    stats = trainer.step()
    assert math.isfinite(stats["agg/direction_norm"]) and stats["agg/direction_norm"] > 0
    moved = any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    assert moved


def test_trl_trainers_refuse_a_jacobian_weighting_naming_where_it_trains(tmp_path) -> None:
    from mogradient_llm.integrations.trl.configs import MOGRPOConfig, objective_loss_of

    args = trl_args(MOGRPOConfig, output_dir=str(tmp_path), aggregator="db-mtl")
    with pytest.raises(ValueError, match="parameter_gramian='jacobian'"):
        objective_loss_of(args, ["short", "wordy"])


def test_the_tracked_gradients_are_checkpointed(tmp_path) -> None:
    """MoCo's k×d tracked gradients and λ come back on resume."""
    trainer = make_trainer(_rewards(), aggregator="moco", parameter_gramian="jacobian")
    trainer.step()
    trainer.save(tmp_path / "checkpoint-1")
    tracked = trainer.aggregator._tracked.clone()
    weights = trainer.aggregator.task_weights.copy()
    del trainer
    resumed = make_trainer(_rewards(), aggregator="moco", parameter_gramian="jacobian")
    assert resumed.aggregator._tracked is None
    resumed.load_checkpoint(tmp_path / "checkpoint-1")
    assert torch.equal(resumed.aggregator._tracked, tracked)
    assert (resumed.aggregator.task_weights == weights).all()
