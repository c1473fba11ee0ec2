"""FairGrad: the exact solution of (Gw)ᵢ = wᵢ^(−1/α), against closed forms, high-precision
roots and TorchJD 0.18's FairGradWeighting; its guarantees and edge cases."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.registry import get_aggregator
from mogradient.aggregators.fairgrad import FairGrad
from mogradient.solvers.fairgrad import fairgrad_weights
from mogradient.solvers.nash_mtl import nash_mtl_weights
from tests.bounds import U64, assert_float32_direction, gamma
from tests.references import reference_call
from tests.strategies import jacobians, random_jacobian

ALPHAS = [0.1, 0.5, 1.0, 2.0, 5.0, 20.0]
#: Newton's limiting accuracy with a backward-stable linear solve: the residual at the root
#: is within a small multiple of F's evaluation error, γ_{m+4}·(|G|w + w^(−1/α)) (Tisseur 2001,
#: "Newton's method in floating point arithmetic"), which the relative residual divides by;
#: 64 is that multiple with a margin (the largest seen over 3,000 random inputs is 5.5).
NEWTON_LIMIT = 64.0
SEEDS = st.integers(0, 2**32 - 1)


def residual(g: np.ndarray, w: np.ndarray, alpha: float) -> float:
    """max |(Gw)ᵢ − wᵢ^(−1/α)| / (wᵢ^(−1/α) + Σⱼ|Gᵢⱼ|wⱼ): zero at the exact solution, and
    relative to what rounding in (Gw)ᵢ can reach (its terms, not its cancelled sum)."""
    target = w ** (-1.0 / alpha)
    return float(np.max(np.abs(g @ w - target) / (target + np.abs(g) @ w)))


def newton_distance(g: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """|∂F(w)⁻¹F(w)| for F(w) = Gw − w^(−1/α): the Newton step from w, i.e. (to first order,
    and within twice that by Newton–Kantorovich once the step is small) how far w is from the
    root. Two approximate roots differ by at most twice the sum of their steps. F's own
    evaluation error, γ_{m+4}·(|G|w + w^(−1/α)), and w's last rounding are added: at machine
    precision they, not the computed F, decide."""
    m = g.shape[0]
    target = w ** (-1.0 / alpha)
    jac = g + np.diag(w ** (-1.0 / alpha - 1.0) / alpha)
    slack = np.abs(g @ w - target) + gamma(m + 4, U64) * (np.abs(g) @ np.abs(w) + target)
    return np.abs(np.linalg.inv(jac)) @ slack + U64 * np.abs(w)


def gaussian_gramian(seed: int, m: int, d: int = 2000, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(m, d)) * np.exp(spread * rng.normal(size=(m, 1)))
    return j @ j.T


# -- pinned values ------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_one_objective(alpha: float) -> None:
    # g²w = w^(−1/α)  →  w = ‖g‖^(−2α/(α+1))
    np.testing.assert_allclose(
        fairgrad_weights(np.array([[9.0]]), alpha), 3.0 ** (-2 * alpha / (alpha + 1)), rtol=1e-14
    )


@pytest.mark.parametrize("alpha", ALPHAS)
def test_orthogonal_gradients(alpha: float) -> None:
    diag = np.array([4.0, 0.01, 1e6])
    expected = diag ** (-alpha / (alpha + 1))
    np.testing.assert_allclose(fairgrad_weights(np.diag(diag), alpha), expected, rtol=1e-13)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("m, c", [(2, -0.6), (3, 0.25), (8, 0.9)])
def test_equicorrelated_closed_form(alpha: float, m: int, c: float) -> None:
    # G = s((1−c)I + c11ᵀ): w = (s(1 + (m−1)c))^(−α/(α+1)) for every objective
    s = 3.0
    g = s * ((1 - c) * np.eye(m) + c * np.ones((m, m)))
    expected = (s * (1 + (m - 1) * c)) ** (-alpha / (alpha + 1))
    np.testing.assert_allclose(fairgrad_weights(g, alpha), expected, rtol=1e-13)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(3))
def test_matches_60_digit_root(alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 6))
    g = gaussian_gramian(seed, m, d=int(rng.integers(m, 10)), spread=1.0)
    mpmath.mp.dps = 60
    gm = mpmath.matrix(g.tolist())
    a = mpmath.mpf(alpha)
    sol = mpmath.findroot(
        lambda *w: [sum(gm[i, j] * w[j] for j in range(m)) - w[i] ** (-1 / a) for i in range(m)],
        fairgrad_weights(g, alpha).tolist(),
    )
    expected = np.array([float(sol[i]) for i in range(m)])
    np.testing.assert_allclose(fairgrad_weights(g, alpha), expected, rtol=1e-12)


def test_alpha_one_is_nash_mtl() -> None:
    for seed in range(5):
        g = gaussian_gramian(seed, 5, spread=1.0)
        np.testing.assert_allclose(fairgrad_weights(g, 1.0), nash_mtl_weights(g), rtol=1e-15)
        w = FairGrad(alpha=1.0, max_norm=None).weights(g)
        np.testing.assert_allclose(w * (g @ w), 1.0, rtol=1e-13)


@settings(deadline=None, max_examples=150)
@given(SEEDS, st.integers(1, 30), st.sampled_from([2, 50, 2000]), st.sampled_from(ALPHAS))
def test_residual_at_machine_precision(seed: int, m: int, d: int, alpha: float) -> None:
    g = gaussian_gramian(seed, m, d, spread=1.0)
    w = fairgrad_weights(g, alpha)
    if np.all(w == 0.0):  # Pareto-stationary (m > d)
        return
    assert np.all(w > 0.0)
    assert residual(g, w, alpha) <= NEWTON_LIMIT * gamma(m + 4, U64)


def test_weights_twenty_decades_apart_converge() -> None:
    """Weights spanning 22 decades (m > d, α = 20): each weight is solved to Newton's limiting
    accuracy, not only those that dominate the decrement λ² (the solve used to stop with the
    smallest weights 8.6e-6 off, a residual of 1.6e-7)."""
    g = gaussian_gramian(4294967294, 4, 2, spread=1.0)
    w = fairgrad_weights(g, 20.0)
    assert w.min() < 1e-20 < w.max()
    assert residual(g, w, 20.0) <= NEWTON_LIMIT * gamma(8, U64)


# -- TorchJD 0.18 -------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(5))
def test_same_weights_as_torchjd(alpha: float, seed: int) -> None:
    from torchjd.aggregation import FairGradWeighting

    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 10))
    jac = rng.normal(size=(m, 100)) * np.exp(0.5 * rng.normal(size=(m, 1)))
    g = jac @ jac.T
    theirs = reference_call(FairGradWeighting(alpha=alpha), torch.tensor(g)).numpy()
    ours = fairgrad_weights(g, alpha)
    assert residual(g, ours, alpha) <= 1e-12
    if residual(g, theirs, alpha) > 1e-6:  # least_squares stopped on its own tolerances
        assert residual(g, ours, alpha) < residual(g, theirs, alpha)
    bound = 2 * (newton_distance(g, theirs, alpha) + newton_distance(g, ours, alpha))
    assert np.all(np.abs(ours - theirs) <= bound)


def test_same_direction_as_torchjd_pinned() -> None:
    from torchjd.aggregation import FairGrad as TorchJDFairGrad

    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)
    for alpha in (0.5, 2.0):
        torch.testing.assert_close(
            FairGrad(alpha=alpha, max_norm=None)(jac),
            TorchJDFairGrad(alpha=alpha)(jac),
            rtol=1e-7,
            atol=1e-9,
        )


# -- guarantees ---------------------------------------------------------------------------


@settings(deadline=None, max_examples=100)
@given(jac=jacobians(max_n=6, max_d=8), alpha=st.sampled_from(ALPHAS))
def test_non_conflicting(jac: torch.Tensor, alpha: float) -> None:
    agg = FairGrad(alpha=alpha, max_norm=None)
    d = agg(jac)
    w = agg.weights(gramian_of(jac)).numpy()
    assert np.all(w >= 0)
    norms = np.linalg.norm(jac.numpy(), axis=1)
    tol = 1e-10 * norms.max() * float(np.sum(w * norms)) + 1e-300
    assert torch.all(jac @ d >= -tol)


@settings(deadline=None, max_examples=50)
@given(jac=jacobians(min_n=2, max_n=6, max_d=8), alpha=st.sampled_from(ALPHAS), data=st.data())
def test_permutation_invariance(jac: torch.Tensor, alpha: float, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(jac.shape[0])))
    agg = FairGrad(alpha=alpha)
    w = agg.weights(gramian_of(jac))
    torch.testing.assert_close(
        agg.weights(gramian_of(jac[list(perm)])), w[list(perm)], rtol=1e-7, atol=0
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1e6, 1e12, 1e15])
def test_scaling_law(alpha: float, scale: float) -> None:
    # J → aJ: w → a^(−2α/(α+1)) w, so the direction scales as a^((1−α)/(1+α))
    jac = random_jacobian(4, 6, seed=3)
    agg = FairGrad(alpha=alpha, max_norm=None)
    w = agg.weights(gramian_of(jac))
    w_scaled = agg.weights(gramian_of(jac * scale))
    torch.testing.assert_close(
        w_scaled, w * scale ** (-2 * alpha / (alpha + 1)), rtol=1e-11, atol=0
    )
    d, d_scaled = agg(jac), agg(jac * scale)
    torch.testing.assert_close(
        d_scaled, d * scale ** ((1 - alpha) / (1 + alpha)), rtol=1e-11, atol=0
    )


def test_not_scale_equivariant_unless_alpha_tends_to_zero() -> None:
    jac = random_jacobian(3, 6, seed=1)
    d, d2 = FairGrad(alpha=2.0)(jac), FairGrad(alpha=2.0)(2.0 * jac)
    assert not torch.allclose(d2, 2.0 * d)


@pytest.mark.parametrize("max_norm", [None, 0.5, 1.0, 100.0])
def test_max_norm_clips_the_direction(max_norm: float | None) -> None:
    jac = random_jacobian(5, 30, seed=4)
    free = float(torch.linalg.norm(FairGrad(alpha=2.0, max_norm=None)(jac)))
    d = FairGrad(alpha=2.0, max_norm=max_norm)(jac)
    expected = free if max_norm is None else min(free, max_norm)
    assert math.isclose(float(torch.linalg.norm(d)), expected, rel_tol=1e-13)


def test_float32_jacobian() -> None:
    jac = random_jacobian(4, 50, seed=6)
    assert_float32_direction(lambda: FairGrad(alpha=2.0), jac.float())


def test_larger_alpha_favours_the_least_improved_objective() -> None:
    # g₂ is short: as α grows its improvement g₂·d gains relative to g₁·d (max-min fairness)
    g = np.array([[1.0, 0.3], [0.3, 0.25]])
    ratios = []
    for alpha in (0.5, 1.0, 2.0, 8.0):
        w = fairgrad_weights(g, alpha)
        gd = g @ w
        ratios.append(gd[1] / gd[0])
    assert all(a < b for a, b in zip(ratios, ratios[1:], strict=False))


# -- edge cases ---------------------------------------------------------------------------


def test_zero_gradient_gets_weight_zero() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    w = FairGrad(alpha=2.0, max_norm=None).weights(gramian_of(jac)).numpy()
    expected = fairgrad_weights(np.array([[1.0, 1.0], [1.0, 2.0]]), 2.0)
    np.testing.assert_allclose(w, [expected[0], 0.0, expected[1]], rtol=1e-15)


def test_all_zero_and_stationary_give_zero() -> None:
    for rows in (
        [[0.0, 0.0], [0.0, 0.0]],
        [[1.0, 2.0], [-2.0, -4.0]],
        [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]],
    ):
        jac = torch.tensor(rows, dtype=torch.float64)
        for alpha in (0.3, 1.0, 4.0):
            assert torch.equal(FairGrad(alpha=alpha)(jac), torch.zeros(2, dtype=torch.float64))


def test_identical_and_collinear_gradients() -> None:
    # g₁ = g₂ = g (‖g‖² = s): 2s·w = w^(−1/α) → w = (2s)^(−α/(α+1))
    g = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    s = float(g @ g)
    w = FairGrad(alpha=3.0, max_norm=None).weights(gramian_of(g.repeat(2, 1))).numpy()
    np.testing.assert_allclose(w, (2 * s) ** (-3 / 4), rtol=1e-14)
    w = fairgrad_weights(np.outer([1.0, 2.0], [1.0, 2.0]), 2.0)
    assert np.all(w > 0) and residual(np.outer([1.0, 2.0], [1.0, 2.0]), w, 2.0) < 1e-13


# -- hyper-parameters, registry, repr -----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"alpha": 0}, ValueError, "linear"),
        ({"alpha": -1.0}, ValueError, "> 0"),
        ({"alpha": float("nan")}, ValueError, "> 0"),
        ({"alpha": float("inf")}, ValueError, "> 0"),
        ({"alpha": "2"}, TypeError, "number"),
        ({"alpha": True}, TypeError, "number"),
        ({"max_norm": 0}, ValueError, "max_norm=None"),
        ({"max_norm": -2.0}, ValueError, "> 0 or None"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        FairGrad(**kwargs)


def test_registry_and_repr() -> None:
    agg = get_aggregator("fairgrad", alpha=2)
    assert isinstance(agg, FairGrad)
    assert repr(agg) == "FairGrad(alpha=2.0, max_norm=1.0)"
    assert repr(FairGrad(max_norm=None)) == "FairGrad(alpha=1.0, max_norm=None)"


def test_output_has_no_graph_and_reset_is_harmless() -> None:
    jac = random_jacobian(3, 5, seed=9).requires_grad_(True)
    agg = FairGrad(alpha=2.0)
    first = agg(jac)
    assert not first.requires_grad
    agg.reset()
    torch.testing.assert_close(agg(jac), first, rtol=0, atol=0)
