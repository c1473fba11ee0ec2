"""A preference given under a method's alias or another spelling ``get_aggregator`` accepts
reaches the method: ``--aggregator morlhf --reward-weights 0 1`` weighs (0, 1), not equally."""

from __future__ import annotations

import numpy as np
import pytest

from mogradient.aggregation.registry import registered_class
from mogradient.aggregators.linear import Linear
from mogradient_llm.estimators.grpo import MOGRPOConfig
from mogradient_llm.objectives.building import aggregator_from
from mogradient_llm.run import build_aggregator


@pytest.mark.parametrize("name", ["morlhf", "MORLHF", "linear", " Linear "])
def test_the_preference_reaches_the_method_under_every_name(name) -> None:
    aggregator = aggregator_from(name, None, [0.0, 1.0], preference_name="reward_weights")
    assert isinstance(aggregator, Linear)
    np.testing.assert_array_equal(aggregator.weights(np.array([3.0, 1.0])), [0.0, 1.0])


def test_a_config_weighs_by_its_reward_weights() -> None:
    """The IMDb benchmark's MORLHF sweep: ``aggregator="morlhf"`` with ``reward_weights``."""
    config = MOGRPOConfig(aggregator="morlhf", reward_weights=[0.25, 0.75])
    aggregator = build_aggregator(config)
    assert isinstance(aggregator, Linear)
    weights = aggregator.weights(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(weights, [0.25, 0.75])  # exact: 0.25 and 0.75 are dyadic


def test_an_alias_of_a_method_without_preference_is_still_refused() -> None:
    assert registered_class("nope") is None
    with pytest.raises(TypeError, match="reward_weights=.*takes none"):
        aggregator_from("mgda", None, [0.5, 0.5], preference_name="reward_weights")
