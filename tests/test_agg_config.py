"""ConFIG (Liu et al., ICLR 2025, arXiv 2408.11104): pinned values, Eq. 2 on the unit
gradients, TorchJD 0.18, edge cases, claimed properties, hyper-parameters and repr."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mogradient import get_aggregator
from mogradient.aggregators import gramian_of
from tests.bounds import assert_float32_direction, spectral_tolerance

torchjd_aggregation = pytest.importorskip("torchjd.aggregation")

SQRT2 = math.sqrt(2.0)


def _eq2(j: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Eq. 2 on explicit vectors: ŭ = pinv(U) p with U the unit gradients (zero rows stay 0),
    û = ŭ/‖ŭ‖, d = (Σᵢ gᵢ·û) û."""
    norms = np.linalg.norm(j, axis=1, keepdims=True)
    units = np.divide(j, norms, out=np.zeros_like(j), where=norms > 0)
    u = np.linalg.pinv(units, rcond=1e-7) @ p
    if np.linalg.norm(u) == 0:
        return np.zeros(j.shape[1])
    unit = u / np.linalg.norm(u)
    return (j @ unit).sum() * unit


def _config(jac: torch.Tensor, **kwargs: object) -> torch.Tensor:
    return get_aggregator("config", **kwargs)(jac)


# -- pinned values ------------------------------------------------------------------------


def test_pinned_45_degrees() -> None:
    # u1 = e1, u2 = (1, 1)/√2: ŭ solves u1·x = u2·x = 1, x = (1, √2 − 1), ‖x‖² = 4 − 2√2;
    # Σ gᵢ·x = 2 + (√2 − 1) = 1 + √2, so d = (1 + √2)/(4 − 2√2) · x.
    jac = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    x = np.array([1.0, SQRT2 - 1])
    expected = (1 + SQRT2) / (4 - 2 * SQRT2) * x
    np.testing.assert_allclose(_config(jac).numpy(), expected, rtol=1e-14)


def test_pinned_orthogonal_with_preference() -> None:
    # u1 = e1, u2 = e2, p ∝ (1, 3): û = (1, 3)/√10, Σ gᵢ·û = (1 + 2·3)/√10, d = 0.7·(1, 3).
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    np.testing.assert_allclose(_config(jac, preference=[1, 3]).numpy(), [0.7, 2.1], rtol=1e-14)


def test_equal_projections_and_length() -> None:
    rng = np.random.default_rng(0)
    j = rng.standard_normal((4, 9)) * np.array([[1e-3], [1.0], [30.0], [2.0]])
    d = _config(torch.tensor(j)).numpy()
    units = j / np.linalg.norm(j, axis=1, keepdims=True)
    proj = units @ d
    np.testing.assert_allclose(proj, np.full(4, proj[0]), rtol=1e-9)  # conflict-free
    unit = d / np.linalg.norm(d)
    np.testing.assert_allclose(np.linalg.norm(d), (j @ unit).sum(), rtol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_matches_eq2_on_explicit_vectors(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 7)), int(rng.integers(1, 9))
    j = rng.standard_normal((n, d))
    if seed % 4 == 0:
        j[rng.integers(0, n)] = 0.0
    p = rng.random(n) + 0.05
    ours = _config(torch.tensor(j), preference=list(p)).numpy()
    expected = _eq2(j, p / p.sum())
    tol = spectral_tolerance(j @ j.T) * np.linalg.norm(j, axis=1).sum()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=tol)


# -- TorchJD 0.18 ---------------------------------------------------------------------------


def test_matches_torchjd() -> None:
    # TorchJD's default preference is 1 (a sum), ours is 1/n; only p's direction matters.
    rng = np.random.default_rng(1)
    for _ in range(300):
        n, d = int(rng.integers(1, 8)), int(rng.integers(1, 11))
        j = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-4, 4)
        jac = torch.tensor(j)
        expected = torchjd_aggregation.ConFIG()(jac)
        atol = spectral_tolerance(jac @ jac.T) * float(jac.norm(dim=1).sum())
        ours = _config(jac)
        if torch.count_nonzero(ours) == 0:
            # ŭ = 0 (e.g. two opposite gradients): TorchJD normalises the rounding noise of
            # pinv(U)p with F.normalize's eps = 1e-12 and returns a tiny non-zero vector.
            assert float(expected.abs().max()) <= 1e-5 * float(jac.norm(dim=1).sum())
            continue
        torch.testing.assert_close(ours, expected, rtol=0, atol=atol)
        p = rng.random(n) + 0.05
        expected = torchjd_aggregation.ConFIG(torch.tensor(p))(jac)
        torch.testing.assert_close(_config(jac, preference=list(p)), expected, rtol=0, atol=atol)


# -- edge cases -----------------------------------------------------------------------------


def test_one_objective_returns_its_gradient() -> None:
    jac = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(_config(jac), jac[0])


@pytest.mark.parametrize("n", [1, 3])
def test_zero_jacobian_gives_zero(n: int) -> None:
    jac = torch.zeros(n, 4, dtype=torch.float64)
    assert torch.count_nonzero(_config(jac)) == 0


def test_zero_gradient_is_left_out() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    expected = _config(jac[[0, 2]])
    torch.testing.assert_close(_config(jac), expected)
    w = get_aggregator("config").weights(gramian_of(jac)).numpy()
    assert w[1] == 0.0


def test_identical_gradients_give_their_sum() -> None:
    jac = torch.tensor([[1.0, 2.0, 3.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(_config(jac), 3 * jac[0])


def test_opposite_gradients_give_exactly_zero() -> None:
    jac = torch.tensor([[1.0, -1.0, 0.5], [-2.0, 2.0, -1.0]], dtype=torch.float64)
    assert torch.count_nonzero(_config(jac)) == 0


def test_cancelling_projections_give_exactly_zero() -> None:
    # One column, Σ gᵢ = 0: û = ±e1 and Σ gᵢ·û = 0 exactly.
    jac = torch.tensor([[-1.0], [3.0], [-2.0]], dtype=torch.float64) * 0.0323
    assert torch.count_nonzero(_config(jac)) == 0


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e5, 1e10, 1e15])
def test_scales(scale: float) -> None:
    rng = np.random.default_rng(3)
    jac = torch.tensor(rng.standard_normal((4, 6)))
    d = _config(jac)
    ds = _config(jac * scale)
    assert torch.isfinite(ds).all()
    torch.testing.assert_close(ds, d * scale, rtol=1e-10, atol=0.0)


def test_float32_jacobian() -> None:
    rng = np.random.default_rng(4)
    j64 = torch.tensor(rng.standard_normal((3, 50)))
    assert_float32_direction(lambda: get_aggregator("config"), j64.float())


def test_preference_length_must_match() -> None:
    with pytest.raises(ValueError, match="preference has 2 entries but got 3 objectives"):
        _config(torch.ones(3, 2, dtype=torch.float64), preference=[1.0, 2.0])


# -- claimed properties ---------------------------------------------------------------------


def test_claims_depend_on_the_preference() -> None:
    base = {"scale_equivariant", "deterministic", "reset_restores", "non_differentiable"}
    assert type(get_aggregator("config")).properties == base  # hold for every hyper-parameter
    assert get_aggregator("config").claims() == base | {"permutation_invariant"}
    assert get_aggregator("config", preference=[1.0, 2.0]).claims() == base


def test_claimed_properties_hold_on_random_jacobians() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        n, d = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        j = rng.standard_normal((n, d)) if rng.random() < 0.7 else rng.integers(-2, 3, (n, d)) * 1.0
        jac = torch.tensor(j * 10.0 ** rng.uniform(-8, 8))
        agg = get_aggregator("config")
        out = agg(jac)
        w = agg.weights(gramian_of(jac))
        size = float((w.abs() * jac.norm(dim=1)).sum()) + 1e-300
        perm = torch.tensor(rng.permutation(n))
        assert float((agg(jac[perm]) - out).abs().max()) <= 1e-9 * size
        a = float(10.0 ** rng.uniform(-3, 3))
        assert float((agg(jac * a) - a * out).abs().max()) <= 1e-9 * a * size
        assert torch.equal(get_aggregator("config")(jac), out)
        agg.reset()
        assert torch.equal(agg(jac), out)
        if np.linalg.matrix_rank(j) == n:  # independent gradients: no conflict (Sec. 3)
            assert float((jac @ out).min()) >= -1e-9 * float(jac.norm(dim=1).max() * out.norm())


def test_same_line_as_imtl_g() -> None:
    # Both equalise the projections on the unit gradients (docs/aggregators/config.md).
    rng = np.random.default_rng(6)
    for _ in range(50):
        jac = torch.tensor(rng.standard_normal((int(rng.integers(2, 6)), int(rng.integers(1, 8)))))
        a, b = _config(jac), get_aggregator("imtl-g")(jac)
        if a.norm() > 0 and b.norm() > 0:
            assert float(abs(a @ b) / (a.norm() * b.norm())) == pytest.approx(1.0, abs=1e-12)


def test_dependent_gradients_can_conflict() -> None:
    # Why non_conflicting is not claimed: for dependent gradients ĜĜ⁺p need not be positive.
    # Three gradients in the plane at 0°, 100° and 200°.
    angles = np.deg2rad([0.0, 100.0, 200.0])
    jac = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1))
    d = _config(jac)
    assert float((jac @ d).min()) < 0


def test_no_graph_through_the_output() -> None:
    jac = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert not _config(jac).requires_grad


# -- hyper-parameters and repr --------------------------------------------------------------


def test_repr() -> None:
    assert repr(get_aggregator("config")) == "ConFIG(preference=None)"
    assert (
        repr(get_aggregator("config", preference=[1, 1, 2]))
        == "ConFIG(preference=[0.25, 0.25, 0.5])"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"preference": [1.0, -1.0]}, ValueError, "non-negative"),
        ({"preference": [1.0, float("nan")]}, ValueError, "finite"),
        ({"preference": [0.0, 0.0]}, ValueError, "not be all zero"),
        ({"preference": 3.0}, TypeError, "preference must be a sequence"),
        ({"pref_vector": [1.0]}, TypeError, "accepts: preference"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        get_aggregator("config", **kwargs)
