"""Nash-MTL: the exact solution of αᵢ(Gα)ᵢ = 1, against closed forms, high-precision roots,
the reference cvxpy formulation and TorchJD 0.18; its guarantees and its edge cases."""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.registry import get_aggregator
from mogradient.aggregators.nash_mtl import NashMTL
from mogradient.solvers.fairgrad import fairgrad_weights
from mogradient.solvers.nash_mtl import nash_mtl_weights
from tests.bounds import U64, assert_float32_direction, gamma
from tests.references import reference_call
from tests.strategies import jacobians, random_jacobian

SEEDS = st.integers(0, 2**32 - 1)


def residual(g: np.ndarray, a: np.ndarray) -> float:
    """max |αᵢ(Gα)ᵢ − 1|: zero at the exact solution, scale-free."""
    return float(np.max(np.abs(a * (g @ a) - 1.0)))


def newton_distance(g: np.ndarray, a: np.ndarray) -> np.ndarray:
    """|∂F(α)⁻¹F(α)| for F(α) = α∘(Gα) − 1: the Newton step from α, i.e. (to first order,
    and within twice that by Newton–Kantorovich once the step is small) how far α is from the
    root. Two approximate roots differ by at most twice the sum of their steps. F's own
    evaluation error, γ_{m+2}·α∘(|G|α), and α's last rounding are added: at machine precision
    they, not the computed F, decide."""
    m = g.shape[0]
    jac = np.diag(g @ a) + a[:, None] * g
    slack = np.abs(a * (g @ a) - 1.0) + gamma(m + 2, U64) * a * (np.abs(g) @ a)
    return np.abs(np.linalg.inv(jac)) @ slack + U64 * np.abs(a)


def gaussian_gramian(seed: int, m: int, d: int = 2000, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    j = rng.normal(size=(m, d)) * np.exp(spread * rng.normal(size=(m, 1)))
    return j @ j.T


def mp_root(g: np.ndarray) -> np.ndarray:
    """Brute force: Newton on αᵢ(Gα)ᵢ = 1 in 60-digit arithmetic, from our float64 root."""
    mpmath.mp.dps = 60
    m = g.shape[0]
    gm = mpmath.matrix(g.tolist())
    start = nash_mtl_weights(g).tolist()
    sol = mpmath.findroot(
        lambda *a: [a[i] * sum(gm[i, j] * a[j] for j in range(m)) - 1 for i in range(m)],
        start,
    )
    return np.array([float(sol[i]) for i in range(m)])


# -- pinned values ------------------------------------------------------------------------


def test_one_objective_is_the_inverse_norm() -> None:
    np.testing.assert_allclose(nash_mtl_weights(np.array([[25.0]])), [0.2], rtol=1e-15)
    jac = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    # α = 1/‖g‖: the direction is the unit gradient (max_norm = 1 does not bind)
    torch.testing.assert_close(NashMTL()(jac), jac[0] / 5.0, rtol=1e-15, atol=0)


def test_two_objectives_closed_form() -> None:
    # J = [[-4, 1, 1], [6, 1, 1]]: G = [[18, -22], [-22, 38]]; α = (1/‖gᵢ‖)/√(1 + cos θ)
    g = np.array([[18.0, -22.0], [-22.0, 38.0]])
    cos = -22.0 / math.sqrt(18.0 * 38.0)
    expected = np.array([1 / math.sqrt(18.0), 1 / math.sqrt(38.0)]) / math.sqrt(1.0 + cos)
    np.testing.assert_allclose(nash_mtl_weights(g), expected, rtol=1e-14)


def test_orthogonal_gradients_get_inverse_norms() -> None:
    g = np.diag([4.0, 0.01, 1e6])
    np.testing.assert_allclose(nash_mtl_weights(g), [0.5, 10.0, 1e-3], rtol=1e-14)


@pytest.mark.parametrize("m, c", [(3, 0.25), (5, -0.2), (8, 0.9), (50, 0.0)])
def test_equicorrelated_closed_form(m: int, c: float) -> None:
    # G = s((1−c)I + c11ᵀ): by symmetry α = 1/√(s(1 + (m−1)c))
    s = 7.0
    g = s * ((1 - c) * np.eye(m) + c * np.ones((m, m)))
    np.testing.assert_allclose(
        nash_mtl_weights(g), 1 / math.sqrt(s * (1 + (m - 1) * c)), rtol=1e-14
    )


@pytest.mark.parametrize("seed", range(6))
def test_matches_60_digit_root(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 7))
    g = gaussian_gramian(seed, m, d=int(rng.integers(m, 12)), spread=1.5)
    np.testing.assert_allclose(nash_mtl_weights(g), mp_root(g), rtol=1e-12)


@settings(deadline=None, max_examples=150)
@given(SEEDS, st.integers(1, 50), st.sampled_from([1, 3, 50, 2000]), st.sampled_from([0.0, 2.0]))
def test_residual_at_machine_precision(seed: int, m: int, d: int, spread: float) -> None:
    g = gaussian_gramian(seed, m, d, spread)
    a = nash_mtl_weights(g)
    if np.all(a == 0.0):  # Pareto-stationary (m > d): 0 is in the hull of the gradients
        return
    assert np.all(a > 0.0)
    assert residual(g, a) <= 1e-9


# -- references: TorchJD 0.18 and the original cvxpy formulation ---------------------------


def cvxpy_nash(g: np.ndarray, niter: int = 20) -> np.ndarray:
    """The reference formulation (Navon et al.'s code): a sequence of convex problems in cvxpy,
    each minimising 1ᵀGα plus the linearised concave part subject to αᵢ(Gα)ᵢ ≥ 1, on the
    Gramian divided by its Frobenius norm ν (the constraint carries ν back), from α = 1, with
    the reference's stop tests (‖Ĝα − 1/α‖ < 1e-3 or a step < 1e-6)."""
    cp = pytest.importorskip("cvxpy")
    solver = cp.ECOS if "ECOS" in cp.installed_solvers() else cp.CLARABEL
    m = g.shape[0]
    nu = float(np.linalg.norm(g))
    gn = g / nu
    alpha = cp.Variable(m, nonneg=True)
    previous = np.ones(m)
    for _ in range(niter):
        g_prev = gn @ previous
        tangent = 1.0 / previous + (1.0 / g_prev) @ gn
        g_alpha = gn @ alpha
        constraints = [-cp.log(alpha[i] * nu) - cp.log(g_alpha[i]) <= 0 for i in range(m)]
        problem = cp.Problem(
            cp.Minimize(cp.sum(g_alpha) + tangent @ (alpha - previous) / nu), constraints
        )
        reference_call(problem.solve, solver=solver)
        new = alpha.value
        if (
            new is None
            or np.linalg.norm(gn @ previous - 1 / (previous + 1e-10)) < 1e-3
            or np.linalg.norm(new - previous) < 1e-6
        ):
            break
        previous = new
    return previous


@pytest.mark.parametrize("seed, m", [(0, 2), (1, 3), (2, 5), (3, 8)])
def test_same_optimum_as_the_cvxpy_formulation(seed: int, m: int) -> None:
    g = gaussian_gramian(seed, m, d=200, spread=0.5)
    reference = cvxpy_nash(g)
    ours = nash_mtl_weights(g)
    assert residual(g, ours) <= 1e-13 < residual(g, reference)
    # the reference stops at ‖Ĝα − 1/α‖ < 1e-3: how far that is from the root, Newton says
    bound = 2 * (newton_distance(g, reference) + newton_distance(g, ours))
    assert np.all(np.abs(ours - reference) <= bound)


def torchjd_nash(jac: np.ndarray) -> np.ndarray:
    pytest.importorskip("ecos")
    from torchjd.aggregation import NashMTL as TorchJDNashMTL

    agg = TorchJDNashMTL(n_tasks=jac.shape[0], max_norm=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy: "the problem is not DPP"
        return agg.weighting(torch.tensor(jac)).numpy().astype(np.float64)


@pytest.mark.parametrize("seed", range(8))
def test_same_weights_as_torchjd_where_it_converges(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 8))
    jac = rng.normal(size=(m, 100)) * np.exp(0.5 * rng.normal(size=(m, 1)))
    g = jac @ jac.T
    theirs = reference_call(torchjd_nash, jac)
    ours = nash_mtl_weights(g)
    assert residual(g, ours) <= 1e-13
    assert residual(g, ours) < residual(g, theirs)  # TorchJD stops after 20 convex solves
    bound = 2 * (newton_distance(g, theirs) + newton_distance(g, ours))
    assert np.all(np.abs(ours - theirs) <= bound)


def test_torchjd_direction_with_clipping_matches_default() -> None:
    pytest.importorskip("ecos")
    from torchjd.aggregation import NashMTL as TorchJDNashMTL

    jac = random_jacobian(3, 40, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = TorchJDNashMTL(n_tasks=3)(jac)  # max_norm = 1.0, as ours
    ours = NashMTL()(jac)
    assert math.isclose(float(torch.linalg.norm(ours)), 1.0, rel_tol=1e-13)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# -- guarantees ---------------------------------------------------------------------------


@settings(deadline=None, max_examples=120)
@given(jac=jacobians(max_n=6, max_d=8))
def test_non_conflicting_and_norm(jac: torch.Tensor) -> None:
    agg = NashMTL(max_norm=None)
    d = agg(jac)
    w = agg.weights(gramian_of(jac)).numpy()
    j = jac.numpy()
    norms = np.linalg.norm(j, axis=1)
    # rounding in J·d grows with the cancellation Σ wᵢ‖gᵢ‖ (below 1e4·‖d‖ by construction)
    tol = 1e-10 * norms.max() * float(np.sum(w * norms)) + 1e-300
    assert torch.all(jac @ d >= -tol)
    if np.any(w > 0):
        n_kept = int(np.sum(w > 0))
        assert math.isclose(float(torch.linalg.norm(d)), math.sqrt(n_kept), rel_tol=1e-6)


@settings(deadline=None, max_examples=60)
@given(jac=jacobians(min_n=2, max_n=6, max_d=8), data=st.data())
def test_permutation_invariance(jac: torch.Tensor, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(jac.shape[0])))
    agg = NashMTL()
    w = agg.weights(gramian_of(jac))
    w_perm = agg.weights(gramian_of(jac[list(perm)]))
    torch.testing.assert_close(w_perm, w[list(perm)], rtol=1e-7, atol=0)


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e6, 1e12, 1e15])
def test_direction_is_scale_invariant(scale: float) -> None:
    jac = random_jacobian(4, 6, seed=3)
    agg = NashMTL(max_norm=None)
    d, d_scaled = agg(jac), agg(jac * scale)
    torch.testing.assert_close(d_scaled, d, rtol=1e-12, atol=1e-13)
    w, w_scaled = agg.weights(gramian_of(jac)), agg.weights(gramian_of(jac * scale))
    torch.testing.assert_close(w_scaled * scale, w, rtol=1e-12, atol=0)


def test_direction_is_invariant_to_rescaling_one_objective() -> None:
    jac = random_jacobian(4, 6, seed=8)
    factors = torch.tensor([[1e-6], [3.0], [1.0], [1e8]], dtype=torch.float64)
    agg = NashMTL(max_norm=None)
    torch.testing.assert_close(agg(jac * factors), agg(jac), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("max_norm", [None, 0.5, 1.0, 2.0, 100.0])
def test_max_norm_clips_the_direction(max_norm: float | None) -> None:
    jac = random_jacobian(5, 30, seed=4)
    d = NashMTL(max_norm=max_norm)(jac)
    expected = math.sqrt(5.0) if max_norm is None else min(max_norm, math.sqrt(5.0))
    assert math.isclose(float(torch.linalg.norm(d)), expected, rel_tol=1e-13)


def test_float32_jacobian() -> None:
    jac = random_jacobian(4, 50, seed=6)
    assert_float32_direction(NashMTL, jac.float())


# -- edge cases ---------------------------------------------------------------------------


def test_zero_gradient_gets_weight_zero_and_is_left_out() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    w = NashMTL(max_norm=None).weights(gramian_of(jac)).numpy()
    expected = nash_mtl_weights(np.array([[1.0, 1.0], [1.0, 2.0]]))
    np.testing.assert_allclose(w, [expected[0], 0.0, expected[1]], rtol=1e-15)


def test_all_zero_gradients_give_zero() -> None:
    d = NashMTL()(torch.zeros(3, 4, dtype=torch.float64))
    assert torch.equal(d, torch.zeros(4, dtype=torch.float64))


def test_identical_gradients_share_the_weight() -> None:
    # g₁ = g₂ = g: β₁ + β₂ = 1/β₁ = 1/β₂ → αᵢ = 1/(√2‖g‖); the direction is √2 g/‖g‖
    g = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    agg = NashMTL(max_norm=None)
    w = agg.weights(gramian_of(g.repeat(2, 1))).numpy()
    np.testing.assert_allclose(w, 1 / (math.sqrt(2) * float(torch.linalg.norm(g))), rtol=1e-14)


def test_collinear_same_direction() -> None:
    # g₂ = 3g₁: the cosine is 1, so α = (1/‖g₁‖, 1/‖g₂‖)/√2
    g = np.array([1.0, 2.0])
    w = nash_mtl_weights(np.outer([1.0, 3.0], [1.0, 3.0]) * (g @ g))
    np.testing.assert_allclose(w, np.array([1.0, 1 / 3]) / math.sqrt(2 * (g @ g)), rtol=1e-14)


@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, 2.0], [-2.0, -4.0]],  # opposite collinear
        [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]],  # a stationary pair beside a free objective
        [[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]],  # three at 120°: 0 in the hull
    ],
)
def test_pareto_stationary_gives_zero(rows: list[list[float]]) -> None:
    jac = torch.tensor(rows, dtype=torch.float64)
    assert torch.equal(NashMTL()(jac), torch.zeros(2, dtype=torch.float64))


def test_nearly_opposite_gradients_are_still_solved() -> None:
    # cos θ = −1 + 2e-6: α = 1/√(1 + cos θ) ≈ 707 per unit gradient (amplification 1000)
    theta = math.acos(-1 + 2e-6)
    g = np.array([[1.0, math.cos(theta)], [math.cos(theta), 1.0]])
    np.testing.assert_allclose(nash_mtl_weights(g), 1 / math.sqrt(1 + math.cos(theta)), rtol=1e-9)


def test_fairgrad_alpha_one_is_the_same_system() -> None:
    g = gaussian_gramian(11, 6, spread=1.0)
    np.testing.assert_allclose(fairgrad_weights(g, 1.0), nash_mtl_weights(g), rtol=1e-15)


def test_hundred_objectives() -> None:
    jac = random_jacobian(100, 30, seed=4)  # m > d: Pareto-stationary, zero direction
    assert torch.equal(NashMTL()(jac), torch.zeros(30, dtype=torch.float64))
    jac = random_jacobian(100, 300, seed=4)
    w = NashMTL(max_norm=None).weights(gramian_of(jac)).numpy()
    assert np.all(w > 0) and residual(gramian_of(jac).numpy(), w) <= 1e-12


# -- hyper-parameters, registry, repr -----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_norm": 0}, ValueError, "max_norm=None"),
        ({"max_norm": -1.0}, ValueError, "> 0 or None"),
        ({"max_norm": float("nan")}, ValueError, "> 0 or None"),
        ({"max_norm": float("inf")}, ValueError, "> 0 or None"),
        ({"max_norm": "1"}, TypeError, "number"),
        ({"max_norm": True}, TypeError, "number"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        NashMTL(**kwargs)


def test_registry_and_repr() -> None:
    assert isinstance(get_aggregator("nash-mtl"), NashMTL)
    assert isinstance(get_aggregator("Nash_MTL", max_norm=None), NashMTL)
    assert isinstance(get_aggregator("nashmtl"), NashMTL)
    assert repr(NashMTL()) == "NashMTL(max_norm=1.0)"
    assert repr(NashMTL(max_norm=None)) == "NashMTL(max_norm=None)"


def test_output_has_no_graph_and_reset_is_harmless() -> None:
    jac = random_jacobian(3, 5, seed=9).requires_grad_(True)
    agg = NashMTL()
    first = agg(jac)
    assert not first.requires_grad
    agg.reset()
    torch.testing.assert_close(agg(jac), first, rtol=0, atol=0)
