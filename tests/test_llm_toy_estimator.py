"""Adding an RL algorithm needs nothing outside its own module: a toy estimator written here, a
REINFORCE with a batch-mean baseline and no KL, trains through the service layer
(:func:`mogradient_llm.run.train`) with no edit to the package."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from mogradient_llm.config import DEFAULT_GENERATION, MOConfig
from mogradient_llm.demo import demo_config
from mogradient_llm.estimators import MOPPOConfig, estimator_class, estimator_for
from mogradient_llm.estimators.base import (
    Estimate,
    Estimator,
    EstimatorInputs,
    Minibatch,
    Scalarize,
)
from mogradient_llm.estimators.grpo import GroupConfig
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.specs import ModelSpec, RunSpec


@dataclass
class ToyConfig(MOConfig):
    """The toy's one field besides the loop's."""

    algorithm: ClassVar[str] = "toy-reinforce"
    demo_preset: ClassVar[dict[str, Any]] = {"clip": 0.1}
    clip: float = 0.2


class ToyEstimator(Estimator[ToyConfig]):
    """Advantage of objective i on every token of a completion: its score minus the batch mean
    (an unscored completion gets 0)."""

    algorithm = "toy-reinforce"
    config_class = ToyConfig
    calls: ClassVar[list[torch.Tensor]] = []

    @property
    def needs_reference(self) -> bool:
        return False

    def estimate(self, inputs: EstimatorInputs, scalarize: Scalarize | None) -> Estimate:
        scores = torch.nan_to_num(inputs.scores)
        advantages = (scores - scores.mean(1, keepdim=True))[:, :, None] * inputs.mask
        ToyEstimator.calls.append(advantages)
        if scalarize is not None:  # a loss weighting: Σ wᵢ Aᵢ, one combined row
            return Estimate(Advantages.combined(scalarize(advantages)))
        return Estimate(Advantages.of(advantages, self.names, inputs.valid))

    @property
    def clip_range(self) -> tuple[float, float | None]:
        return self.config.clip, None

    def extra_loss(
        self, estimate: Estimate, rows: Minibatch
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return rows.logprobs.new_zeros(()), {}


def test_a_toy_estimator_defined_here_trains_through_the_service_layer(tmp_path) -> None:
    from mogradient_llm.loop.checkpoint import STATE_FILE
    from mogradient_llm.run import train

    config = ToyConfig(
        batch_size=4,
        mini_batch_size=4,
        max_steps=2,
        aggregator="upgrad",
        generation_kwargs={**DEFAULT_GENERATION, "max_new_tokens": 4},
    )
    assert estimator_class("toy-reinforce") is ToyEstimator
    assert estimator_for(config) is ToyEstimator
    run = RunSpec(
        output_dir=tmp_path / "out",
        rewards=("length", "vader"),
        model=ModelSpec(tiny_pretrain_steps=2),
        progress=False,
    )
    ToyEstimator.calls.clear()
    final = train(run, config)
    assert len(ToyEstimator.calls) == 2  # one estimate per step
    assert all(a.shape[:2] == (2, 4) for a in ToyEstimator.calls)  # k objectives x B rows
    state = json.loads((final / STATE_FILE).read_text())
    assert state["algorithm"] == "toy-reinforce" and state["step"] == 2
    rows = [
        json.loads(line) for line in (run.output_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("agg/weight/length" in r and "objective/scores/vader" in r for r in rows)


def test_the_demo_settings_come_from_each_config_class() -> None:
    """No algorithm name is switched on: the toy's own preset applies, and the built-in ones
    keep the demo's settings (PPO: 2 epochs, β = 0.05; GRPO/RLOO: 4 completions per prompt, 2
    iterations, β = 0.05, Noon on)."""
    toy = demo_config("pama", 0, "toy-reinforce")
    assert isinstance(toy, ToyConfig) and toy.clip == 0.1 and toy.batch_size == 32
    ppo = demo_config("pama", 0, "ppo")
    assert isinstance(ppo, MOPPOConfig)
    assert (ppo.num_ppo_epochs, ppo.kl_coef, ppo.learning_rate) == (2, 0.05, 3e-4)
    for algorithm in ("grpo", "rloo"):
        group = demo_config("pama", 0, algorithm)
        assert isinstance(group, GroupConfig)
        settings = (group.num_generations, group.num_iterations, group.beta, group.noon)
        assert settings == (4, 2, 0.05, True)
    grpo = demo_config("pama", 0, "grpo", beta=0.0)
    assert isinstance(grpo, GroupConfig) and grpo.beta == 0.0
