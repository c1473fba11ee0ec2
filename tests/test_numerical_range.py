"""Gradients and Gramians at the ends of floating-point range: every Gramian method of the
registry gives the direction its homogeneity predicts, from 2^±996 (about 1e±300) in float64
and 2^±100 (about 1e±30) in float32, or a clear error where a result is not a number.

A method's homogeneity is a fact on its class, :meth:`GramianWeighting.weight_exponent` ``p``
(``w(κG) = κ^p w(G)``, so ``A(aJ) = a^(2p+1) A(J)``); it is checked here against the method's
own solver at moderate scales, independently of the rescaling that uses it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mogradient
from mogradient.aggregation.cross_gramian import CrossGramianWeighting
from mogradient.aggregation.inputs import check_gramian
from mogradient.aggregators import GramianWeighting, gramian_of, registered
from mogradient.aggregators.fairgrad import FairGrad
from mogradient.aggregators.mgda import MGDA

#: Cross-Gramian methods (MoDo, SDMGrad) decide at the matrix's own scale, with no
#: homogeneity to rescale by (``mogradient.aggregation.cross_gramian``); their range is tested
#: in ``test_cross_gramian_methods_decide_at_the_matrix_own_scale``.
GRAMIAN_METHODS = sorted(
    name
    for name, cls in registered().items()
    if issubclass(cls, GramianWeighting) and not issubclass(cls, CrossGramianWeighting)
)
CROSS_GRAMIAN_METHODS = sorted(
    name for name, cls in registered().items() if issubclass(cls, CrossGramianWeighting)
)


def _cls(name: str) -> type[GramianWeighting]:
    cls = registered()[name]
    assert issubclass(cls, GramianWeighting)
    return cls


LOSSES = torch.tensor([0.7, 1.3, 2.1], dtype=torch.float64)


def _jacobian(dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A 3×6 Jacobian of sixteenths (exact in float32 and float64) whose largest entry is 15/16,
    so at scale 1 nothing is rescaled, and every non-zero entry times 2^±996 (float64) or
    2^±100 (float32) is still a normal number: ``a·J`` is exact."""
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randint(-15, 16, (3, 6), generator=gen).to(dtype) / 16
    jac[0, 0] = 15 / 16
    return jac


def _call(agg: GramianWeighting, jac: torch.Tensor) -> torch.Tensor:
    losses = LOSSES if agg.uses_loss_values else None
    return agg(jac, losses)


def _raw(agg: GramianWeighting, gram: np.ndarray) -> np.ndarray:
    """The method's own solve on a Gramian, with no rescaling and no norm cap."""
    g = check_gramian(gram)
    if agg.uses_loss_values:
        return agg._solve_with_losses(g, LOSSES.numpy())
    return agg._solve(g)


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
@pytest.mark.parametrize("log4", [-3, 3])
def test_weight_exponent_is_the_solvers_homogeneity(name: str, log4: int) -> None:
    """``w(κG) = κ^p w(G)`` for the solver itself, κ = 4^±3 (inside the range where nothing is
    rescaled). Bound: the solvers are accurate to a few hundred ulps on this Gramian (condition
    number below 1e3, every gradient non-zero); 1e-10 relative leaves a margin of 1e3."""
    jac = _jacobian(torch.float64).numpy()
    gram = jac @ jac.T
    agg = _cls(name)()
    w1 = _raw(agg, gram)
    agg = _cls(name)()  # fresh: the same random stream and state
    wk = _raw(agg, gram * 4.0**log4)
    expected = w1 * (4.0**log4) ** agg.weight_exponent()
    np.testing.assert_allclose(wk, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


def _expected_bound(w: np.ndarray, jac: torch.Tensor) -> np.ndarray:
    """Per coordinate: the two directions use the same weights on the same Gramian (the scaled
    J is J itself, exactly), so they differ only in the rounding of ``Σ wᵢ gᵢ`` — in the
    Jacobian's dtype at scale 1, in float64 rounded once at the other —, at most
    ``γ_(n+1)·Σ|wᵢ||Jᵢⱼ|`` with ``γ_m ≈ m·u`` (Higham, Thm 3.5), plus one rounding of a
    non-integer power of two: bounded here by ``4(n+2)·eps·Σ|wᵢ||Jᵢⱼ|`` (margin 8), plus the
    subnormal spacing where ``a^h·d`` underflows gradually."""
    eps = torch.finfo(jac.dtype).eps
    n = jac.shape[0]
    return 4 * (n + 2) * eps * (np.abs(w) @ np.abs(jac.double().numpy()))


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
@pytest.mark.parametrize(
    ("dtype", "log2_scale"),
    [(torch.float64, -996), (torch.float64, 996), (torch.float32, -100), (torch.float32, 100)],
)
def test_direction_at_the_ends_of_the_range(name: str, dtype: torch.dtype, log2_scale: int) -> None:
    """``A(aJ) = a^h A(J)``, ``h = 2p + 1``, at a = 2^±996 (float64) and 2^±100 (float32).
    Default hyper-parameters: a norm cap then comes with h = 0 (Nash-MTL; FairGrad at α = 1),
    where capping commutes with scaling. Bound: :func:`_expected_bound`."""
    cls = _cls(name)
    jac = _jacobian(dtype)
    d1 = _call(cls(), jac)
    agg = cls()
    h = 2 * agg.weight_exponent() + 1
    assert agg.norm_cap() is None or h == 0, "the expected value below assumes this"
    a = 2.0**log2_scale
    da = _call(agg, jac * a)
    assert da.dtype == dtype and bool(torch.isfinite(da).all())
    back = da.double() * 2.0 ** (-h * log2_scale)  # exact for integer h·log2_scale
    w = cls().weights(gramian_of(jac), LOSSES if cls.uses_loss_values else None).numpy()
    tiny = float(torch.finfo(dtype).smallest_normal) * torch.finfo(dtype).eps
    bound = _expected_bound(w, jac) + tiny * 2.0 ** (-h * log2_scale) + 1e-300
    err = (back - d1.double()).abs().numpy()
    assert (err <= bound).all(), f"{name}: error {err.max():.3g}, bound {bound.min():.3g}"


@pytest.mark.parametrize("name", GRAMIAN_METHODS)
@pytest.mark.parametrize("log2_scale", [-996, 996, -1016, 1016])
def test_weights_of_a_gramian_near_the_limits(name: str, log2_scale: int) -> None:
    """``weights(κG) = κ^p weights(G)`` for a user's Gramian with entries near 1e±300 and
    1e±306 (κ = 2^±996, 2^±1016). ``G`` has its largest diagonal entry in [1/4, 1), so the
    scaled-back Gramian the solver sees is G itself and the weights agree to the rounding of
    one non-integer power of two: 4 eps relative (margin 2)."""
    jac = _jacobian(torch.float64).numpy()
    gram = jac @ jac.T
    gram = gram / 2.0 ** (2 * math.ceil(math.log2(np.diagonal(gram).max()) / 2))
    assert 0.25 <= np.diagonal(gram).max() < 1
    cls = _cls(name)
    losses = LOSSES.numpy() if cls.uses_loss_values else None
    w1 = cls().weights(gram, losses)
    agg = cls()
    assert agg.norm_cap() is None or agg.weight_exponent() == -0.5
    wk = agg.weights(gram * 2.0**log2_scale, losses)
    expected = w1 * 2.0 ** (log2_scale * agg.weight_exponent())
    np.testing.assert_allclose(wk, expected, rtol=4 * np.finfo(np.float64).eps, atol=0)


@pytest.mark.parametrize("log2_scale", [-996, 996])
@pytest.mark.parametrize("max_norm", [None, 1.0])
def test_fairgrad_alpha_2_at_the_ends_of_the_range(log2_scale: int, max_norm: float | None) -> None:
    """FairGrad with α = 2 is not scale-invariant: ``A(aJ) = a^(−1/3) A(J)`` uncapped; with a
    cap of 1 the direction at 2^-996 (norm ~2^332) is the unit vector along it, at 2^996 (norm
    ~2^-332) the uncapped one. Checked against the paper's equation ``(Gw)ᵢ = wᵢ^(−1/α)`` at
    scale 1 (float64, residual 1e-12 relative: the solver's stated machine-precision accuracy
    with a margin) and the bound of :func:`_expected_bound` for the scaling."""
    jac = _jacobian(torch.float64)
    free = FairGrad(alpha=2.0, max_norm=None)
    w = free.weights(gramian_of(jac)).numpy()
    gram = gramian_of(jac).numpy()
    np.testing.assert_allclose(gram @ w, w ** (-0.5), rtol=1e-12)
    d1 = w @ jac.numpy()
    expected = d1 * 2.0 ** (-log2_scale / 3)
    if max_norm is not None and np.linalg.norm(expected) > max_norm:
        expected = expected / np.linalg.norm(expected) * max_norm
    da = FairGrad(alpha=2.0, max_norm=max_norm)(jac * 2.0**log2_scale).numpy()
    bound = _expected_bound(w, jac) * np.linalg.norm(expected) / np.linalg.norm(d1)
    assert (np.abs(da - expected) <= bound + 1e-300).all()


@pytest.mark.parametrize("log2_scale", [-600, 600])
def test_gramian_of_refuses_a_gramian_beyond_float64(log2_scale: int) -> None:
    """Gradients of norm 2^±600: ``J Jᵀ`` has no float64 value; the error says so (and what to
    do) instead of blaming a non-finite gradient or returning zeros."""
    jac = _jacobian(torch.float64) * 2.0**log2_scale
    with pytest.raises(ValueError, match=r"beyond float64's range.*agg\(J\)"):
        gramian_of(jac)
    x = torch.ones(6, dtype=torch.float64, requires_grad=True)
    losses = [(row * x).sum() for row in jac]
    with pytest.raises(ValueError, match="beyond float64's range"):
        mogradient.backward(losses, [x], aggregator="mgda")


def test_an_infinite_gramian_entry_names_overflow() -> None:
    """A Gramian formed outside the library (e.g. per layer) that overflowed: the message names
    overflow as a cause, not only a non-finite gradient."""
    gram = np.array([[np.inf, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="overflowed float64"):
        MGDA().weights(gram)


@pytest.mark.parametrize("log2_scale", [-100, 100])
def test_backward_float32_at_the_ends_of_the_range(log2_scale: int) -> None:
    """``mogradient.backward`` with float32 gradients of 2^±100: the Gramian is formed in
    float32 blocks, which overflow (2^200) or underflow (2^-200) unless J is rescaled. MGDA is
    scale-equivariant, so the gradient is 2^±100 times the one at scale 1; the weights are the
    same (same Gramian after an exact rescaling): bound 4(n+2)·eps·Σ|wᵢ||Jᵢⱼ|."""
    jac = _jacobian(torch.float32)
    grads = []
    for a in (1.0, 2.0**log2_scale):
        x = torch.ones(6, dtype=torch.float32, requires_grad=True)
        losses = [(row * a * x).sum() for row in jac]
        w = mogradient.backward(losses, [x], aggregator="mgda")
        assert w is not None
        assert x.grad is not None
        grads.append(x.grad.double() / a)
    w1 = MGDA().weights(gramian_of(jac)).numpy()
    bound = torch.from_numpy(_expected_bound(w1, jac))
    assert ((grads[1] - grads[0]).abs() <= bound).all()


def test_weights_beyond_float64_are_refused() -> None:
    """FairGrad (α = 1000, no cap) on a Gramian of subnormal entries 2^-1060: its weights are
    about 2^1059, beyond float64 (the largest number is below 2^1024); ``weights`` says so and
    names the way out. Capped, the same Gramian gives finite weights of a unit direction."""
    gram = np.diag([2.0**-1060, 2.0**-1061])
    with pytest.raises(ValueError, match=r"beyond float64's range.*agg\(J\)"):
        FairGrad(alpha=1000.0, max_norm=None).weights(gram)
    w = FairGrad(alpha=1000.0).weights(gram)
    assert np.isfinite(w).all()
    ws = w * 2.0**-530  # ‖Σ wᵢgᵢ‖² = wsᵀ(2^1060 G)ws, every factor in range (exact scalings)
    norm2 = float(ws @ (gram * 2.0**530 * 2.0**530) @ ws)
    assert abs(norm2 - 1.0) <= 1e-12


@pytest.mark.parametrize("name", CROSS_GRAMIAN_METHODS)
def test_cross_gramian_methods_decide_at_the_matrix_own_scale(name: str) -> None:
    """No rescaling: gradients of 2^-600 give a matrix that underflows to 0, whose weights are
    those of the zero matrix (uniform here: the exact weights differ from them by γ·‖A‖ ~
    2^-1200, below float64); gradients of 2^600 give no float64 matrix, and the error says so
    (naming the fix) instead of returning weights decided on a rescaled one. Bound of the
    direction: :func:`_expected_bound`."""
    cls = registered()[name]
    jac = _jacobian(torch.float64)
    small = jac * 2.0**-600
    w = cls().weights(np.zeros((3, 3)))
    err = np.abs(cls()(small).numpy() - w @ small.numpy())
    assert (err <= _expected_bound(w, small)).all()
    with pytest.raises(ValueError, match="non-finite entry.*scale them down"):
        cls()(jac * 2.0**600)
