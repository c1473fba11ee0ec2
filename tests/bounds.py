"""Error bounds the tests derive their tolerances from (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., §3.1 and §3.5).

A tolerance in a test is one of these bounds (times a stated margin), never a value observed
on one machine: a dot product of length n in precision u is off by at most γₙ·Σ|xᵢ||yᵢ|.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: Unit roundoff of float32 and float64 (round to nearest).
U32 = 2.0**-24
U64 = 2.0**-53


def gamma(n: int, u: float) -> float:
    """γₙ = n·u / (1 − n·u): the relative error bound of n rounded operations."""
    if n * u >= 1:
        raise ValueError(f"gamma({n}, {u}) is undefined: n·u ≥ 1")
    return n * u / (1 - n * u)


def min_norm_gap(g: np.ndarray, w: np.ndarray) -> float:
    """Frank–Wolfe gap of ``w`` for min wᵀGw on the simplex: 2(wᵀGw − minᵢ(Gw)ᵢ).

    For convex f, f(w) − f* ≤ ∇f(w)ᵀ(w − s) for s the best vertex, so this bounds the
    suboptimality of ``w`` from above; it is zero exactly at the KKT point."""
    gw = g @ w
    return float(2.0 * (w @ gw - gw.min()))


def matvec_bound(w: torch.Tensor, jac: torch.Tensor, roundings: int = 2) -> torch.Tensor:
    """Entrywise bound on |fl(wᵀJ) − wᵀJ| for ``wᵀJ`` taken in ``jac``'s dtype with float64
    weights rounded to it: γ_{k+2}·(|w|ᵀ|J|) (k products and sums, the rounding of w and of the
    result). ``roundings`` counts the roundings per term beyond the sum (2 here; more where
    each term wᵢJᵢⱼ is itself the end of a chain rule)."""
    u = U32 if jac.dtype == torch.float32 else U64
    k = jac.shape[0]
    w64, j64 = w.double(), jac.double()
    return gamma(k + roundings, u) * (w64.abs() @ j64.abs())


#: Roundings per term of a loss weighting's gradient by autograd: the loss's own gradient (a
#: subtraction, a product, a scale: 3), the weight (at most 20 operations, exp/log included,
#: whose libm results are within 4 ulps), the weight times the gradient, the cast.
CHAIN_ROUNDINGS = 32


def assert_weighted_gradient(
    got: torch.Tensor, expected: torch.Tensor, w: torch.Tensor | np.ndarray, jac: torch.Tensor
) -> None:
    """Two evaluations of Σᵢ wᵢ∇Lᵢ (backward through ``scalarize`` and ``w @ J``) agree to the
    sum of their rounding bounds, 2·γ_{k+CHAIN_ROUNDINGS}·|w|ᵀ|J|: relative to the terms, not to
    the (possibly cancelling) sum, so the comparison holds on every machine."""
    w_t = torch.as_tensor(w, dtype=torch.float64)
    bound = 2 * matvec_bound(w_t, jac, CHAIN_ROUNDINGS)
    err = (got.double() - expected.double()).abs()
    assert bool((err <= bound).all()), float((err / bound).max())


def assert_float32_direction(
    make: Callable[[], Any], j32: torch.Tensor, losses: torch.Tensor | None = None
) -> None:
    """A Gramian method on a float32 Jacobian returns wᵀJ in float32 with w its float64 weights
    for the same (exactly representable) Jacobian: |d₃₂ − wᵀJ| ≤ ``matvec_bound(w, J)``.

    The Gramian of a float32 J is formed in float64 (exact to float64 rounding), so w is the
    float64 answer for that J; only the product is float32. Comparing with the method on a
    float64 Jacobian that rounds to J instead would measure the method's conditioning, for
    which there is no bound to state."""
    d32 = make()(j32) if losses is None else make()(j32, losses=losses)
    assert d32.dtype == torch.float32 and bool(torch.isfinite(d32).all())
    from mogradient.aggregators import gramian_of  # what the method forms from J

    j64 = j32.double()
    gram = gramian_of(j64)
    w = make().weights(gram) if losses is None else make().weights(gram, losses=losses)
    w = torch.as_tensor(w, dtype=torch.float64)
    err = (d32.double() - w @ j64).abs()
    assert bool((err <= matvec_bound(w, j32)).all()), float((err / matvec_bound(w, j32)).max())


def qp_weight_tolerance(g: np.ndarray, relative_gramian_error: float = 0.0) -> float:
    """Bound on max|w − w'| / max(1, max|w|) for the weights of one strictly convex QP over G
    (UPGrad's and DualProj's dual-cone projections) from two solvers, or from two Gramians
    that differ by ``relative_gramian_error``·‖G‖₂.

    The solution of a strictly convex QP is Lipschitz in its data with constant κ(G) (on the
    active set it is a linear solve), and each backward-stable solve has a backward error of at
    most 4n·u (a Cholesky or QR factorisation of the active block, γ_{3n+1}, with a margin);
    the two solves and the Gramians' difference add, and a factor 2 covers the active set's
    right-hand side."""
    n = g.shape[0]
    return 2 * float(np.linalg.cond(g)) * (2 * 4 * n * U64 + relative_gramian_error)


def spectral_condition(g: np.ndarray | torch.Tensor) -> float:
    """κ₊(G) = λ_max / λ_min over the eigenvalues of G above its numerical rank threshold
    (16n·u·λ_max): the condition number of the pseudo-inverse and eigen-decomposition
    based methods (IMTL-G, Aligned-MTL, ConFIG) on the range of G."""
    a = g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else np.asarray(g, dtype=float)
    lam = np.linalg.eigvalsh(a)
    top = float(lam.max(initial=0.0))
    if top <= 0.0:
        return 1.0
    kept = lam[lam > 16 * a.shape[0] * U64 * top]
    return top / float(kept.min())


def spectral_tolerance(g: np.ndarray | torch.Tensor) -> float:
    """Relative tolerance (to the result's largest entry) between two float64 evaluations of a
    smooth function of G's eigen-decomposition or pseudo-inverse on its range: each is
    backward stable with error γ_{64n + 512}·‖G‖ (LAPACK's symmetric eigensolvers and SVD: a
    modest multiple of n·u; 512 for the method's own scalar work after the factorisation:
    square roots, scale modes, normalisation), so they differ by at most κ₊(G) times the sum
    of the two."""
    n = g.shape[0]
    return 2 * gamma(64 * n + 512, U64) * spectral_condition(g)


def min_norm_tolerance(g: np.ndarray) -> float:
    """τ = 4·γ_{16n}·max Gᵢᵢ: the KKT residual and Frank–Wolfe gap a backward-stable min-norm
    solve may leave (an exact solve for G + ΔG with |ΔG| ≤ γ_{16n}·max Gᵢᵢ: Cholesky's γ_{3n+1}
    with a margin, plus the float64 evaluation of (Gc)ᵢ and cᵀGc, each ≤ γₙ·max Gᵢᵢ on the
    simplex). Two such solves' objectives differ by at most 2τ."""
    n = g.shape[0]
    return 4 * gamma(16 * n, U64) * float(np.max(np.diag(g)))


def pcd_weight_tolerance(g: np.ndarray, w: np.ndarray) -> float:
    """Bound on max|w − w'| / max(1, max|w|) for PCD's weights from two solvers on the same
    normalised Gramian ``g`` (``w``: the multipliers ``[1, μ]`` of one of them): the dual is a
    strictly convex QP on the secondaries' block (independent secondaries), so
    :func:`qp_weight_tolerance` bounds μ; the rescaling by ‖g₁‖/‖d̃‖ (a quotient of two
    quadratic forms in w, each within 2·(1 + Σμ)·max|Δμ| relative) at most triples it."""
    if g.shape[0] == 1:
        return 4 * U64
    return 3 * (1 + float(np.abs(w[1:]).sum())) * qp_weight_tolerance(g[1:, 1:])


def pcd_kkt_tolerance(gt: np.ndarray, mu: np.ndarray) -> float:
    """Residual of PCD's KKT conditions that a backward-stable solve leaves, checked on the
    normalised Jacobian ``gt`` [m, d] with the multipliers ``mu``: an exact solve for a Gramian
    perturbed by γ_{16m}·max Gᵢᵢ (as in :func:`min_norm_tolerance`) moves each constraint value
    g̃ⱼ·d̃ by at most that times (1 + Σμ), and forming d̃ and the products in float64 adds
    γ_{m+d} of the same terms."""
    m, d = gt.shape
    top = float((gt**2).sum(axis=1).max())
    return 4 * (gamma(16 * m, U64) + gamma(m + d, U64)) * (1 + float(np.abs(mu).sum())) * top


def pcd_direction_tolerance(j: np.ndarray, w: np.ndarray, mu: np.ndarray) -> float:
    """Bound on ‖d − d'‖ for two backward-stable PCD solves with final weights ``w`` on the
    Jacobian ``j`` (``mu``: the normalised multipliers). d = ‖g₁‖·d̃/‖d̃‖; each solve's ‖d̃‖²
    is off by the KKT residual's γ·(1 + Σμ)·(Σ|w̃ᵢ|‖g̃ᵢ‖)² (:func:`pcd_kkt_tolerance`), a
    relative error γ·(1 + Σμ)·M²/‖g₁‖² with M = Σ|wᵢ|‖gᵢ‖ (the same ratio in either frame);
    forming Σwᵢgᵢ adds γ·M. Both solves together: twice the sum."""
    m, d = j.shape
    g = gamma(16 * m, U64) + gamma(m + d, U64)
    big_m = float(np.abs(w) @ np.linalg.norm(j, axis=1))
    norm = float(np.linalg.norm(j[0]))
    return 8 * g * (1 + float(np.abs(mu).sum())) * big_m * (1 + big_m / norm)
