"""The Gramian ``J Jᵀ`` of the objectives' gradients, formed in range (exact power-of-two
scaling) and in float64 or blocked input precision: what every Gramian weighting decides from.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from mogradient._psd import project_psd, symmetric_error2
from mogradient.aggregation._scale import jacobian_exponent, jacobian_window, times_pow2


def gramian_of(
    jacobian: torch.Tensor,
    chunk_size: int = 1 << 20,
    *,
    precision: Literal["float64", "input"] = "float64",
    block_size: int = 1024,
) -> torch.Tensor:
    """``J Jᵀ`` as a float64 ``[k, k]`` matrix on the Jacobian's device, over column chunks.

    Where the product overflows or underflows, ``J`` is scaled by a power of two (exact) and the
    product scaled back (:func:`scaled_gramian`): any float32 Jacobian, and float64 gradients
    of norm between about 1e-154 and 1e154, give their Gramian; beyond, ``J Jᵀ`` itself is not
    a float64 number and a ``ValueError`` says so (``agg(J)`` still works there: it decides on
    the scaled Gramian).

    ``precision="float64"`` (the default): each chunk of ``chunk_size`` columns is copied to
    float64 and multiplied there; the result is exact to float64 rounding.

    ``precision="input"``: no float64 copy of J. The columns are cut into blocks of
    ``block_size``; each block's k×k product is taken in the Jacobian's dtype (float32 at
    least: bfloat16/float16 blocks are raised to float32) by one batched matmul per chunk,
    and the blocks' products are summed in float64. Each entry then satisfies

        |Ĝᵢⱼ − Gᵢⱼ| ≤ γ_b · Σ_blocks ‖gᵢ⁽ᵇ⁾‖ ‖gⱼ⁽ᵇ⁾‖ ≤ γ_b · ‖gᵢ‖ ‖gⱼ‖,
        γ_b = b·u / (1 − b·u),  u = 2⁻²⁴ (float32), b = block_size,

    (the standard dot-product bound per block, Cauchy–Schwarz across blocks, float64 for the
    sum), i.e. at most about 6.1e-5 · ‖gᵢ‖‖gⱼ‖ for b = 1024 whatever d is, and in practice
    about √b·u ≈ 2e-6 (random rounding). A float32 J itself carries relative errors of order
    u per entry, so the Gramian's own error is within a factor b (worst case) of what the
    Jacobian already had. Where that matters (the min-norm direction ‖Jᵀw‖ is below ~1e-4 ·
    ‖gᵢ‖, i.e. nearly Pareto-stationary with strongly conflicting gradients), use "float64".
    Within that bound the result is projected onto the PSD cone (a singular Gramian of dependent
    objectives rounds to a slightly indefinite one); beyond it, a ``ValueError``
    (:func:`mogradient._psd.project_psd`).
    """
    gram, e = scaled_gramian(jacobian, chunk_size, precision=precision, block_size=block_size)
    if e == 0:
        return gram
    out = times_pow2(gram, -2 * e)
    top = float(gram.diagonal().max())
    if not bool(torch.isfinite(out).all()) or (top > 0 and float(out.diagonal().max()) < _TINY):
        norm = f"1e{(math.log2(top) / 2 - e) * math.log10(2):.0f}"
        raise ValueError(
            f"the Gramian J Jᵀ of this Jacobian is beyond float64's range (its largest gradient "
            f"norm is about {norm}; J Jᵀ is a float64 number for norms between about 2^-511 and "
            "2^511, i.e. 1e-154 to 1e154): call the aggregator on the Jacobian (agg(J) scales "
            "J by a power of two before forming J Jᵀ), or scale the losses by a power of two"
        )
    return out


_TINY = float(torch.finfo(torch.float64).tiny)


def scaled_gramian(
    jacobian: torch.Tensor,
    chunk_size: int = 1 << 20,
    *,
    precision: Literal["float64", "input"] = "float64",
    block_size: int = 1024,
) -> tuple[torch.Tensor, int]:
    """``(G_s, e)`` with ``G_s = (2^e J)(2^e J)ᵀ`` as :func:`gramian_of` forms it: ``e = 0``
    where the unscaled product is finite and its largest diagonal entry is at least 2^-512
    (products in float64) or 2^-64 (in float32), or J's largest entry lies inside 2^±256 or
    2^±32; else ``2^e J`` has its largest entry in [0.5, 1) and the product is formed again.
    The scaling is exact (a power of two), so the Gramian of ``J`` is ``2^(−2e) G_s`` up to the
    product's own rounding; ordinary inputs cost nothing more than the product."""
    if precision not in ("float64", "input"):
        raise ValueError(f"precision must be 'float64' or 'input', got {precision!r}")
    if precision == "float64" or jacobian.dtype == torch.float64:
        work = torch.float64

        def form(e: int) -> torch.Tensor:
            return _gramian_f64(jacobian, chunk_size, e)
    else:
        work = torch.promote_types(jacobian.dtype, torch.float32)

        def form(e: int) -> torch.Tensor:
            return _gramian_blocked(jacobian, chunk_size, block_size, e)

    gram = form(0)
    # In range (finite, largest squared norm ≥ 2^(−2w) where w bounds the unscaled entries):
    # nothing to scale, and the largest entry of J need not be read.
    top = float(gram.diagonal().max())
    if bool(torch.isfinite(gram).all()) and top >= 2.0 ** (-2 * jacobian_window(work)):
        return gram, 0
    e = jacobian_exponent(jacobian, work)
    return (gram, 0) if e == 0 else (form(e), e)


def _gramian_f64(jacobian: torch.Tensor, chunk_size: int, e: int) -> torch.Tensor:
    n, d = jacobian.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=jacobian.device)
    for start in range(0, d, chunk_size):
        block = times_pow2(jacobian[:, start : start + chunk_size].to(torch.float64), e)
        gram += block @ block.T
    return 0.5 * (gram + gram.T)


def _gramian_blocked(
    jacobian: torch.Tensor, chunk_size: int, block_size: int, e: int
) -> torch.Tensor:
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n, d = jacobian.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=jacobian.device)
    work = torch.promote_types(jacobian.dtype, torch.float32)
    chunk = max(block_size, chunk_size // block_size * block_size)
    for start in range(0, d, chunk):
        part = jacobian[:, start : start + chunk]
        if part.dtype != work:
            part = part.to(work)
        part = times_pow2(part, e)
        width = part.shape[1]
        full = width // block_size * block_size
        if full:
            # [k, nb, b] -> [nb, k, b] as a strided view (no copy): one batched matmul.
            blocks = part[:, :full].unflatten(1, (full // block_size, block_size)).transpose(0, 1)
            gram += torch.bmm(blocks, blocks.transpose(1, 2)).sum(0, dtype=torch.float64)
        if full < width:
            tail = part[:, full:]
            gram += (tail @ tail.T).to(torch.float64)
    gram = 0.5 * (gram + gram.T)
    return project_psd(gram, symmetric_error2(gram, block_size, work).sqrt())
