"""Gramians formed in float32: the rounding bound of how they were computed, and the projection
back onto the PSD cone within that bound.

A Gramian ``G = J Jᵀ`` is positive semi-definite, but its float32 block products are not: with
dependent objectives (duplicated or rescaled rewards, more objectives than samples) ``G`` is
singular, and rounding of order ``u·‖gᵢ‖‖gⱼ‖`` per entry makes it slightly indefinite, which
the solvers' float64 validation refuses. Every producer of such a Gramian (``gramian_of(...,
precision="input")``, the layer recorder) describes its rounding as a vector ``e`` with

    |Ĝᵢⱼ − Gᵢⱼ| ≤ eᵢ eⱼ   for some PSD ``G`` (the Gramian of the Jacobian actually computed),

and :func:`project_psd` accepts ``Ĝ`` exactly when that explains its indefiniteness, then
projects it onto the PSD cone. A block product of ``n`` columns in a dtype with unit roundoff
``u`` errs by at most ``γₙ‖aᵢ‖‖bⱼ‖``, ``γₙ = n·u/(1 − n·u)`` (the standard dot-product bound);
summed over blocks, ``Σ_b γ_b sᵢ⁽ᵇ⁾sⱼ⁽ᵇ⁾ ≤ √(Σ_b γ_b sᵢ⁽ᵇ⁾²) √(Σ_b γ_b sⱼ⁽ᵇ⁾²)`` (Cauchy–Schwarz),
so ``e² = Σ_b γ_b s⁽ᵇ⁾²`` accumulates block by block.
"""

from __future__ import annotations

import torch

__all__ = ["BLOCK_SIZE", "blocked_gram", "project_psd", "rounding_gamma", "symmetric_error2"]

#: Columns per float32 block product; blocks are summed in float64. Keeps ``γ_b ≤ 6.1e-5``
#: whatever the number of columns (a single float32 product of n columns has ``γₙ``, which
#: passes 1 at n = 2²⁴).
BLOCK_SIZE = 1024
_EPS64 = float(torch.finfo(torch.float64).eps)


def rounding_gamma(n: int, dtype: torch.dtype) -> float:
    """``γₙ = n·u / (1 − n·u)`` with ``u`` the unit roundoff of ``dtype`` (``inf`` when
    ``n·u ≥ 1``): the relative error bound of a dot product of ``n`` terms in that dtype."""
    nu = max(n, 1) * float(torch.finfo(dtype).eps) / 2
    return nu / (1 - nu) if nu < 1 else float("inf")


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype block products are taken in: the input's, raised to float32 at least."""
    return torch.promote_types(dtype, torch.float32)


def blocked_gram(
    a: torch.Tensor, b: torch.Tensor | None = None, block_size: int = BLOCK_SIZE
) -> torch.Tensor:
    """``a bᵀ`` (``b = a`` by default) for ``[k, n]`` rows, as a float64 ``[k, k]``: products of
    blocks of at most ``block_size`` columns in :func:`work_dtype` (one batched matmul over a
    strided view, no copy), summed in float64. Each entry errs by at most
    ``γ_{min(n, block_size)} ‖aᵢ‖‖bⱼ‖`` (plus float64 rounding)."""
    k = a.shape[0]
    a = a.reshape(k, -1)
    b = a if b is None else b.reshape(b.shape[0], -1)
    work = work_dtype(a.dtype)
    if a.dtype != work:
        a = a.to(work)
    if b.dtype != work:
        b = b.to(work)
    n = a.shape[1]
    full = n // block_size * block_size
    gram = torch.zeros(k, b.shape[0], dtype=torch.float64, device=a.device)
    if full:
        blocks_a = a[:, :full].unflatten(1, (full // block_size, block_size)).transpose(0, 1)
        blocks_b = b[:, :full].unflatten(1, (full // block_size, block_size)).transpose(0, 1)
        gram += torch.bmm(blocks_a, blocks_b.transpose(1, 2)).sum(0, dtype=torch.float64)
    if full < n:
        gram += (a[:, full:] @ b[:, full:].T).to(torch.float64)
    return gram


def symmetric_error2(gram: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """``e²`` ``[k]`` of a symmetric block product ``Ĝ = a aᵀ`` (:func:`blocked_gram` with blocks
    of at most ``n`` columns of ``dtype``): ``sᵢ = ‖aᵢ‖``, read off the computed diagonal, which
    a sum of squares underestimates by at most a factor ``1 − γₙ``."""
    gamma = rounding_gamma(n, work_dtype(dtype))
    return gram.diagonal().clamp_min(0) * (gamma / (1 - gamma))


def project_psd(gram: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """The symmetric ``[k, k]`` float64 ``gram`` projected onto the PSD cone, if its rounding
    bound ``error`` ``[k]`` (``|Ĝᵢⱼ − Gᵢⱼ| ≤ eᵢeⱼ``) explains its indefiniteness; else a
    ``ValueError``. Unchanged when it already is PSD.

    Works on the unit-diagonal ``C = S Ĝ S``, ``S = diag(Ĝᵢᵢ)^(-1/2)``, so that objectives of
    very different gradient norms keep their relative accuracy: the true ``S G S`` is PSD and
    ``‖S(Ĝ − G)S‖₂ ≤ ‖(Se)(Se)ᵀ‖₂ = ‖Se‖²``, so ``λ_min(C) ≥ −‖Se‖²`` (plus float64 rounding of
    the eigenvalues, ``16·k²·eps``). Within that, the negative eigenvalues of ``C`` are set to 0
    (the Frobenius projection onto the cone, which ``S G S`` lies in: the result is no farther
    from it than ``C`` was) and the scaling undone.
    """
    device = gram.device
    g = gram.detach().to("cpu", torch.float64)  # k×k: a CPU eigh beats a device round trip
    diag = g.diagonal().clamp_min(0)
    scale = diag.max()
    if not bool(torch.isfinite(g).all()) or float(scale) == 0.0:
        return gram  # the solvers' validation names a non-finite entry
    inv = diag.clamp_min(float(scale) * 1e-30).rsqrt()
    unit = g * inv[:, None] * inv[None, :]
    lam, vec = torch.linalg.eigh(unit)
    smallest = float(lam[0])
    if smallest >= 0:
        return gram
    k = g.shape[0]
    allowed = float(((error.to(g) * inv) ** 2).sum()) + 16 * k * k * _EPS64
    if -smallest > allowed:
        raise ValueError(
            "the Gramian is not positive semi-definite beyond the rounding of how it was "
            f"computed: its unit-diagonal form has the eigenvalue {smallest:.3g}, and the "
            f"rounding bound of its block products explains at most -{allowed:.3g}; the "
            "per-objective gradients are not those of one Jacobian (a model that changes "
            "between objectives, a non-deterministic layer?) or are corrupted"
        )
    projected = (vec * lam.clamp_min(0)) @ vec.T
    out = projected / (inv[:, None] * inv[None, :])
    return (0.5 * (out + out.T)).to(device)
