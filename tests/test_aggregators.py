"""Properties each aggregator claims, pinned values, edge cases and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient import CAGrad, PCGrad, get_aggregator
from mogradient.aggregators import GramianWeighting, LossWeighting, gramian_of, registered
from mogradient.solvers import pcgrad_weights
from mogradient.testing import random_jacobian
from tests.bounds import (
    U64,
    assert_cagrad_ball_and_lift,
    assert_cagrad_permuted,
    gamma,
    matvec_bound,
    min_norm_gap,
    min_norm_tolerance,
    qp_weight_tolerance,
)
from tests.strategies import jacobians

PINNED_J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
#: The first six methods; every registered method's claims are checked in test_contract.py.
CANONICAL = ["cagrad", "linear", "mean", "mgda", "pama", "pcgrad"]


def _tol(jac: torch.Tensor) -> float:
    """How far gᵢ·d may fall below ‖d‖² for MGDA's d = wᵀJ: the solve leaves a Frank–Wolfe gap
    of at most τ (``min_norm_tolerance``; (Ĝw)ᵢ ≥ wᵀĜw − τ/2) on the float64 Gramian Ĝ, which
    is off by γ_d·M² (M = max‖gᵢ‖); wᵀJ rounds by γ_{n+2}·M and each product taken here by
    γ_d·M‖d‖ ≤ γ_d·M²: at most τ + 8γ_{d+n+2}·M² in all."""
    n, d = jac.shape
    gram = gramian_of(jac).numpy()
    top2 = float(np.max(np.diag(gram)))
    return min_norm_tolerance(gram) + 8 * gamma(d + n + 2, U64) * top2


# -- pinned values on J = [[-4, 1, 1], [6, 1, 1]] (G = [[18, -22], [-22, 38]]) --------------


def test_pinned_mgda() -> None:
    # gamma = (38 + 22) / (18 + 44 + 38) = 0.6
    agg = get_aggregator("mgda")
    # a strictly convex QP (G positive definite): within qp_weight_tolerance of the exact answer
    gram = gramian_of(PINNED_J).numpy()
    tol = qp_weight_tolerance(gram)
    np.testing.assert_allclose(agg.weights(gram), [0.6, 0.4], rtol=0, atol=tol)
    torch.testing.assert_close(agg(PINNED_J), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))


def test_pinned_pcgrad() -> None:
    # g1 + (22/38) g2 and g2 + (22/18) g1, summed: weights (1 + 11/9, 1 + 11/19)
    w = get_aggregator("pcgrad").weights(gramian_of(PINNED_J)).numpy()
    # each weight is 1 + one quotient of integers: two roundings here and two in the expected
    np.testing.assert_allclose(w, [1 + 11 / 9, 1 + 11 / 19], rtol=2 * gamma(2, U64), atol=0)


def test_pinned_cagrad() -> None:
    # c = 0.5: ‖g0‖² = (18 - 44 + 38) / 4 = 3, so the update is g0 plus a √0.75 step.
    # To rounding: the step is α over an upper bound of ‖g_w‖ (16n·u·M²/‖g_w‖² relatively
    # short), α and ‖g_w‖ come from G (γ_{d+n+4}·M² in their squares), and ω @ J and g₀
    # round by matvec_bound.
    agg = get_aggregator("cagrad", c=0.5)
    d = agg(PINNED_J)
    g0 = PINNED_J.mean(0)
    omega = agg.weights(gramian_of(PINNED_J))
    extra = omega - 0.5
    gw = (extra / extra.sum()) @ PINNED_J
    top2, r2 = 38.0, float(gw @ gw)
    relative = 16 * 2 * U64 * top2 / r2 + 2 * gamma(3 + 2 + 4, U64) * (top2 / 3 + top2 / r2)
    rounding = matvec_bound(omega, PINNED_J) + matvec_bound(torch.full((2,), 0.5), PINNED_J)
    tol = 0.5 * math.sqrt(3.0) * relative + float(torch.linalg.norm(rounding))
    assert abs(float(torch.linalg.norm(d - g0)) - 0.5 * math.sqrt(3.0)) <= tol
    assert float((PINNED_J @ d).min()) >= float((PINNED_J @ g0).min())


def test_pinned_loss_weightings() -> None:
    lin = get_aggregator("linear", preference=[0.25, 0.75])
    torch.testing.assert_close(lin(PINNED_J), torch.tensor([3.5, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        get_aggregator("mean")(PINNED_J), torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    )


# -- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in CANONICAL if n != "pama"])
@settings(max_examples=40, deadline=None)
@given(jac=jacobians())
def test_weighted_direction_is_weights_times_jacobian(name: str, jac: torch.Tensor) -> None:
    agg = get_aggregator(name)
    assert isinstance(agg, (GramianWeighting, LossWeighting))
    statistic = gramian_of(jac) if isinstance(agg, GramianWeighting) else torch.zeros(len(jac))
    w = agg.weights(statistic)
    assert w.shape == (jac.shape[0],) and torch.isfinite(w).all()
    agg.reset()
    torch.testing.assert_close(agg(jac), w @ jac)


@settings(max_examples=100, deadline=None)
@given(jac=jacobians())
def test_mgda_is_non_conflicting(jac: torch.Tensor) -> None:
    agg = get_aggregator("mgda")
    w = agg.weights(gramian_of(jac))
    # normalised by their sum (n roundings), summed again here (n − 1 more)
    assert torch.all(w >= 0) and abs(float(w.sum()) - 1.0) <= gamma(2 * len(w), U64)
    d = agg(jac)
    assert torch.all(jac @ d >= float(d @ d) - _tol(jac))


@pytest.mark.parametrize("name", ["mgda", "cagrad", "mean", "pama"])
@settings(max_examples=40, deadline=None)
@given(jac=jacobians(min_n=2), data=st.data())
def test_permutation_invariance(name: str, jac: torch.Tensor, data) -> None:
    perm = data.draw(st.permutations(range(jac.shape[0])))
    agg = get_aggregator(name)
    d, d_perm = agg(jac), agg(jac[list(perm)])
    if name == "mean":  # the same sum in another order: each within matvec_bound
        w = torch.full((jac.shape[0],), 1.0 / jac.shape[0], dtype=torch.float64)
        assert bool(((d_perm - d).abs() <= 2 * matvec_bound(w, jac)).all())
    elif name == "mgda":
        # The min-norm direction d* is unique; both solves leave a Frank–Wolfe gap ≤ τ =
        # min_norm_tolerance(G), so ‖d − d*‖ ≤ √τ each (d*ᵀ(d − d*) ≥ 0 on the hull), plus
        # the product's rounding.
        gram = gramian_of(jac).numpy()
        tau = min_norm_tolerance(gram)
        w, w_perm = agg.weights(gram), agg.weights(gram[np.ix_(perm, perm)])
        assert min_norm_gap(gram, w) <= tau
        assert min_norm_gap(gram[np.ix_(perm, perm)], w_perm) <= tau
        radius = 2 * math.sqrt(tau)
        w_t, wp_t = torch.as_tensor(w), torch.as_tensor(w_perm)
        rounding = matvec_bound(w_t, jac) + matvec_bound(wp_t, jac[list(perm)])
        off = ((d_perm - d).abs() - rounding).clamp(min=0)
        assert float(torch.linalg.norm(off)) <= radius
    elif name == "pama":  # each coordinate is clamp(0, minᵢ Jᵢⱼ, maxᵢ Jᵢⱼ): exact operations
        assert torch.equal(d_perm, d)
    else:  # cagrad
        assert_cagrad_permuted(jac.numpy(), 0.4, list(perm), d.numpy(), d_perm.numpy())


@settings(max_examples=60, deadline=None)
@given(jac=jacobians(min_n=2))
def test_cagrad_ball_and_worst_case_improvement(jac: torch.Tensor) -> None:
    # in the ball and lifting the worst objective, to the bounds of assert_cagrad_ball_and_lift
    assert_cagrad_ball_and_lift(jac.numpy(), 0.4, CAGrad(c=0.4)(jac).numpy())


@settings(max_examples=40, deadline=None)
@given(jac=jacobians())
def test_cagrad_with_c_zero_is_the_mean(jac: torch.Tensor) -> None:
    torch.testing.assert_close(CAGrad(c=0.0)(jac), jac.mean(0))


def _pcgrad_reference(
    jac: np.ndarray, orders: np.ndarray
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """PCGrad on explicit vectors, returning the sum and, for each projected pair, the inner
    product g'·gⱼ of the projected gradient g' = g − c·gⱼ with gⱼ and its rounding bound: 0 in
    exact arithmetic; computed, c is off by γ_{2d+1}(|g|·|gⱼ|)/‖gⱼ‖², g' by γ₂(|g| + |c||gⱼ|)
    plus |Δc||gⱼ|, and the product by γ_d: at most γ_{4d+4}(2|g|·|gⱼ| + 2|c||gⱼ|·|gⱼ|)."""
    projected_dots = []
    total = np.zeros(jac.shape[1])
    d = jac.shape[1]
    for i in range(jac.shape[0]):
        g = jac[i].copy()
        for j in orders[i]:
            if j == i or jac[j] @ jac[j] == 0:
                continue
            if g @ jac[j] < 0:
                c = (g @ jac[j]) / (jac[j] @ jac[j])
                size = 2 * np.abs(g) @ np.abs(jac[j]) + 2 * abs(c) * (
                    np.abs(jac[j]) @ np.abs(jac[j])
                )
                g -= c * jac[j]
                projected_dots.append((float(g @ jac[j]), gamma(4 * d + 4, U64) * float(size)))
        total += g
    return total, projected_dots


@settings(max_examples=80, deadline=None)
@given(jac=jacobians(min_n=2), seed=st.integers(0, 1000))
def test_pcgrad_matches_explicit_projections_and_removes_conflicts(
    jac: torch.Tensor, seed: int
) -> None:
    j = jac.numpy()
    n = j.shape[0]
    rng = np.random.default_rng(seed)
    orders = np.array([rng.permutation(n) for _ in range(n)])
    expected, dots = _pcgrad_reference(j, orders)
    w = pcgrad_weights(j @ j.T, orders)
    scale = float(np.abs(j).max()) ** 2
    np.testing.assert_allclose(w @ j, expected, atol=1e-8 * math.sqrt(scale) * n, rtol=1e-8)
    # every conflict it projects is removed: the projected gradient is orthogonal to g_j
    assert all(abs(dot) <= bound for dot, bound in dots)


def test_pcgrad_seeded_and_reset() -> None:
    jac = random_jacobian(5, 3, seed=1)
    a, b = PCGrad(seed=7), PCGrad(seed=7)
    first = [a(jac) for _ in range(3)]
    torch.testing.assert_close(torch.stack(first), torch.stack([b(jac) for _ in range(3)]))
    a.reset()
    torch.testing.assert_close(a(jac), first[0])


def test_pcgrad_without_conflict_is_the_sum() -> None:
    jac = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(PCGrad()(jac), jac.sum(0))


def test_mgda_warm_start_same_answer_and_reset() -> None:
    # Both solves leave a Frank–Wolfe gap ≤ τ = min_norm_tolerance(G), so each ‖d‖² is within τ
    # of the minimum ‖d*‖²; on the convex hull d*ᵀ(d − d*) ≥ 0 gives ‖d − d*‖² ≤ ‖d‖² − ‖d*‖²,
    # so the directions are within 2√τ (plus each product's rounding, matvec_bound).
    cold, warm = get_aggregator("mgda"), get_aggregator("mgda", warm_start=True)
    jac = random_jacobian(8, 5, seed=2)
    for step in range(5):
        jac = jac + 0.01 * random_jacobian(8, 5, seed=100 + step)
        gram = gramian_of(jac).numpy()
        tau = min_norm_tolerance(gram)
        w_warm = torch.as_tensor(warm.weights(gram), dtype=torch.float64)
        w_cold = torch.as_tensor(cold.weights(gram), dtype=torch.float64)
        assert min_norm_gap(gram, w_warm.numpy()) <= tau
        assert min_norm_gap(gram, w_cold.numpy()) <= tau
        rounding = matvec_bound(w_warm, jac) + matvec_bound(w_cold, jac)
        gap = float(torch.linalg.norm(((w_warm - w_cold) @ jac).abs().sub(rounding).clamp(min=0)))
        assert gap <= 2 * math.sqrt(tau)
    warm.reset()
    assert warm._previous is None


# -- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CANONICAL)
def test_one_objective_returns_its_gradient(name: str) -> None:
    jac = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    factor = 1.4 if name == "cagrad" else 1.0  # CAGrad(c=0.4) adds a c‖g₀‖ step along g
    torch.testing.assert_close(get_aggregator(name)(jac), factor * jac[0])


@pytest.mark.parametrize("name", CANONICAL)
def test_zero_gradients_give_zero_direction(name: str) -> None:
    d = get_aggregator(name)(torch.zeros(3, 4, dtype=torch.float64))
    assert torch.equal(d, torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("name", CANONICAL)
def test_identical_gradients_give_that_gradient(name: str) -> None:
    g = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    d = get_aggregator(name)(g.repeat(3, 1))
    # PCGrad sums (nothing conflicts); CAGrad(c=0.4) adds a c‖g₀‖ step along g₀ = g.
    factor = {"pcgrad": 3.0, "cagrad": 1.4}.get(name, 1.0)
    torch.testing.assert_close(d, factor * g)


@pytest.mark.parametrize("name", CANONICAL)
@pytest.mark.parametrize("scale", [2.0**-33, 2.0**-17, 1.0, 2.0**20, 2.0**40])
def test_scale_equivariance(name: str, scale: float) -> None:
    """Exact: a power of two (about 1e-10 to 1e12 here) scales every entry of J, every
    product and sum of the Gramian and of wᵀJ, and every rounding with them (no entry
    over- or underflows), so a scale-equivariant method returns exactly scale·d. A decimal
    factor would perturb J by its own rounding and measure the method's conditioning."""
    jac = random_jacobian(4, 6, seed=3)
    d = get_aggregator(name)(jac)
    d_scaled = get_aggregator(name)(jac * scale)
    assert torch.equal(d_scaled, d * scale)


@pytest.mark.parametrize("name", CANONICAL)
def test_hundred_objectives(name: str) -> None:
    jac = random_jacobian(100, 30, seed=4)
    d = get_aggregator(name)(jac)
    assert d.shape == (30,) and torch.isfinite(d).all()
    if name == "mgda":
        assert torch.all(jac @ d >= float(d @ d) - _tol(jac))


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CANONICAL)
def test_nonfinite_jacobian_names_objective(name: str) -> None:
    jac = torch.ones(3, 2)
    jac[2, 1] = float("inf")
    with pytest.raises(ValueError, match="objective 2"):
        get_aggregator(name)(jac)


@pytest.mark.parametrize("name", CANONICAL)
@pytest.mark.parametrize(
    ("jac", "error", "match"),
    [
        (torch.ones(3), ValueError, r"shape \[n_objectives, d\]"),
        (torch.ones(2, 2, 2), ValueError, r"shape \[n_objectives, d\]"),
        (torch.ones(0, 3), ValueError, "zero objectives"),
        (torch.ones(2, 3, dtype=torch.int64), TypeError, "floating-point"),
        (np.ones((2, 3)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_jacobian(name: str, jac, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        get_aggregator(name)(jac)


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "cagrad"])
@pytest.mark.parametrize(
    ("gram", "match"),
    [
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
        (np.array([[1.0, 0.0], [0.0, np.nan]]), "objective 1"),
        (np.ones((2, 3)), "square"),
        (np.ones((0, 0)), "zero objectives"),
        (np.ones(3), "2-D"),
    ],
)
def test_bad_gramian(name: str, gram: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_aggregator(name).weights(gram)


def test_gramian_weights_keep_the_input_kind() -> None:
    gram = np.array([[2.0, -1.0], [-1.0, 3.0]])
    agg = get_aggregator("mgda")
    assert isinstance(agg.weights(gram), np.ndarray)
    w = agg.weights(torch.tensor(gram))
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float64


def test_linear_weights_must_match_objective_count() -> None:
    with pytest.raises(ValueError, match="3 objectives"):
        get_aggregator("linear", preference=[0.5, 0.5])(torch.ones(3, 2))


def test_pcgrad_without_a_seed_still_restores_its_sequence_on_reset() -> None:
    jac = random_jacobian(4, 6, seed=5)
    agg = PCGrad(seed=None)
    first = [agg(jac) for _ in range(3)]
    agg.reset()
    for expected in first:
        torch.testing.assert_close(agg(jac), expected)


# -- losses= given to a Gramian method that does not read them --------------------------------


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name, cls in registered().items()
        if issubclass(cls, GramianWeighting) and not cls.uses_loss_values
    ),
)
def test_gramian_methods_refuse_losses_of_the_wrong_length(name: str) -> None:
    """A ``losses=`` that cannot belong to these objectives (wrong length, NaN) is refused by
    ``weights`` and ``__call__`` instead of being ignored; the right length is accepted."""
    agg = get_aggregator(name)
    jac = random_jacobian(3, 5, seed=1)
    gram = gramian_of(jac)
    for bad in (torch.ones(2, dtype=torch.float64), torch.ones(4, dtype=torch.float64)):
        with pytest.raises(ValueError, match="got .* loss values for 3 objectives"):
            agg.weights(gram, bad)
        with pytest.raises(ValueError, match="got .* loss values for 3 objectives"):
            agg(jac, bad)
    with pytest.raises(ValueError, match="not finite"):
        agg(jac, torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64))
    ok = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(get_aggregator(name)(jac, ok), get_aggregator(name)(jac))
