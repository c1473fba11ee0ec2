"""Aligned-MTL (Senushkin et al., CVPR 2023): pinned values, the paper's algorithm on the
Jacobian's SVD, TorchJD 0.18, edge cases, claimed properties, hyper-parameters and repr."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mogradient import get_aggregator
from mogradient.aggregators import gramian_of
from mogradient.solvers.aligned_mtl import aligned_mtl_weights
from tests.bounds import U64, assert_float32_direction, spectral_tolerance

torchjd_aggregation = pytest.importorskip("torchjd.aggregation")

MODES = ["min", "median", "rmse"]


def _svd_reference(j: np.ndarray, p: np.ndarray, mode: str) -> np.ndarray:
    """Algorithm 1 of the paper on the Jacobian itself: J = UΣVᵀ, the aligned Jacobian
    √s·U_rV_rᵀ (all r singular values equal), direction (√s·U_rV_rᵀ)ᵀp."""
    u, sigma, vt = np.linalg.svd(j, full_matrices=False)
    keep = sigma**2 > 100 * j.shape[0] * np.finfo(float).eps * sigma[0] ** 2
    lam = np.sort(sigma[keep] ** 2)
    scale = {"min": lam[0], "median": lam[(len(lam) - 1) // 2], "rmse": lam.mean()}[mode]
    aligned = math.sqrt(scale) * u[:, keep] @ vt[keep]
    return aligned.T @ p


# -- pinned values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "factor"), [("min", 1.0), ("median", 2.0), ("rmse", math.sqrt(14 / 3))]
)
def test_pinned_diagonal(mode: str, factor: float) -> None:
    # J = diag(1, 2, 3): G = diag(1, 4, 9), B = √s·diag(1, 1/2, 1/3) with s = 1, 4 or 14/3;
    # every aligned gradient has norm √s and the update is √s·(1, 1, 1)/3.
    jac = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    agg = get_aggregator("aligned-mtl", scale_mode=mode)
    w = agg.weights(gramian_of(jac)).numpy()
    np.testing.assert_allclose(w, factor * np.array([1, 1 / 2, 1 / 3]) / 3, rtol=1e-14)
    torch.testing.assert_close(agg(jac), torch.full((3,), factor / 3, dtype=torch.float64))


def test_pinned_preference() -> None:
    # g1 = e1, g2 = 2e2, p = (1, 3)/4: B = diag(1, 1/2), α = (1/4, 3/8), d = (1/4, 3/4).
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    agg = get_aggregator("aligned-mtl", preference=[1.0, 3.0])
    np.testing.assert_allclose(agg.weights(gramian_of(jac)).numpy(), [0.25, 0.375], rtol=1e-14)
    torch.testing.assert_close(agg(jac), torch.tensor([0.25, 0.75], dtype=torch.float64))


def test_median_is_the_lower_middle_eigenvalue_for_an_even_rank() -> None:
    # Eigenvalues 1, 4, 9, 16: "median" uses 4 (torch.median's convention, as TorchJD).
    jac = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    w = get_aggregator("aligned-mtl", scale_mode="median").weights(gramian_of(jac)).numpy()
    np.testing.assert_allclose(w, 2.0 * np.array([1, 1 / 2, 1 / 3, 1 / 4]) / 4, rtol=1e-14)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(10))
def test_matches_the_algorithm_on_the_jacobian(mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 7)), int(rng.integers(1, 9))
    j = rng.standard_normal((n, d))
    if seed % 3 == 0 and n > 1:  # rank-deficient
        j = rng.standard_normal((n, 1)) @ rng.standard_normal((1, d))
    p = rng.random(n) + 0.1
    d_ours = get_aggregator("aligned-mtl", preference=list(p), scale_mode=mode)(torch.tensor(j))
    expected = _svd_reference(j, p / p.sum(), mode)
    tol = spectral_tolerance(j @ j.T) * max(np.abs(expected).max(), 1e-300)
    np.testing.assert_allclose(d_ours.numpy(), expected, rtol=0, atol=tol)


def test_aligned_gradients_have_equal_singular_values() -> None:
    # B's columns are the weights for p = eₖ; the aligned gradients B·J (B is symmetric) have
    # every singular value equal to J's smallest one (scale_mode="min").
    rng = np.random.default_rng(1)
    j = rng.standard_normal((4, 7)) * np.array([[1e-2], [1.0], [10.0], [3.0]])
    gram = gramian_of(torch.tensor(j)).numpy()
    b = np.stack([aligned_mtl_weights(gram, e, "min") for e in np.eye(4)], axis=1)
    np.testing.assert_allclose(b, b.T, rtol=1e-10, atol=1e-14)
    sigma = np.linalg.svd(b @ j, compute_uv=False)
    np.testing.assert_allclose(sigma, np.full(4, np.linalg.svd(j, compute_uv=False)[-1]), rtol=1e-8)


def test_graded_gradients_are_accurate() -> None:
    # Gradient norms from 1e-3 to 1e3: λ_min/λ_max ≈ 1e-12 (above the rank cut-off), where
    # LAPACK's eigh is accurate only to ε·λ_max ≈ 1e-4 of λ_min, yet s = λ_min scales the
    # update. Jacobi rotations keep it accurate; reference: the same formula in 50-digit
    # arithmetic from the exact Gramian of J.
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(7)
    j = rng.standard_normal((4, 6)) * np.array([[1e-3], [1e-1], [1.0], [1e3]])
    gram = gramian_of(torch.tensor(j)).numpy()
    with mpmath.workdps(50):
        jm = mpmath.matrix(j.tolist())
        lam, vec = mpmath.eigsy(jm * jm.T)
        order = sorted(range(4), key=lambda k: lam[k])
        s = lam[order[0]]
        p = mpmath.matrix([0.25] * 4)
        alpha = mpmath.matrix(4, 1)
        for k in order:
            v = vec[:, k]
            alpha += v * ((v.T * p)[0] * mpmath.sqrt(s / lam[k]))
        expected = np.array([float(x) for x in alpha])
    w = get_aggregator("aligned-mtl").weights(gram)
    np.testing.assert_allclose(w, expected, rtol=1e-9)


# -- TorchJD 0.18 ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_matches_torchjd(mode: str) -> None:
    # TorchJD uses its preference vector as given; ours is normalised to sum to 1, so TorchJD
    # gets p / Σp (the only convention that differs).
    rng = np.random.default_rng(2)
    for _ in range(150):
        n, d = int(rng.integers(1, 8)), int(rng.integers(1, 11))
        j = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-4, 4)
        p = rng.random(n) + 0.05
        jac = torch.tensor(j)
        gram = gramian_of(jac)
        reference = torchjd_aggregation.AlignedMTLWeighting(
            torch.tensor(p / p.sum()), scale_mode=mode
        )
        expected = reference(gram) @ jac
        ours = get_aggregator("aligned-mtl", preference=list(p), scale_mode=mode)(jac)
        tol = spectral_tolerance(gram)
        torch.testing.assert_close(ours, expected, rtol=0, atol=tol * float(expected.abs().max()))
        expected_mean = torchjd_aggregation.AlignedMTLWeighting(scale_mode=mode)(gram) @ jac
        ours_mean = get_aggregator("aligned-mtl", scale_mode=mode)(jac)
        torch.testing.assert_close(
            ours_mean, expected_mean, rtol=0, atol=tol * float(expected_mean.abs().max())
        )


# -- edge cases -----------------------------------------------------------------------------


def test_one_objective_returns_its_gradient() -> None:
    jac = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    for mode in MODES:
        torch.testing.assert_close(get_aggregator("aligned-mtl", scale_mode=mode)(jac), jac[0])


def test_zero_jacobian_gives_the_preference_and_a_zero_update() -> None:
    jac = torch.zeros(3, 4, dtype=torch.float64)
    agg = get_aggregator("aligned-mtl", preference=[1.0, 1.0, 2.0])
    np.testing.assert_allclose(agg.weights(gramian_of(jac)).numpy(), [0.25, 0.25, 0.5])
    assert torch.count_nonzero(agg(jac)) == 0


def test_identical_gradients_give_their_mean() -> None:
    jac = torch.tensor([[1.0, 2.0, 3.0]] * 3, dtype=torch.float64)
    for mode in MODES:
        torch.testing.assert_close(get_aggregator("aligned-mtl", scale_mode=mode)(jac), jac[0])


def test_collinear_gradients_give_the_weighted_mean() -> None:
    # Rank 1: the aligned Jacobian is J itself, so the update is pᵀJ.
    jac = torch.tensor([[1.0, 2.0], [-2.0, -4.0], [0.5, 1.0]], dtype=torch.float64)
    p = [0.2, 0.3, 0.5]
    expected = torch.tensor(p, dtype=torch.float64) @ jac
    torch.testing.assert_close(get_aggregator("aligned-mtl", preference=p)(jac), expected)


def test_opposite_gradients_give_exactly_zero() -> None:
    jac = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]], dtype=torch.float64)
    assert torch.count_nonzero(get_aggregator("aligned-mtl")(jac)) == 0


def test_zero_gradient_among_others() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    w = get_aggregator("aligned-mtl").weights(gramian_of(jac)).numpy()
    np.testing.assert_allclose(w, [1 / 3, 0.0, 1 / 6], rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e5, 1e10, 1e15])
def test_scales(mode: str, scale: float) -> None:
    rng = np.random.default_rng(3)
    jac = torch.tensor(rng.standard_normal((4, 6)))
    agg = get_aggregator("aligned-mtl", scale_mode=mode)
    d = agg(jac)
    ds = agg(jac * scale)
    assert torch.isfinite(ds).all()
    torch.testing.assert_close(ds, d * scale, rtol=1e-10, atol=0.0)


def test_float32_jacobian() -> None:
    rng = np.random.default_rng(4)
    j64 = torch.tensor(rng.standard_normal((3, 50)))
    assert_float32_direction(lambda: get_aggregator("aligned-mtl"), j64.float())


def test_preference_length_must_match() -> None:
    agg = get_aggregator("aligned-mtl", preference=[1.0, 2.0])
    with pytest.raises(ValueError, match="preference has 2 entries but got 3 objectives"):
        agg(torch.ones(3, 2, dtype=torch.float64))


# -- claimed properties ---------------------------------------------------------------------


def test_claims_depend_on_the_preference() -> None:
    base = {"scale_equivariant", "deterministic", "reset_restores", "non_differentiable"}
    assert type(get_aggregator("aligned-mtl")).properties == base  # hold for every hyper-parameter
    assert get_aggregator("aligned-mtl").claims() == base | {"permutation_invariant"}
    assert get_aggregator("aligned-mtl", preference=[1.0, 2.0]).claims() == base


@pytest.mark.parametrize("mode", MODES)
def test_claimed_properties_hold_on_random_jacobians(mode: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        n, d = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        j = rng.standard_normal((n, d)) if rng.random() < 0.7 else rng.integers(-2, 3, (n, d)) * 1.0
        jac = torch.tensor(j * 10.0 ** rng.uniform(-8, 8))
        agg = get_aggregator("aligned-mtl", scale_mode=mode)
        out = agg(jac)
        w = agg.weights(gramian_of(jac))
        size = float((w.abs() * jac.norm(dim=1)).sum()) + 1e-300
        tol = spectral_tolerance(gramian_of(jac)) + 4 * U64  # + the rounding of jac·a
        perm = torch.tensor(rng.permutation(n))
        assert float((agg(jac[perm]) - out).abs().max()) <= tol * size
        a = float(10.0 ** rng.uniform(-3, 3))
        assert float((agg(jac * a) - a * out).abs().max()) <= tol * a * size
        assert torch.equal(get_aggregator("aligned-mtl", scale_mode=mode)(jac), out)
        agg.reset()
        assert torch.equal(agg(jac), out)


def test_not_non_conflicting() -> None:
    # Why non_conflicting is not claimed: J·d = √s·G^{1/2}p can have negative entries.
    jac = torch.tensor([[2.0, -1.0], [-3.0, 3.0]], dtype=torch.float64)
    d = get_aggregator("aligned-mtl")(jac)
    assert float((jac @ d)[0]) < -0.05  # J·d ≈ (-0.0586, 0.703)


def test_no_graph_through_the_output() -> None:
    jac = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert not get_aggregator("aligned-mtl")(jac).requires_grad


# -- hyper-parameters and repr --------------------------------------------------------------


def test_repr() -> None:
    assert repr(get_aggregator("aligned-mtl")) == "AlignedMTL(preference=None, scale_mode='min')"
    assert (
        repr(get_aggregator("aligned-mtl", preference=[1, 3], scale_mode="rmse"))
        == "AlignedMTL(preference=[0.25, 0.75], scale_mode='rmse')"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale_mode": "max"}, ValueError, "scale_mode must be one of"),
        ({"scale_mode": 1}, TypeError, "scale_mode must be one of"),
        ({"preference": [1.0, -1.0]}, ValueError, "non-negative"),
        ({"preference": [0.0, 0.0]}, ValueError, "not be all zero"),
        ({"preference": "ab"}, TypeError, "preference must be a sequence"),
        ({"pref_vector": [1.0]}, TypeError, "accepts: preference, scale_mode"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        get_aggregator("aligned-mtl", **kwargs)
