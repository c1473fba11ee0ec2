"""The contract: every registered method's claimed properties hold (``mogradient.testing``).

One hypothesis test per registered method (found at collection time, so a new module is picked
up with no edit here). Each example draws a multi-step problem (any construction, shape, rank,
scale 0 and 1e-10…1e15, float32/float64), one of the method's hyper-parameter settings (the
defaults and a few non-default ones), a permutation and a power-of-two scale factor, and checks
every property the instance claims with :func:`mogradient.testing.check_claims`. The number of
examples comes from the hypothesis profile (``tests/conftest.py``): 1,000 per method under CI.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mogradient.aggregators import Aggregator, registered
from mogradient.testing import check_claims, problems

#: A placeholder for a preference vector drawn with one positive entry per objective.
PREFERENCE = "<drawn preference>"
#: A placeholder for a preference vector with zero entries (where the method allows them).
SPARSE_PREFERENCE = "<drawn preference with zeros>"

#: Non-default hyper-parameters checked besides the defaults. Methods not listed here still get
#: the automatic ones (see :func:`settings_of`).
NON_DEFAULT: dict[str, list[dict[str, Any]]] = {
    "mgda": [{"warm_start": True}],
    "pcgrad": [{"seed": 7}, {"seed": None}],
    "cagrad": [{"c": 0.0}, {"c": 0.9}, {"c": 1.0}, {"c": 2.5}],
    "linear": [{"preference": PREFERENCE}, {"preference": SPARSE_PREFERENCE}],
    "pama": [{"granularity": "batch"}],
}


def settings_of(name: str, cls: type[Aggregator]) -> list[dict[str, Any]]:
    """The defaults, the listed non-default settings and automatic ones from the signature: a
    drawn preference for ``preference=``, another seed for ``seed=``, flipped booleans."""
    found: list[dict[str, Any]] = [{}, *NON_DEFAULT.get(name, [])]
    for param in inspect.signature(cls).parameters.values():
        if param.name == "preference":
            found.append({"preference": PREFERENCE})
        elif param.name == "seed":
            found.append({"seed": 12345})
        elif isinstance(param.default, bool):
            found.append({param.name: not param.default})
    unique: dict[str, dict[str, Any]] = {}
    for kwargs in found:
        unique.setdefault(repr(sorted(kwargs.items())), kwargs)
    return list(unique.values())


METHODS = registered()
SETTINGS = {name: settings_of(name, cls) for name, cls in METHODS.items()}
FACTORS = st.integers(-20, 20).map(lambda k: 2.0**k)


def _resolve(kwargs: dict[str, Any], n: int, data: st.DataObject) -> dict[str, Any]:
    out = dict(kwargs)
    for key, value in kwargs.items():
        if value in (PREFERENCE, SPARSE_PREFERENCE):
            low = 0.0 if value == SPARSE_PREFERENCE else 0.05
            entries = st.lists(st.floats(low, 1.0), min_size=n, max_size=n)
            drawn = data.draw(entries.filter(lambda p: sum(p) > 0), label=key)
            out[key] = drawn
    return out


def test_the_registry_is_covered() -> None:
    assert {"mgda", "pcgrad", "cagrad", "linear", "mean", "pama"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.properties, f"{name} declares no properties"


@pytest.mark.parametrize("name", sorted(METHODS))
@given(problem=problems(), data=st.data())
def test_claims_hold(name: str, problem: Any, data: st.DataObject) -> None:
    cls = METHODS[name]
    choice = data.draw(st.sampled_from(SETTINGS[name]), label="hyper-parameters")
    kwargs = _resolve(choice, problem.n, data)
    permutation = data.draw(st.permutations(range(problem.n)), label="permutation")
    factor = data.draw(FACTORS, label="factor")

    def factory() -> Aggregator:
        return cls(**kwargs)

    check_claims(factory, problem.jacobians, problem.losses, permutation=permutation, factor=factor)
