"""IMTL-G (Liu et al., ICLR 2021): pinned values, the paper's closed form, TorchJD 0.18, edge
cases, claimed properties, hyper-parameters and repr."""

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


def _weights(jac: torch.Tensor) -> np.ndarray:
    return get_aggregator("imtl-g").weights(gramian_of(jac)).numpy()


def _paper_weights(jac: np.ndarray) -> np.ndarray:
    """The paper's closed form (Liu et al. 2021, Sec. 3.2): with D = [g₁ − gₜ]ₜ and
    U = [u₁ − uₜ]ₜ, α₂..ₙ = g₁Uᵀ(DUᵀ)⁻¹ and α₁ = 1 − Σ α₂..ₙ."""
    units = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    d = jac[0] - jac[1:]
    u = units[0] - units[1:]
    rest = np.linalg.solve((d @ u.T).T, u @ jac[0])
    return np.concatenate([[1.0 - rest.sum()], rest])


def _projections(jac: torch.Tensor, direction: torch.Tensor) -> np.ndarray:
    j = jac.double().numpy()
    return (j @ direction.double().numpy()) / np.linalg.norm(j, axis=1)


# -- pinned values ------------------------------------------------------------------------


def test_pinned_orthogonal_gradients() -> None:
    # g1 = e1, g2 = 2 e2: w ∝ G⁻¹(1, 2) = (1, 1/2), so w = (2/3, 1/3) and d = (2/3, 2/3).
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    np.testing.assert_allclose(_weights(jac), [2 / 3, 1 / 3], rtol=1e-14)
    torch.testing.assert_close(
        get_aggregator("imtl-g")(jac), torch.tensor([2 / 3, 2 / 3], dtype=torch.float64)
    )


def test_pinned_45_degrees() -> None:
    # g1 = e1, g2 = (1, 1): equal projections need d₂ = (√2 − 1) d₁, so α = (2 − √2, √2 − 1).
    jac = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    np.testing.assert_allclose(_weights(jac), [2 - SQRT2, SQRT2 - 1], rtol=1e-14)
    proj = _projections(jac, get_aggregator("imtl-g")(jac))
    np.testing.assert_allclose(proj, [1.0, 1.0], rtol=1e-14)  # d = (1, √2 − 1)


def test_pinned_two_conflicting() -> None:
    # J = [[-4, 1, 1], [6, 1, 1]]: check against the paper's closed form computed by hand:
    # D = g1 - g2 = (-10, 0, 0), U = u1 - u2, α₂ = g1·U / D·U.
    j = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    u = j[0] / math.sqrt(18) - j[1] / math.sqrt(38)
    a2 = float(j[0] @ u) / float((j[0] - j[1]) @ u)
    np.testing.assert_allclose(_weights(torch.tensor(j)), [1 - a2, a2], rtol=1e-13)


@pytest.mark.parametrize("seed", range(20))
def test_matches_the_paper_closed_form(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    j = rng.standard_normal((n, n + int(rng.integers(0, 5))))
    w = _weights(torch.tensor(j))
    tol = spectral_tolerance(j @ j.T) * float(np.abs(w).max())
    np.testing.assert_allclose(w, _paper_weights(j), rtol=0, atol=tol)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
    proj = _projections(torch.tensor(j), torch.tensor(w @ j))
    np.testing.assert_allclose(proj, np.full(n, proj[0]), rtol=1e-9)


# -- TorchJD 0.18 ---------------------------------------------------------------------------


def test_matches_torchjd_on_linearly_independent_gradients() -> None:
    rng = np.random.default_rng(0)
    reference = torchjd_aggregation.IMTLGWeighting()
    for _ in range(300):
        n = int(rng.integers(1, 9))
        j = rng.standard_normal((n, n + int(rng.integers(0, 6)))) * 10.0 ** rng.uniform(-4, 4)
        jac = torch.tensor(j)
        gram = gramian_of(jac)
        expected = reference(gram) @ jac
        tol = spectral_tolerance(gram) * float(expected.abs().max())
        torch.testing.assert_close(get_aggregator("imtl-g")(jac), expected, rtol=0, atol=tol)


def test_differs_from_torchjd_on_opposite_collinear_gradients() -> None:
    # g and -2g: only d = 0 has equal projections onto the unit gradients ±g/‖g‖. Our
    # least-squares solution in the cosine frame gives 0; TorchJD's G⁺N1 gives w = (-1, 2),
    # d = -5g, which conflicts with g by 5‖g‖² (documented in docs/aggregators/imtl-g.md).
    jac = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    assert torch.count_nonzero(get_aggregator("imtl-g")(jac)) == 0
    torchjd_w = torchjd_aggregation.IMTLGWeighting()(gramian_of(jac))
    np.testing.assert_allclose(torchjd_w.numpy(), [-1.0, 2.0], rtol=1e-12)


def test_tiny_gradient_is_still_weighted_impartially() -> None:
    # ‖g1‖ = 1e-10, ‖g2‖ = 1: equal projections 1e-10/(1 + 1e-10) on both. A rank cut-off on
    # G itself (TorchJD) drops g1 and returns g2.
    jac = torch.tensor([[1e-10, 0.0], [0.0, 1.0]], dtype=torch.float64)
    d = get_aggregator("imtl-g")(jac)
    np.testing.assert_allclose(_projections(jac, d), [1e-10 / (1 + 1e-10)] * 2, rtol=1e-12)


# -- edge cases -----------------------------------------------------------------------------


def test_one_objective_returns_its_gradient() -> None:
    jac = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(get_aggregator("imtl-g")(jac), jac[0])


@pytest.mark.parametrize("n", [1, 3])
def test_zero_jacobian_gives_zero(n: int) -> None:
    jac = torch.zeros(n, 4, dtype=torch.float64)
    assert torch.count_nonzero(get_aggregator("imtl-g")(jac)) == 0
    np.testing.assert_array_equal(_weights(jac), np.zeros(n))


def test_zero_gradient_gets_zero_weight() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    np.testing.assert_allclose(_weights(jac), [2 / 3, 0.0, 1 / 3], rtol=1e-14)


def test_identical_gradients_split_evenly() -> None:
    jac = torch.tensor([[1.0, 2.0, 3.0]] * 3, dtype=torch.float64)
    np.testing.assert_allclose(_weights(jac), [1 / 3] * 3, rtol=1e-12)
    torch.testing.assert_close(get_aggregator("imtl-g")(jac), jac[0])


def test_opposite_gradients_give_zero() -> None:
    jac = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]], dtype=torch.float64)
    assert torch.count_nonzero(get_aggregator("imtl-g")(jac)) == 0


def test_dependent_gradients_least_squares() -> None:
    # Three unit gradients at 0°, 90°, 45° in the plane: Ĝ is singular; β = Ĝ⁺1 is the
    # least-squares solution of Ĝβ = 1 in the cosine frame (checked with numpy's lstsq).
    c = 1 / SQRT2
    jac = torch.tensor([[1.0, 0.0], [0.0, 1.0], [c, c]], dtype=torch.float64)
    cos = jac.numpy() @ jac.numpy().T
    beta = np.linalg.lstsq(cos, np.ones(3), rcond=None)[0]
    np.testing.assert_allclose(_weights(jac), beta / beta.sum(), rtol=1e-10)


@pytest.mark.parametrize("scale", [1e-10, 1e-5, 1.0, 1e5, 1e10, 1e15])
def test_scales(scale: float) -> None:
    rng = np.random.default_rng(3)
    jac = torch.tensor(rng.standard_normal((4, 6)))
    d = get_aggregator("imtl-g")(jac)
    ds = get_aggregator("imtl-g")(jac * scale)
    assert torch.isfinite(ds).all()
    torch.testing.assert_close(ds, d * scale, rtol=1e-10, atol=0.0)
    np.testing.assert_allclose(_weights(jac * scale), _weights(jac), rtol=1e-10)


def test_float32_jacobian() -> None:
    rng = np.random.default_rng(4)
    j64 = torch.tensor(rng.standard_normal((3, 50)))
    assert_float32_direction(lambda: get_aggregator("imtl-g"), j64.float())


# -- claimed properties ---------------------------------------------------------------------


def _random_jacobians(count: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n, d = int(rng.integers(1, 7)), int(rng.integers(1, 9))
        j = rng.standard_normal((n, d))
        if rng.random() < 0.3:
            j = rng.integers(-2, 3, (n, d)).astype(float)
        out.append(torch.tensor(j * 10.0 ** rng.uniform(-8, 8)))
    return out


def test_claims() -> None:
    agg = get_aggregator("imtl-g")
    assert agg.claims() == {
        "permutation_invariant",
        "scale_equivariant",
        "deterministic",
        "reset_restores",
        "non_differentiable",
    }


def test_claimed_properties_hold_on_random_jacobians() -> None:
    rng = np.random.default_rng(5)
    for jac in _random_jacobians(300, 6):
        agg = get_aggregator("imtl-g")
        d = agg(jac)
        w = agg.weights(gramian_of(jac))
        size = float((w.abs() * jac.norm(dim=1)).sum()) + 1e-300
        perm = torch.tensor(rng.permutation(jac.shape[0]))
        assert float((agg(jac[perm]) - d).abs().max()) <= 1e-9 * size
        a = float(10.0 ** rng.uniform(-3, 3))
        assert float((agg(jac * a) - a * d).abs().max()) <= 1e-9 * a * size
        assert torch.equal(get_aggregator("imtl-g")(jac), d)
        agg.reset()
        assert torch.equal(agg(jac), d)


def test_common_projection_can_be_negative() -> None:
    # Why IMTL-G does not claim non_conflicting: for independent gradients the common projection
    # is 1/1ᵀN⁻¹Ĝ⁻¹1, negative when that sum is. Here every objective gets worse to first order;
    # the paper's closed form and TorchJD give the same direction.
    j = np.array([[-3.0, -1.0, 2.0], [-1.0, 0.0, 0.0], [-3.0, 0.0, -1.0]])
    jac = torch.tensor(j)
    d = get_aggregator("imtl-g")(jac)
    proj = _projections(jac, d)
    np.testing.assert_allclose(proj, np.full(3, proj[0]), rtol=1e-12)
    assert proj[0] < -0.17
    np.testing.assert_allclose(d.numpy(), _paper_weights(j) @ j, rtol=1e-10)


def test_no_graph_through_the_output() -> None:
    jac = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert not get_aggregator("imtl-g")(jac).requires_grad


# -- hyper-parameters and repr --------------------------------------------------------------


def test_repr_and_names() -> None:
    assert repr(get_aggregator("imtl-g")) == "IMTLG()"
    assert type(get_aggregator("IMTL_G")) is type(get_aggregator("imtlg"))


def test_rejects_hyperparameters() -> None:
    with pytest.raises(TypeError, match="accepts: none"):
        get_aggregator("imtl-g", c=0.5)
