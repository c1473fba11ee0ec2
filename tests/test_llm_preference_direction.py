"""The preference is applied the right way round in the RL loop: of two completions of one
prompt, the one better on the objective with the larger weight gets the larger combined
advantage, and swapping the weights swaps the order — for the three ways a preference reaches
the loop (``reward_weights`` as the IMDb benchmark's sweep sets them, the sweep's
``aggregator_kwargs["preference"]``, and a conditioned policy's drawn preference)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mogradient_llm.loop.trainer import MOTrainer
from mogradient_llm.pareto.sweep import config_for_preference
from tests.llm_fixtures import load_tiny_lm, tiny_config, tiny_prompts


def first(prompts, completions, **kwargs):
    return [0.0] * len(completions)  # the scores are given to prepare_batch directly


def second(prompts, completions, **kwargs):
    return [0.0] * len(completions)


def _trainer(algorithm: str, source: str, weights: list[float]) -> MOTrainer:
    """A trainer whose preference ``weights`` (on ``first``, ``second``) reaches the loop
    through ``source``; one prompt of two completions per step, no KL, no Noon clip."""
    settings = {"num_generations": 2, "batch_size": 2, "mini_batch_size": 2, "noon": False}
    config = tiny_config(algorithm, aggregator="linear", beta=0.0, **settings)
    if source == "reward_weights":
        config = dataclasses.replace(config, reward_weights=weights)
    elif source == "sweep":
        config = config_for_preference(config, weights)
    else:
        config = dataclasses.replace(config, conditioned=True)
    model, tokenizer = load_tiny_lm()
    return MOTrainer(config, model, tokenizer, [first, second], tiny_prompts(tokenizer))


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
@pytest.mark.parametrize("source", ["reward_weights", "sweep", "conditioned"])
def test_the_weighted_objective_wins_the_advantage(algorithm: str, source: str) -> None:
    """Completion 0 scores (1, 0), completion 1 scores (0, 1): under weights (0.8, 0.2) on the
    first objective completion 0 must get the larger advantage, under (0.2, 0.8) completion 1."""
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for weights, winner in (([0.8, 0.2], 0), ([0.2, 0.8], 1)):
        trainer = _trainer(algorithm, source, weights)
        rows = trainer.sample_prompts()
        prefs = np.array([weights]) if source == "conditioned" else None
        rollout = trainer.generate(rows, prefs)
        batch = trainer.prepare_batch(rollout, scores, prefs)
        per_sample = (batch.advantages[0] * batch.mask).sum(1) / batch.mask.sum(1)
        assert int(per_sample.argmax()) == winner, (weights, per_sample)
        logged = batch.stats["agg/weight/first"] > batch.stats["agg/weight/second"]
        assert logged == (winner == 0)
