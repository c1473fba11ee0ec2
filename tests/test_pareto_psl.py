"""Pareto set learning: one model's front against the sweep's and against the exact solutions,
points ordered by their preference (sweep and PSL alike), the result type, bad inputs."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

import mogradient
from mogradient.pareto import (
    SweepResult,
    get_problem,
    hypervolume,
    pareto_set_learning,
    preference_sweep,
    simplex_lattice,
)

#: VLMOP2 with two variables: the quadratics ``|x ∓ a|^2 / 4`` (|a| = 1), a convex front.
#: ``p1 f1 + p2 f2`` (p on the simplex) is minimised at ``x = (p1 - p2) a``, where
#: ``f1 = p2^2`` and ``f2 = p1^2``: each preference's exact solution is known.
PREFERENCES = simplex_lattice(2, 11)[1:-1]  # p1 = 0.1 ... 0.9: each objective has some weight


def vlmop2() -> mogradient.pareto.Problem:
    return get_problem("vlmop2", n_var=2)


def factory(name: str):  # noqa: ANN201 - a preference -> Aggregator callable
    return lambda p: mogradient.get_aggregator(name, preference=p)


@functools.cache
def front_of(solver: str, method: str) -> SweepResult:
    """The 9 preferences' points on VLMOP2 from a sweep or from PSL (each run once per module)."""
    if solver == "sweep":
        return preference_sweep(vlmop2(), factory(method), PREFERENCES, steps=100)
    return pareto_set_learning(
        vlmop2(), factory(method), PREFERENCES, steps=200, batch=8, lr=0.03, seed=1
    )


def exact_linear_points(preferences: np.ndarray) -> np.ndarray:
    return np.stack([preferences[:, 1] ** 2, preferences[:, 0] ** 2], axis=1)


def test_linear_psl_decodes_each_preference_near_its_exact_solution() -> None:
    """The exact values ``f1 = p2^2`` of neighbouring preferences (p2 in steps of 0.1) are at
    least 0.03 apart (``f2 = p1^2`` alike), so an error below half that, 0.015, leaves every
    decoded point nearest its own exact solution; the hypervolume then reaches at least 95% of
    the sweep's on the same 9 preferences (an error of 0.015 in both objectives of 9 points
    costs well under 5% of a volume of order 1)."""
    psl = front_of("psl", "linear")
    np.testing.assert_allclose(psl.F, exact_linear_points(PREFERENCES), atol=0.015)
    assert psl.hypervolume >= 0.95 * front_of("sweep", "linear").hypervolume


@pytest.mark.parametrize("method", ["linear", "tchebycheff", "epo"])
@pytest.mark.parametrize("solver", ["sweep", "psl"])
def test_more_weight_on_an_objective_gives_a_lower_value_of_it(method: str, solver: str) -> None:
    """The preference direction: sorted by ``p1`` the points have falling ``f1`` and rising
    ``f2`` (VLMOP2's per-objective optima ``x = ±a`` differ). Every method here ends, for
    ``p``, where its scalarisation in ``p`` is minimal, and on a front those minimisers move
    monotonically along it as ``p1`` grows; loss weighting (linear, Tchebycheff) and Gramian
    weighting (EPO) alike."""
    result = front_of(solver, method)
    order = np.argsort(PREFERENCES[:, 0])
    f1, f2 = result.F[order].T
    assert (np.diff(f1) < 0).all(), f"f1 does not fall as p1 grows: {f1.tolist()}"
    assert (np.diff(f2) > 0).all(), f"f2 does not rise as p1 grows: {f2.tolist()}"


def test_result_type_and_evaluation_count_are_the_sweeps() -> None:
    problem = get_problem("zdt1", n_var=4)
    result = pareto_set_learning(problem, factory("stch"), 5, steps=3, batch=4)
    assert type(result) is SweepResult
    assert [f.name for f in dataclasses.fields(result)] == [
        f.name for f in dataclasses.fields(SweepResult)
    ]
    assert result.preferences.shape == (5, 2) and result.F.shape == (5, 2)
    assert result.x.shape == (5, 4) and result.x.dtype == torch.float64
    assert ((result.x > 0) & (result.x < 1)).all()  # inside the box (sigmoid output)
    np.testing.assert_allclose(problem.evaluate(result.x).numpy(), result.F)
    assert result.n_evals == 3 * 4 + 5
    assert result.hypervolume == hypervolume(result.F[result.non_dominated], result.ref_point)


def test_same_seed_same_front_other_seed_other_front() -> None:
    problem = vlmop2()
    run = lambda seed: pareto_set_learning(  # noqa: E731
        problem, factory("tchebycheff"), 4, steps=5, batch=3, seed=seed
    )
    np.testing.assert_array_equal(run(3).F, run(3).F)
    assert not np.array_equal(run(3).F, run(4).F)


def test_bad_inputs_get_clear_errors() -> None:
    problem = vlmop2()
    with pytest.raises(TypeError, match="preference-aware aggregator.*MGDA"):
        pareto_set_learning(problem, lambda p: mogradient.get_aggregator("mgda"), 4, steps=1)
    with pytest.raises(ValueError, match=r"shape \[P, 2\] with P >= 1"):
        pareto_set_learning(problem, factory("linear"), np.zeros((0, 2)), steps=1)
    with pytest.raises(ValueError, match="at least 1"):
        pareto_set_learning(problem, factory("linear"), 0, steps=1)
    with pytest.raises(TypeError, match="not a mogradient Aggregator"):
        pareto_set_learning(problem, lambda p: "linear", 4, steps=1)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        pareto_set_learning(problem, factory("linear"), 4, batch=0)
    with pytest.raises(ValueError, match="concentration must be a finite number > 0"):
        pareto_set_learning(problem, factory("linear"), 4, concentration=0.0)
    with pytest.raises(TypeError, match="mogradient.pareto.Problem"):
        pareto_set_learning("vlmop2", factory("linear"), 4)  # type: ignore[arg-type]
