"""Householder + QL eigendecomposition (:mod:`mogradient.solvers.tridiagonal`) against
LAPACK's (numpy), and Aligned-MTL's choice between it and Jacobi rotations."""

from __future__ import annotations

import numpy as np
import pytest

from mogradient.solvers.aligned_mtl import gramian_eigh
from mogradient.solvers.imtl_g import GRADED_RATIO, jacobi_eigh
from mogradient.solvers.tridiagonal import tridiagonal_eigh
from tests.bounds import U64, gamma


def _gramians(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = [np.zeros((n, n)), 3.0 * np.eye(n)]
    for rank in sorted({1, max(1, n // 2), n}):
        j = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, 30))
        out.append(j @ j.T * 10.0 ** rng.uniform(-5, 5))
    j = rng.normal(size=(n, 2000))
    out.append(j @ j.T)
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 12])
def test_matches_lapack_to_backward_stable_accuracy(n: int) -> None:
    """Householder reduction and QL are backward stable (Wilkinson): the eigenpairs are exact
    for ``G + ΔG`` with ``‖ΔG‖₂ ≤ γ_{32n}·‖G‖₂`` (a generous constant for the O(n) rotations per
    step and the n steps). So each eigenvalue lies within that of LAPACK's (Weyl: both are
    within it of the exact ones), residuals ``‖Gv − λv‖`` stay below it, the vectors are
    orthonormal to ``γ_{32n}``, and the eigenvalues come ascending."""
    rng = np.random.default_rng(n)
    for g in _gramians(n, rng):
        lam, vec, converged = tridiagonal_eigh(g)
        assert converged
        norm = float(np.linalg.norm(g, 2))
        bound = gamma(32 * n, U64) * norm
        assert np.all(np.diff(lam) >= 0.0)
        assert np.max(np.abs(lam - np.linalg.eigvalsh(g))) <= 2 * bound
        assert np.linalg.norm(g @ vec - vec * lam, 2) <= bound
        assert np.max(np.abs(vec.T @ vec - np.eye(n))) <= gamma(32 * n, U64)


def test_the_symmetric_part_is_decomposed() -> None:
    """An asymmetry within the validation's tolerance is averaged out, as ``eigh_psd`` does."""
    g = np.array([[2.0, 1.0 + 1e-12], [1.0 - 1e-12, 3.0]])
    lam, _, _ = tridiagonal_eigh(g)
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(0.5 * (g + g.T)), rtol=4 * U64)


def test_graded_gramians_keep_the_jacobi_rotations() -> None:
    """Squared norms spanning more than ``GRADED_RATIO``: the small eigenvalue is exactly
    Jacobi's (accurate relative to itself), where QL would be accurate only to ε·λ_max."""
    j = np.random.default_rng(0).normal(size=(3, 10)) * np.array([[1e-4], [1.0], [1e2]])
    g = j @ j.T
    assert g.diagonal().max() > GRADED_RATIO * g.diagonal().min()
    lam, vec = gramian_eigh(g)
    ref_lam, ref_vec = jacobi_eigh(g)
    np.testing.assert_array_equal(lam, ref_lam)
    np.testing.assert_array_equal(vec, ref_vec)
    j = np.random.default_rng(0).normal(size=(3, 10))
    g = j @ j.T
    np.testing.assert_array_equal(gramian_eigh(g)[0], tridiagonal_eigh(g)[0])
