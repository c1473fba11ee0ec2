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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

from mogradient.aggregation.preference import DRAWN_PREFERENCE, DRAWN_SPARSE_PREFERENCE
from mogradient.aggregators import Aggregator, get_aggregator, registered
from mogradient.testing import (
    assert_permutation_invariant,
    check_claims,
    problems,
)
from mogradient.testing.strategies import Problem

#: A placeholder for a preference vector drawn with one positive entry per objective.
PREFERENCE = DRAWN_PREFERENCE
#: A placeholder for a preference vector with zero entries (where the method allows them).
SPARSE_PREFERENCE = DRAWN_SPARSE_PREFERENCE

#: A placeholder for the number of objectives, for constructors that require it.
N_OBJECTIVES = "<number of objectives>"
_NUMBER_OF_OBJECTIVES = frozenset({"n", "n_objectives", "n_tasks", "num_tasks", "k"})


def settings_of(name: str, cls: type[Aggregator]) -> list[dict[str, Any]]:
    """The defaults, the class's :attr:`~mogradient.aggregators.Aggregator.example_settings`
    and automatic ones: a drawn preference where the class is ``preference_aware``, another
    seed where it is ``seeded``, flipped booleans from the signature (and the number of
    objectives for a required ``n`` / ``n_tasks`` / ... argument)."""
    found: list[dict[str, Any]] = [{}, *(dict(s) for s in cls.example_settings)]
    if cls.preference_aware:
        found.append({"preference": PREFERENCE})
    if cls.seeded:
        found.append({"seed": 12345})
    params = inspect.signature(cls).parameters.values()
    required = {
        p.name: N_OBJECTIVES
        for p in params
        if p.default is inspect.Parameter.empty and p.name in _NUMBER_OF_OBJECTIVES
    }
    for param in params:
        if isinstance(param.default, bool):
            found.append({param.name: not param.default})
    unique: dict[str, dict[str, Any]] = {}
    for kwargs in found:
        kwargs = {**required, **kwargs}
        unique.setdefault(repr(sorted(kwargs.items())), kwargs)
    return list(unique.values())


METHODS = registered()
SETTINGS = {name: settings_of(name, cls) for name, cls in METHODS.items()}

MAX_N = 6  # objectives per problem: enough for every support pattern, cheap to solve
PROBLEMS = problems(n=(1, MAX_N), d=(1, 8), steps=(1, 3))
# Strategies built once (building one per example costs as much as drawing from it).
_CHOICE = st.integers(0, 31)
_FACTOR_EXPONENT = st.integers(-20, 20)
_PERMUTATIONS = {n: st.permutations(range(n)) for n in range(1, MAX_N + 1)}
_PREFERENCES = {
    n: st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n) for n in range(1, MAX_N + 1)
}


@dataclass(frozen=True)
class Example:
    """One contract example: a problem, which setting (an index into the method's settings,
    modulo their number: 0 = the defaults), a drawn preference vector (used by the settings
    that take one), a permutation of the objectives and a power-of-two scale factor."""

    problem: Problem
    setting: int
    preference: tuple[float, ...]
    permutation: tuple[int, ...]
    factor: float


@st.composite
def examples(draw: Any) -> Example:
    """A composite (cheaper per example than ``st.data()``, and printed whole on failure)."""
    problem = draw(PROBLEMS)
    return Example(
        problem=problem,
        setting=draw(_CHOICE),
        preference=tuple(draw(_PREFERENCES[problem.n])),
        permutation=tuple(draw(_PERMUTATIONS[problem.n])),
        factor=2.0 ** draw(_FACTOR_EXPONENT),
    )


def _resolve(kwargs: dict[str, Any], example: Example) -> dict[str, Any]:
    """The setting's placeholders filled from the example."""
    out = dict(kwargs)
    n = example.problem.n
    for key, value in kwargs.items():
        if value == N_OBJECTIVES:
            out[key] = n
        elif value == PREFERENCE:  # strictly positive
            out[key] = [0.05 + 0.95 * p for p in example.preference]
        elif value == SPARSE_PREFERENCE:  # zeros allowed, not all zero
            drawn = list(example.preference)
            out[key] = drawn if sum(drawn) > 0 else [1.0] + drawn[1:]
    return out


def test_the_registry_is_covered() -> None:
    assert {"mgda", "pcgrad", "cagrad", "linear", "mean", "pama"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.properties, f"{name} declares no properties"


def test_settings_are_read_from_the_class() -> None:
    """A method added on another branch gets its automatic settings with no edit here."""

    class Synthetic(Aggregator):
        preference_aware = True
        seeded = True

        def __init__(
            self,
            n_tasks: int,
            preference: list[float] | None = None,
            seed: int | None = 0,
            normalise: bool = True,
            rate: float = 0.1,
        ) -> None: ...

        def __call__(self, jacobian, losses=None):  # type: ignore[no-untyped-def]
            return jacobian.sum(0)

    found = settings_of("synthetic", Synthetic)
    assert found == [
        {"n_tasks": N_OBJECTIVES},
        {"n_tasks": N_OBJECTIVES, "preference": PREFERENCE},
        {"n_tasks": N_OBJECTIVES, "seed": 12345},
        {"n_tasks": N_OBJECTIVES, "normalise": False},
    ]


@pytest.mark.parametrize("name", sorted(METHODS))
@given(example=examples())
def test_claims_hold(name: str, example: Example) -> None:
    cls = METHODS[name]
    found = SETTINGS[name]
    kwargs = _resolve(found[example.setting % len(found)], example)

    def factory() -> Aggregator:
        return cls(**kwargs)

    note(f"{cls.__name__}(**{kwargs!r})")
    claims = factory().claims()
    problem = example.problem
    check_claims(
        factory,
        problem.jacobians,
        problem.losses,
        claims=claims,
        permutation=list(example.permutation),
        factor=example.factor,
    )


def _cagrad_permutation(
    c: float, jac: list[list[float]], permutation: list[int], dtype: torch.dtype = torch.float64
) -> None:
    jacobian = torch.tensor(jac, dtype=dtype)
    assert_permutation_invariant(
        lambda: get_aggregator("cagrad", c=c), jacobian, permutation=permutation
    )


#: CAGrad's permutation invariance failed on these before its g_w = 0 case was solved exactly
#: (the fallback to the mean depended on the order of the objectives; issue 11, item 5).
CAGRAD_FORMER_COUNTEREXAMPLES: list[tuple[str, dict[str, Any], str, Callable[[], None]]] = [
    (
        "cagrad",
        {},
        "permutation_invariant",
        # float32 at 1e-10: rows 0, 2 and 4 are g, g, −3g up to rounding, so 0 is (nearly) in
        # the hull; g_w ≈ 0 falls on either side of the fallback threshold depending on order
        lambda: _cagrad_permutation(
            0.4,
            [
                [1e-10, -1e-10, -3e-10, 2e-10],
                [3e-10, 1e-10, 2e-10, -1e-10],
                [1e-10, -1e-10, -3e-10, 2e-10],
                [-1e-10, 1e-10, -3e-10, -1e-10],
                [-3e-10, 3e-10, 9e-10, -6e-10],
                [3e-10, 1e-10, -2e-10, 1e-10],
            ],
            [0, 1, 2, 4, 3, 5],
            torch.float32,
        ),
    ),
    (
        "cagrad",
        {"c": 1.0},
        "permutation_invariant",
        # 0 is in the hull; d = 0 is the unique optimum (any d ≠ 0 has g·d < 0 for g = ±1),
        # one order returns it and the other the mean (−0.25), which conflicts with g = 1
        lambda: _cagrad_permutation(1.0, [[0.0], [1.0], [-1.0], [-1.0]], [1, 0, 2, 3]),
    ),
    (
        "cagrad",
        {"c": 2.5},
        "permutation_invariant",
        # strongly stationary: d = 0 is the only direction with every gᵢ·d ≥ 0
        lambda: _cagrad_permutation(
            2.5,
            [
                [-4.044388958837118, 2.022194479418559],
                [1.008092170002035, 0.33603072333401174],
                [-0.27469057265479335, -0.0499437404826897],
                [0.1369953806866982, -0.0684976903433491],
                [-2.593001134879434, 1.296500567439717],
            ],
            [0, 3, 2, 1, 4],
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "prop", "example"),
    CAGRAD_FORMER_COUNTEREXAMPLES,
    ids=[f"{name}-{prop}-{kwargs}" for name, kwargs, prop, _ in CAGRAD_FORMER_COUNTEREXAMPLES],
)
def test_cagrad_former_counterexamples_now_hold(
    name: str, kwargs: dict[str, Any], prop: str, example: Callable[[], None]
) -> None:
    assert prop in get_aggregator(name, **kwargs).claims()
    example()
