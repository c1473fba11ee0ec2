"""IMTL-G's definite solve (:func:`mogradient.solvers.imtl_g.definite_solve_ones`): ``Ĝ⁻¹1``
by Cholesky where the cosine matrix is certified far from singular, the eigendecomposition
elsewhere; checked against ``Ĝ⁻¹1`` in 50-digit arithmetic (mpmath)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from mogradient.solvers.imtl_g import (
    DEFINITE_MARGIN,
    RANK_RTOL,
    _imtl_g_kernel,
    definite_solve_ones,
    unit_gramian,
)
from tests.bounds import U64, gamma

mpmath.mp.dps = 50


def _exact_solve_ones(cos: np.ndarray) -> np.ndarray:
    a = mpmath.matrix(cos.tolist())
    x = mpmath.lu_solve(a, mpmath.matrix([1] * cos.shape[0]))
    return np.array([float(v) for v in x])


def _cosines(k: int, condition: float, rng: np.random.Generator) -> np.ndarray:
    """A cosine matrix (unit diagonal) of k gradients with roughly the given condition."""
    q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    j = q * np.geomspace(1.0, 1.0 / math.sqrt(condition), k) @ rng.normal(size=(k, 3 * k))
    _, _, cos = unit_gramian(j @ j.T)
    return cos


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10, 12])
@pytest.mark.parametrize("condition", [1.0, 1e3, 1e6])
def test_definite_solve_matches_the_exact_inverse(k: int, condition: float) -> None:
    """Cholesky ``Ĝ = LLᵀ`` (backward error ``|ΔĜ| ≤ γ_{3k+1}|L||Lᵀ|``, with ``‖|L||Lᵀ|‖₂ ≤
    k‖Ĝ‖₂``), then ``L⁻¹`` and two triangular products (each ``γ_k`` of their magnitudes): the
    result is within ``2k·γ_{4k+4}·κ₂(Ĝ)`` of ``‖Ĝ⁻¹1‖₂`` (the factor 2 for the explicit
    inverse's second product)."""
    rng = np.random.default_rng(k)
    for _ in range(5):
        cos = _cosines(k, condition, rng)
        lam = np.linalg.eigvalsh(cos)
        if lam[0] < 2 * k * DEFINITE_MARGIN * RANK_RTOL * k * k:  # near the certificate's edge
            continue
        got = definite_solve_ones(cos)
        assert got.shape == (k,)
        exact = _exact_solve_ones(cos)
        kappa = lam[-1] / lam[0]
        tol = 2 * k * gamma(4 * k + 4, U64) * kappa * np.linalg.norm(exact)
        assert np.linalg.norm(got - exact) <= tol


def test_singular_and_nearly_singular_cosines_take_the_eigendecomposition() -> None:
    """Duplicate gradients (a zero eigenvalue) and an eigenvalue
    near the rank cut-off (within ``DEFINITE_MARGIN``) are refused: the empty array."""
    j = np.random.default_rng(0).normal(size=(3, 8))
    j[2] = j[0]
    assert definite_solve_ones(unit_gramian(j @ j.T)[2]).shape == (0,)
    c = 1.0 - 1e-10  # eigenvalues 2 - 1e-10 and 1e-10
    assert definite_solve_ones(np.array([[1.0, c], [c, 1.0]])).shape == (0,)
    c = 1.0 - 1e-6  # 1e-6: certified, solved by Cholesky
    got = definite_solve_ones(np.array([[1.0, c], [c, 1.0]]))
    np.testing.assert_allclose(got, [1 / (1 + c)] * 2, rtol=4 * gamma(20, U64) * 2e6)


def test_certified_cosines_keep_every_eigenvalue() -> None:
    """Where the definite solve runs, the eigendecomposition keeps every eigenvalue (its
    ``Ĝ⁺ = Ĝ⁻¹``): on cosine matrices of k = 2..40 with condition numbers up to 1e12, each one
    the Cholesky certifies has ``λ_min > RANK_RTOL·k·λ_max`` (numpy's eigenvalues, accurate
    to ``k·ε·λ_max``, far below the margin)."""
    rng = np.random.default_rng(5)
    certified = 0
    for k in (2, 5, 10, 40):
        for condition in np.geomspace(1.0, 1e12, 13):
            cos = _cosines(k, float(condition), rng)
            if definite_solve_ones(cos).shape[0]:
                certified += 1
                lam = np.linalg.eigvalsh(cos)
                assert lam[0] > DEFINITE_MARGIN / 2 * RANK_RTOL * k * lam[-1]
    assert certified >= 20


@pytest.mark.parametrize("n", [2, 3, 6])
def test_weights_on_either_side_of_the_certificate(n: int) -> None:
    """Gradients that nearly coincide (cosine 1 − δ) are weighted as the exact ``N⁻¹Ĝ⁻¹1``
    normalised, whichever path solves them, to ``2n·γ_{4n+4}·κ₂(Ĝ)`` relative (as above, the
    normalisation adding a few roundings)."""
    rng = np.random.default_rng(n)
    base = rng.normal(size=(n, 4 * n))
    for delta in (1e-3, 1e-5, 1e-7):
        j = base.copy()
        j[1] = j[0] * 3.0 + delta * rng.normal(size=4 * n)
        g = j @ j.T
        _, norms, cos = unit_gramian(g)
        lam = np.linalg.eigvalsh(cos)
        beta = _exact_solve_ones(cos) / norms
        expected = beta / beta.sum()
        tol = (
            4
            * n
            * gamma(4 * n + 8, U64)
            * (lam[-1] / lam[0])
            * np.abs(beta).sum()
            / abs(beta.sum())
        )
        np.testing.assert_allclose(_imtl_g_kernel(g), expected, rtol=0, atol=tol)
