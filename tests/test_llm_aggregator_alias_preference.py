"""A preference given with an aggregator's alias or another spelling reaches the aggregator:
``morlhf`` (the IMDb benchmark's sweep and conditioned policy) is ``linear``, and its
``reward_weights`` must weigh the objectives, not be dropped for the uniform preference."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.rlhf_imdb.runs import run_config
from mogradient import LossWeighting, get_aggregator, registered
from mogradient.aggregation.registry import aliases_of, registered_class
from mogradient_llm.loop.setup import objective_loss
from mogradient_llm.objectives.building import aggregator_from

PREFERENCE = [0.2, 0.8]


def _aliases() -> list[tuple[str, str]]:
    return [
        (alias, name)
        for name, cls in registered().items()
        if cls.preference_aware
        for alias in aliases_of(name)
    ]


def test_morlhf_is_an_alias_of_a_preference_aware_method() -> None:
    assert ("morlhf", "linear") in _aliases()


@pytest.mark.parametrize(("alias", "name"), _aliases())
@pytest.mark.parametrize("spell", [str, str.upper])
def test_an_alias_keeps_its_preference(alias: str, name: str, spell) -> None:
    """The aggregator built from the alias equals the canonical one built with the preference
    directly (same repr: the same class and arguments)."""
    built = aggregator_from(spell(alias), None, PREFERENCE, preference_name="reward_weights")
    assert repr(built) == repr(get_aggregator(name, preference=PREFERENCE))


@pytest.mark.parametrize("alias", ["nashmtl", "random", "uncertainty"])
def test_a_preference_for_an_alias_of_a_method_without_one_is_refused(alias: str) -> None:
    cls = registered_class(alias)
    assert cls is not None and not cls.preference_aware
    with pytest.raises(TypeError, match="takes none"):
        aggregator_from(alias, None, PREFERENCE)


def test_registered_class_resolves_names_like_get_aggregator() -> None:
    for name in registered():
        for spelling in (name, name.upper(), name.replace("-", "_"), *aliases_of(name)):
            assert registered_class(spelling) is type(get_aggregator(spelling))
    assert registered_class("no-such-method") is None


def test_a_sweep_points_loss_weighs_the_objectives_by_its_preference() -> None:
    """The IMDb sweep point ``(0.2, 0.8)`` (``morlhf`` with ``reward_weights``): its loss's
    weights are the preference (an exact float64 division: compared to 1e-12)."""
    config = run_config("grpo", "morlhf", 0, 4, 8, 2, False, (0.2, 0.8))
    loss = objective_loss(config, ["sentiment", "length"])
    assert isinstance(loss.aggregator, LossWeighting)
    weights = loss.aggregator.weights(np.array([1.0, 3.0]))
    np.testing.assert_allclose(weights, PREFERENCE, atol=1e-12)
