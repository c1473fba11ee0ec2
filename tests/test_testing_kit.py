"""Tests of the property-testing kit itself (``mogradient.testing``).

Every check must fail on a deliberately broken aggregator and pass on a correct one; every
strategy must produce what it promises, verified independently (linear programs with scipy,
ranks with numpy), not with the library's own solvers.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregators import (
    AdvantageCombiner,
    Combination,
    GramianWeighting,
    LossWeighting,
    get_aggregator,
    gramian_of,
)
from mogradient.testing import (
    PROPERTIES,
    PropertyViolation,
    Tolerance,
    assert_deterministic,
    assert_min_norm_kkt,
    assert_non_conflicting,
    assert_non_differentiable,
    assert_non_negative_weights,
    assert_permutation_invariant,
    assert_reset_restores,
    assert_scale_equivariant,
    assert_simplex_weights,
    check_claims,
    conflicting_jacobians,
    gramians,
    jacobians,
    loss_values,
    make_factory,
    non_stationary_jacobians,
    pareto_stationary_jacobians,
    problems,
    random_jacobian,
    strongly_stationary_jacobians,
)
from mogradient.testing.strategies import Problem
from tests.references import linprog_settled

ALL = frozenset(PROPERTIES)

# -- reference aggregators: correct ones, and one broken one per property -----------------


def brute_force_min_norm(gram: np.ndarray) -> np.ndarray:
    """Min cᵀGc on the simplex by enumerating supports (small n), independent of the solver."""
    n = gram.shape[0]
    top = float(np.max(np.diag(gram)))
    if top > 0:
        gram = gram / top  # the comparisons below are relative
    best, best_c = np.inf, np.full(n, 1.0 / n)
    for r in range(1, n + 1):
        for support in itertools.combinations(range(n), r):
            s = list(support)
            m = np.block(
                [[gram[np.ix_(s, s)], np.ones((r, 1))], [np.ones((1, r)), np.zeros((1, 1))]]
            )
            rhs = np.concatenate([np.zeros(r), [1.0]])
            x = np.linalg.lstsq(m, rhs, rcond=None)[0][:r]
            if np.all(x >= -1e-12):
                c = np.zeros(n)
                c[s] = np.clip(x, 0.0, None)
                c /= c.sum()
                value = c @ gram @ c
                if value < best - 1e-15:  # G is normalised: absolute is relative
                    best, best_c = value, c
    return best_c


class BruteMinNorm(GramianWeighting):
    """Correct: the exact min-norm weights by enumeration."""

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "non_conflicting",
            "permutation_invariant",
            "scale_equivariant",
            "min_norm_kkt",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return brute_force_min_norm(gramian)


class Uniform(GramianWeighting):
    """Correct: 1/n each (claims what the mean has)."""

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return np.full(gramian.shape[0], 1.0 / gramian.shape[0])


class SumsToMore(Uniform):
    """Broken simplex: the weights sum to 1.1."""

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return np.full(gramian.shape[0], 1.1 / gramian.shape[0])


class NegativeWeight(Uniform):
    """Broken non-negativity: w = (1.5, −0.5) on two objectives (sums to 1)."""

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        w = np.full(n, 1.0 / n)
        if n > 1:
            w[0] += 0.5
            w[1] -= 0.5
        return w


class FirstObjective(Uniform):
    """Broken permutation invariance: all the weight on objective 0."""

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        w = np.zeros(gramian.shape[0])
        w[0] = 1.0
        return w


class Normalised(Uniform):
    """Broken scale equivariance: the mean direction scaled to unit length."""

    properties = Uniform.properties - {"simplex_weights"}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        w = np.full(n, 1.0 / n)
        norm = np.sqrt(max(w @ gramian @ w, 0.0))
        return w / norm if norm > 0 else w


class Regularised(BruteMinNorm):
    """Broken scale equivariance, subtly: an absolute ridge 1e-8·I added to the Gramian."""

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return brute_force_min_norm(gramian + 1e-8 * np.eye(gramian.shape[0]))


class AlmostMinNorm(BruteMinNorm):
    """Broken KKT: the min-norm weights mixed with 1e-3 of the uniform weights."""

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        return (1 - 1e-3) * brute_force_min_norm(gramian) + 1e-3 / n


class SeededDirichlet(GramianWeighting):
    """Correct random method: Dirichlet weights from a seeded stream that reset() restarts."""

    properties = frozenset(
        {"simplex_weights", "scale_equivariant", "deterministic", "reset_restores"}
    )

    def __init__(self, seed: int | None = 0) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def _hyperparameters(self) -> dict[str, object]:
        return {"seed": self.seed}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        return self._rng.dirichlet(np.ones(gramian.shape[0]))

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)


class ForgetfulReset(SeededDirichlet):
    """Broken reset: reset() leaves the random stream where it is."""

    def reset(self) -> None:
        return None


class EMAOfGramian(BruteMinNorm):
    """Correct stateful method: min-norm weights of a running mean of the Gramians."""

    def __init__(self, beta: float = 0.5) -> None:
        self.beta = beta
        self._ema: np.ndarray | None = None

    def _hyperparameters(self) -> dict[str, object]:
        return {"beta": self.beta}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        if self._ema is None:
            self._ema = gramian.copy()
        else:
            self._ema = self.beta * self._ema + (1 - self.beta) * gramian
        return brute_force_min_norm(self._ema)

    def reset(self) -> None:
        self._ema = None

    def claims(self):  # type: ignore[no-untyped-def]
        # min-norm of the running mean, not of this step's Gramian
        return frozenset(
            {"simplex_weights", "deterministic", "reset_restores", "scale_equivariant"}
        )


class EMAWithoutReset(EMAOfGramian):
    """Broken reset: forgets to clear the running mean."""

    def reset(self) -> None:
        return None


class WithGraph(Uniform):
    """Broken non-differentiability: the direction is wᵀJ with a graph through J."""

    def __call__(self, jacobian, losses=None):  # type: ignore[no-untyped-def]
        w = self.weights(gramian_of(jacobian.detach()))
        return w.to(jacobian.dtype) @ jacobian


class LossSoftmax(LossWeighting):
    """Correct loss weighting: softmax of the loss values (permutation-invariant)."""

    properties = frozenset(
        {
            "simplex_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        z = np.exp(losses / losses.max() - 1.0)
        return z / z.sum()


class LossByPosition(LossSoftmax):
    """Broken permutation invariance of a loss weighting: weights grow with the index."""

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        z = losses * np.arange(1, losses.shape[0] + 1)
        return z / z.sum()


class ColumnMean(AdvantageCombiner):
    """Broken non-conflicting combiner: each coordinate's mean over the objectives."""

    properties = frozenset({"non_conflicting", "permutation_invariant", "scale_equivariant"})

    def combine(self, advantages, mask=None, all_reduce_sum=None):  # type: ignore[no-untyped-def]
        n = advantages.shape[0]
        w = torch.full_like(advantages, 1.0 / n)
        combined = (w * advantages).sum(0)
        return Combination(combined, w, combined)


# -- inputs -------------------------------------------------------------------------------

CONFLICT = torch.tensor([[1.0, 0.0], [-3.0, 1.0]], dtype=torch.float64)  # mean conflicts with g₀
DISTINCT = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [2.0, 0.0, 1.0]], dtype=torch.float64)
OTHER = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, 1.0], [-2.0, 0.0, 1.0]], dtype=torch.float64)


def _fails(prop: str, call) -> PropertyViolation:  # type: ignore[no-untyped-def]
    with pytest.raises(PropertyViolation) as info:
        call()
    assert info.value.property == prop, info.value
    return info.value


# -- each check: fails on the broken aggregator, passes on a correct one -------------------


def test_simplex_weights() -> None:
    assert_simplex_weights(Uniform(), DISTINCT)
    assert_simplex_weights(BruteMinNorm(), DISTINCT)
    error = _fails("simplex_weights", lambda: assert_simplex_weights(SumsToMore(), DISTINCT))
    assert "sum to" in str(error)
    _fails("simplex_weights", lambda: assert_simplex_weights(NegativeWeight(), DISTINCT))


def test_non_negative_weights() -> None:
    assert_non_negative_weights(SumsToMore(), DISTINCT)  # not a simplex, but non-negative
    error = _fails(
        "non_negative_weights", lambda: assert_non_negative_weights(NegativeWeight(), DISTINCT)
    )
    assert "= -0.16" in str(error)  # w = (1/3 + 0.5, 1/3 − 0.5, 1/3): weight 1 is −1/6


@pytest.mark.parametrize("scale", [1e-10, 1.0, 1e15])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_conflicting_scales_with_the_input(scale: float, dtype: torch.dtype) -> None:
    jac = (CONFLICT * scale).to(dtype)
    assert_non_conflicting(BruteMinNorm(), jac)
    assert_non_conflicting(get_aggregator("mgda"), jac)
    error = _fails("non_conflicting", lambda: assert_non_conflicting(Uniform(), jac))
    assert "gradient 0" in str(error)


def test_non_conflicting_of_a_combiner() -> None:
    assert_non_conflicting(get_aggregator("pama"), CONFLICT)
    _fails("non_conflicting", lambda: assert_non_conflicting(ColumnMean(), CONFLICT))


def test_permutation_invariant() -> None:
    assert_permutation_invariant(Uniform(), DISTINCT)
    assert_permutation_invariant(BruteMinNorm(), DISTINCT, permutation=[2, 0, 1])
    error = _fails(
        "permutation_invariant", lambda: assert_permutation_invariant(FirstObjective(), DISTINCT)
    )
    assert "direction moved" in str(error)


def test_permutation_invariant_loss_weighting_compares_weights() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert_permutation_invariant(LossSoftmax(), DISTINCT, losses)
    _fails(
        "permutation_invariant",
        lambda: assert_permutation_invariant(LossByPosition(), DISTINCT, losses),
    )
    # even where the Jacobian cannot show it (all zero), the weights must follow
    zero = torch.zeros(3, 2, dtype=torch.float64)
    error = _fails(
        "permutation_invariant",
        lambda: assert_permutation_invariant(LossByPosition(), zero, losses),
    )
    assert "weights" in str(error)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_equivariant(dtype: torch.dtype) -> None:
    jac = DISTINCT.to(dtype)
    assert_scale_equivariant(Uniform(), jac)
    assert_scale_equivariant(BruteMinNorm(), jac, factor=1e-3)
    _fails("scale_equivariant", lambda: assert_scale_equivariant(Normalised(), jac))


def test_scale_equivariant_catches_an_absolute_epsilon() -> None:
    # at scale 1 a ridge of 1e-8 is invisible; at 1e-5 it dominates the Gramian (1e-10)
    assert_scale_equivariant(Regularised(), CONFLICT, factor=2.0)
    _fails(
        "scale_equivariant",
        lambda: assert_scale_equivariant(Regularised(), CONFLICT * 1e-5, factor=2.0**20),
    )


def test_min_norm_kkt() -> None:
    assert_min_norm_kkt(BruteMinNorm(), DISTINCT)
    assert_min_norm_kkt(BruteMinNorm(), CONFLICT * 1e15)
    assert_min_norm_kkt(BruteMinNorm(), gramian=(DISTINCT @ DISTINCT.T).numpy())
    _fails("min_norm_kkt", lambda: assert_min_norm_kkt(AlmostMinNorm(), CONFLICT))
    _fails("min_norm_kkt", lambda: assert_min_norm_kkt(Uniform(), CONFLICT))
    with pytest.raises(TypeError, match="Gramian weightings"):
        assert_min_norm_kkt(LossSoftmax(), CONFLICT)  # type: ignore[arg-type]


def test_deterministic() -> None:
    steps = [DISTINCT, DISTINCT * 2, DISTINCT]
    assert_deterministic(SeededDirichlet(seed=3), steps)
    assert_deterministic(lambda: EMAOfGramian(beta=0.3), steps)
    _fails("deterministic", lambda: assert_deterministic(SeededDirichlet(seed=None), steps))


def test_reset_restores() -> None:
    steps = [DISTINCT, DISTINCT * 2, DISTINCT * 3]
    assert_reset_restores(SeededDirichlet(seed=3), steps)
    _fails("reset_restores", lambda: assert_reset_restores(ForgetfulReset(seed=3), steps))
    # seed=None re-seeds from fresh entropy on reset(): the first result is not restored
    _fails("reset_restores", lambda: assert_reset_restores(SeededDirichlet(seed=None), steps))
    # (scaled copies would not do: min-norm weights of a multiple of G are the same)
    assert_reset_restores(EMAOfGramian(), [DISTINCT, OTHER])
    _fails("reset_restores", lambda: assert_reset_restores(EMAWithoutReset(), [DISTINCT, OTHER]))


def test_non_differentiable() -> None:
    assert_non_differentiable(Uniform(), DISTINCT)
    assert_non_differentiable(get_aggregator("pama"), DISTINCT)
    assert_non_differentiable(LossSoftmax(), DISTINCT, torch.tensor([1.0, 2.0, 3.0]))
    error = _fails("non_differentiable", lambda: assert_non_differentiable(WithGraph(), DISTINCT))
    assert "no_grad" in str(error)


# -- check_claims ------------------------------------------------------------------------


BROKEN = [
    (SumsToMore, "simplex_weights"),
    (NegativeWeight, "simplex_weights"),
    (FirstObjective, "permutation_invariant"),
    (Normalised, "scale_equivariant"),
    (AlmostMinNorm, "min_norm_kkt"),
    (ForgetfulReset, "reset_restores"),
    (EMAWithoutReset, "reset_restores"),
    (WithGraph, "non_differentiable"),
]


@pytest.mark.parametrize(("cls", "prop"), BROKEN, ids=[c.__name__ for c, _ in BROKEN])
def test_check_claims_finds_the_broken_claim(cls, prop) -> None:  # type: ignore[no-untyped-def]
    steps = [DISTINCT, DISTINCT * 3, DISTINCT.flip(0)]
    _fails(prop, lambda: check_claims(cls, steps))


def test_check_claims_passes_correct_methods_and_returns_what_it_checked() -> None:
    steps = [DISTINCT, DISTINCT * 1e-7, torch.zeros(3, 3, dtype=torch.float64)]
    assert check_claims(BruteMinNorm, steps) == BruteMinNorm.properties
    assert check_claims(SeededDirichlet(seed=5), steps) == SeededDirichlet.properties
    assert check_claims(EMAOfGramian, steps) == EMAOfGramian().claims()
    losses = [torch.tensor([1.0, 2.0, 3.0])] * 3
    assert check_claims(LossSoftmax, steps, [v.double() for v in losses]) == LossSoftmax.properties
    for name in ("mgda", "mean", "pama", "linear"):
        check_claims(get_aggregator(name), steps)


def test_check_claims_input_errors() -> None:
    with pytest.raises(ValueError, match="unknown properties"):
        check_claims(Uniform, DISTINCT, claims={"simplex_weights", "monotone"})
    with pytest.raises(TypeError, match="not a GramianWeighting"):
        check_claims(
            LossSoftmax, DISTINCT, torch.ones(3, dtype=torch.float64), claims={"min_norm_kkt"}
        )
    with pytest.raises(ValueError, match="loss values"):
        check_claims(LossSoftmax, DISTINCT)
    with pytest.raises(ValueError, match="same n"):
        check_claims(Uniform, [DISTINCT, CONFLICT])
    with pytest.raises(ValueError, match="not a permutation"):
        check_claims(Uniform, DISTINCT, permutation=[0, 0, 1])


def test_checks_leave_the_instance_alone() -> None:
    agg = SeededDirichlet(seed=1)
    expected = SeededDirichlet(seed=1)(DISTINCT)
    assert_simplex_weights(agg, DISTINCT)
    assert_scale_equivariant(agg, DISTINCT)
    check_claims(agg, [DISTINCT, DISTINCT])
    torch.testing.assert_close(agg(DISTINCT), expected, rtol=0, atol=0)


def test_an_uncopyable_instance_gets_a_clear_error() -> None:
    import threading

    class Locked(Uniform):
        def __init__(self) -> None:
            self._lock = threading.Lock()

    assert_simplex_weights(Locked(), DISTINCT)  # a single call runs on the instance itself
    with pytest.raises(TypeError, match="deep-copyable"):
        check_claims(Locked, DISTINCT)


def test_make_factory() -> None:
    linear = get_aggregator("linear", preference=[1.0, 3.0, 4.0])
    rebuilt = make_factory(linear)()
    assert repr(rebuilt) == repr(linear) and rebuilt is not linear
    assert make_factory(Uniform)().__class__ is Uniform

    class NoKwargs(Uniform):
        def __init__(self, alpha: float) -> None:
            self._alpha = alpha

    with pytest.raises(TypeError, match="pass a factory"):
        make_factory(NoKwargs(0.5))
    with pytest.raises(TypeError, match="factory"):
        make_factory(3)  # type: ignore[arg-type]


def test_tolerances_follow_the_dtype() -> None:
    tol = Tolerance()
    assert (
        tol.for_dtype(torch.float64) < tol.for_dtype(torch.float32) < tol.for_dtype(torch.float16)
    )
    # a 1e-6 conflict passes in float32 but not when float64 precision is demanded
    jac = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float32)

    class Tilted(Uniform):
        def _solve(self, gramian: np.ndarray) -> np.ndarray:
            return np.array([1.0 + 1e-6, -1e-6])

    assert_non_conflicting(Tilted(), jac)
    strict = Tolerance(rtol={torch.float32: 1e-8})
    _fails("non_conflicting", lambda: assert_non_conflicting(Tilted(), jac, tol=strict))


# -- strategies ------------------------------------------------------------------------------


def _normalised(jac: torch.Tensor) -> np.ndarray:
    j = jac.to(torch.float64).numpy()
    top = np.abs(j).max()
    return j / top if top > 0 else j


def _hull_weights_lp(j: np.ndarray, floor: float) -> float | None:
    """max t s.t. Jᵀc = 0, Σc = 1, c ≥ t·1 (None if infeasible): t ≥ 0 ⇔ 0 ∈ conv(rows),
    t > 0 ⇔ 0 in the relative interior with all weights positive."""
    n = j.shape[0]
    # variables (c, t); maximise t
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    a_eq = np.zeros((j.shape[1] + 1, n + 1))
    a_eq[:-1, :n] = j.T
    a_eq[-1, :n] = 1.0
    b_eq = np.zeros(j.shape[1] + 1)
    b_eq[-1] = 1.0
    a_ub = np.hstack([-np.eye(n), np.ones((n, 1))])  # t − cᵢ ≤ 0
    res = linprog_settled(
        cost,
        A_ub=a_ub,
        b_ub=np.zeros(n),
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=[(0, None)] * n + [(floor, 1.0)],
    )
    return float(res.x[-1]) if res.status == 0 else None  # 2: infeasible


def _common_ascent_lp(j: np.ndarray) -> bool:
    """∃ u with J u ≥ 1."""
    res = linprog_settled(
        np.zeros(j.shape[1]),
        A_ub=-j,
        b_ub=-np.ones(j.shape[0]),
        bounds=[(None, None)] * j.shape[1],
    )
    return res.status == 0  # 2: infeasible


@settings(max_examples=60, deadline=None)
@given(conflicting_jacobians(dtype=torch.float64, scale=1.0))
def test_conflicting_jacobians_conflict(jac: torch.Tensor) -> None:
    j = jac.numpy()
    g = j @ j.T
    assert jac.shape[0] >= 2
    assert g[~np.eye(g.shape[0], dtype=bool)].min() < 0


@settings(max_examples=60, deadline=None)
@given(pareto_stationary_jacobians(dtype=torch.float64, scale=1.0))
def test_pareto_stationary_jacobians_have_zero_in_the_hull(jac: torch.Tensor) -> None:
    assert _hull_weights_lp(_normalised(jac), floor=0.0) is not None


@settings(max_examples=60, deadline=None)
@given(strongly_stationary_jacobians(dtype=torch.float64, scale=1.0))
def test_strongly_stationary_jacobians_have_positive_weights(jac: torch.Tensor) -> None:
    t = _hull_weights_lp(_normalised(jac), floor=-1.0)
    assert t is not None and t > 1e-6, t


@settings(max_examples=60, deadline=None)
@given(non_stationary_jacobians(dtype=torch.float64, scale=1.0))
def test_non_stationary_jacobians_have_a_common_direction(jac: torch.Tensor) -> None:
    j = _normalised(jac)
    assert _common_ascent_lp(j)
    assert _hull_weights_lp(j, floor=0.0) is None  # 0 not in the hull


@settings(max_examples=60, deadline=None)
@given(
    jacobians(n=(2, 5), d=(3, 7), rank=(1, 3), style="gaussian", degenerate=False, scale=1.0),
)
def test_rank_is_as_drawn_for_gaussian_entries(jac: torch.Tensor) -> None:
    # the drawn rank is clamped into [1, min(n, d)] and exact for Gaussian entries
    r = np.linalg.matrix_rank(jac.numpy())
    assert 1 <= r <= 3 and r <= min(jac.shape)


@pytest.mark.parametrize("rank", [0, 1, 2, 4])
def test_rank_argument(rank: int) -> None:
    @settings(max_examples=20, deadline=None)
    @given(
        jacobians(
            n=5, d=6, rank=rank, style="gaussian", degenerate=False, kind="generic", scale=1.0
        )
    )
    def run(jac: torch.Tensor) -> None:
        assert np.linalg.matrix_rank(jac.numpy()) == rank

    run()


@settings(max_examples=80, deadline=None)
@given(jacobians(n=(1, 4), d=(2, 3), dtype=torch.float32, scale=(1e-10, 1e15)), st.data())
def test_shape_dtype_and_scale(jac: torch.Tensor, data: st.DataObject) -> None:
    assert jac.dtype == torch.float32 and 1 <= jac.shape[0] <= 4 and 2 <= jac.shape[1] <= 3
    assert torch.isfinite(jac).all()
    assert float(jac.abs().max()) <= 1e15 * 1e3


@settings(max_examples=40, deadline=None)
@given(jacobians(scale=0.0, kind=["generic", "pareto_stationary"]))
def test_scale_zero(jac: torch.Tensor) -> None:
    assert not jac.any()


@settings(max_examples=40, deadline=None)
@given(gramians(dtype=torch.float32))
def test_gramians(g: np.ndarray) -> None:
    assert g.dtype == np.float32 and g.shape[0] == g.shape[1]
    np.testing.assert_array_equal(g, g.T)


@settings(max_examples=40, deadline=None)
@given(loss_values((1, 5), min_value=1e-2, max_value=10.0))
def test_loss_values(losses: torch.Tensor) -> None:
    assert losses.dtype == torch.float64 and 1 <= losses.shape[0] <= 5
    assert bool((losses >= 1e-2).all()) and bool((losses <= 10.0).all())


@settings(max_examples=40, deadline=None)
@given(problems(steps=(2, 4)))
def test_problems(problem: Problem) -> None:
    assert 2 <= len(problem.jacobians) == len(problem.losses) <= 4
    shapes = {tuple(j.shape) for j in problem.jacobians}
    assert len(shapes) == 1 and {j.dtype for j in problem.jacobians} <= {
        torch.float32,
        torch.float64,
    }
    assert all(v.shape == (problem.n,) and bool((v > 0).all()) for v in problem.losses)
    rebuilt = eval(repr(problem), {"Problem": Problem, "torch": torch})  # noqa: S307
    for a, b in zip(rebuilt.jacobians + rebuilt.losses, problem.jacobians + problem.losses):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_random_jacobian() -> None:
    rng = np.random.default_rng(4)
    expected = torch.tensor(rng.standard_normal((3, 5)) * 2.0)
    torch.testing.assert_close(random_jacobian(3, 5, seed=4, scale=2.0), expected, rtol=0, atol=0)
    j = random_jacobian(
        4, 6, seed=1, kind="strongly_stationary", style="integer", dtype=torch.float32
    )
    assert j.dtype == torch.float32 and np.linalg.matrix_rank(j.numpy()) <= 3
    assert _hull_weights_lp(_normalised(j), floor=-1.0) > 0  # type: ignore[operator]
    with pytest.raises(ValueError, match="unknown construction"):
        random_jacobian(2, 2, seed=0, kind="saddle")  # type: ignore[arg-type]


# -- packaging ------------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_mogradient_never_imports_the_kit_hypothesis_or_pytest() -> None:
    result = _run(
        """
        import sys, mogradient, mogradient.aggregators
        loaded = [m for m in ("hypothesis", "pytest", "mogradient.testing") if m in sys.modules]
        print(loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_checks_work_without_hypothesis() -> None:
    result = _run(
        """
        import sys
        sys.modules["hypothesis"] = None  # as if it were not installed
        import torch
        from mogradient.aggregators import get_aggregator
        from mogradient.testing import check_claims, random_jacobian
        check_claims(get_aggregator("mgda"), random_jacobian(3, 4, seed=0))
        try:
            from mogradient.testing import jacobians
        except ModuleNotFoundError as error:
            print("missing:", error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install hypothesis" in result.stdout


# -- the docs page's example runs -----------------------------------------------------------


def test_the_docs_example_runs() -> None:
    """Every ``python`` block of docs/testing.md, in order, in one namespace; then its tests
    (hypothesis ones with fewer examples)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {"__name__": "docs_testing_example"}
    for block in blocks:
        exec(compile(block, "docs/testing.md", "exec"), namespace)  # noqa: S102
    tests = {k: v for k, v in namespace.items() if k.startswith("test_") and callable(v)}
    assert len(tests) >= 3
    for test in tests.values():
        chosen = getattr(test, "_hypothesis_internal_use_settings", None)
        if chosen is not None:  # fewer examples than the page shows (hypothesis internals)
            test._hypothesis_internal_use_settings = settings(chosen, max_examples=15)  # type: ignore[attr-defined]
        test()


# -- plain functions, NaN weights, state bugs in reset() ------------------------------------


def test_check_claims_accepts_a_plain_function() -> None:
    """A function of the Jacobian is wrapped: it claims nothing unless told, the direction
    properties are checked on it, and the weight properties are refused by name."""
    assert check_claims(lambda J: J.mean(0), DISTINCT) == frozenset()
    claims = {"permutation_invariant", "scale_equivariant", "deterministic", "reset_restores"}
    assert check_claims(lambda J: J.mean(0), [DISTINCT, OTHER], claims=claims) == claims
    _fails("permutation_invariant", lambda: check_claims(lambda J: J[0], DISTINCT, claims=claims))
    with pytest.raises(TypeError, match=r"exposes no weights.*simplex_weights.*plain function"):
        check_claims(lambda J: J.mean(0), DISTINCT, claims={"simplex_weights"})
    seen = []

    def with_losses(jac: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        seen.append(losses)
        return losses.to(jac.dtype) @ jac

    check_claims(with_losses, DISTINCT, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert seen and torch.equal(seen[0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="loss values"):
        check_claims(with_losses, DISTINCT)  # it needs them: the check says so
    # a factory returning a plain function is wrapped too
    assert check_claims(lambda: lambda J: J.sum(0), DISTINCT) == frozenset()


class NaNWeights(Uniform):
    """Broken: NaN weights (a 0/0 in the method)."""

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        w = np.full(gramian.shape[0], 1.0 / gramian.shape[0])
        w[1] = np.nan
        return w


def test_nan_weights_are_named_as_nan() -> None:
    """NaN weights are their own failure (not a negative weight), whatever the claims."""
    for call in (
        lambda: check_claims(NaNWeights, DISTINCT),
        lambda: check_claims(NaNWeights, DISTINCT, claims=set()),
        lambda: assert_non_negative_weights(NaNWeights(), DISTINCT),
        lambda: assert_simplex_weights(NaNWeights(), DISTINCT),
    ):
        error = _fails("finite_weights", call)
        assert "NaN at [1]" in str(error)


class TinyStateLeak(Uniform):
    """Broken reset: a call counter nudges the weights by 1e-17 per call and reset() keeps it,
    so the outputs after reset() differ from the first run by about 1e-17 (rounding size)."""

    def __init__(self) -> None:
        self._calls = 0

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        self._calls += 1
        n = gramian.shape[0]
        w = np.full(n, 1.0 / n)
        w[0] += 1e-17 * self._calls
        return w / w.sum()

    def claims(self):  # type: ignore[no-untyped-def]
        return frozenset({"reset_restores"})


def test_a_tiny_state_leak_in_reset_reads_as_a_state_bug() -> None:
    """However small the difference, a reset() failure is reported as state not restored,
    bit for bit, with the differing values, not as a rounding-sized gap."""
    steps = [DISTINCT * 1e3, DISTINCT * 1e3]
    for call in (
        lambda: check_claims(TinyStateLeak, steps),
        lambda: assert_reset_restores(TinyStateLeak, steps),
    ):
        error = _fails("reset_restores", call)
        message = str(error)
        assert "state not restored by reset()" in message
        assert "bit for bit" in message and "not rounding" in message
        assert "coordinate" in message and " then " in message


def test_the_property_table_lists_every_property_once_with_a_check() -> None:
    """``check_claims`` walks the table: a property missing from it would go unchecked."""
    from mogradient.testing import CHECKS, PROPERTIES, TABLE

    assert sorted(TABLE) == sorted(PROPERTIES)
    assert set(CHECKS) == set(PROPERTIES)
    for name, check in TABLE.items():
        phases = [check.on_weights, check.on_direction, check.across_runs]
        assert sum(p is not None for p in phases) == 1, name
        assert (check.needs is not None) == (check.on_weights is not None), name
