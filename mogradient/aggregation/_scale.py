"""Powers of two that keep a Jacobian, its Gramian and the weights inside floating-point range.

Multiplying by a power of two is exact (no rounding) while the result stays a normal number, so
a Jacobian ``J`` with entries near 1e±300 is brought to entries in [0.5, 1) before ``J Jᵀ`` is
formed (whose entries would otherwise overflow or underflow float64), and the weights decided
on the scaled Gramian are mapped back in closed form (see
:meth:`~mogradient.aggregators.GramianWeighting.weight_exponent`). Inputs already inside a wide
window are left as they are, so ordinary inputs give bit-for-bit the results they gave before.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

#: Largest gradient entry (in magnitude) left unscaled: 2^±(maxexp/4) of the dtype the
#: products are taken in (2^±256 in float64, 2^±32 in float32), so that the squares and their
#: sums over d columns stay far from overflow and underflow.
WINDOW_FRACTION = 4
#: Largest Gramian diagonal left unscaled: 2^±256 (the solvers divide by it first).
GRAMIAN_WINDOW = 256

X = TypeVar("X", float, np.ndarray, torch.Tensor)


def exponent_into_range(top: float, window: int) -> int:
    """``e`` with ``2^e · top`` in [0.5, 1) when ``top`` (≥ 0) lies outside
    [2^-window, 2^window]; 0 when it lies inside (or is 0, or not finite)."""
    if not (top > 0.0 and math.isfinite(top)):
        return 0
    _, ex = math.frexp(top)  # top = m · 2^ex, m in [0.5, 1)
    if -window < ex <= window:
        return 0
    return -ex


def even_exponent_into_range(top: float, window: int) -> int:
    """Like :func:`exponent_into_range` but even (``2^e · top`` in [0.25, 1)), so that square
    roots of the scaled entries are the exact square roots scaled by ``2^(e/2)``."""
    e = exponent_into_range(top, window)
    return e - (e % 2)


def times_pow2(x: X, n: float) -> X:
    """``x · 2^n`` without forming an out-of-range ``2^n``: the fractional part of ``n`` first
    (one rounding), then integer steps small enough for the dtype of ``x``; the integer steps are
    exact while the intermediate values are normal numbers, and the intermediate values lie
    between ``x`` and the result."""
    if n == 0:
        return x
    whole = math.floor(n)
    frac = n - whole
    if frac:
        x = x * 2.0**frac
    if isinstance(x, torch.Tensor):
        step = _maxexp(x.dtype) // 2
    elif isinstance(x, np.ndarray):
        step = np.finfo(x.dtype).maxexp // 2
    else:
        step = 512
    while whole:
        s = max(-step, min(step, whole))
        x = x * 2.0**s
        whole -= s
    return x


def jacobian_window(work: torch.dtype) -> int:
    """The window 2^±w of the Jacobian's largest entry left unscaled when the products are
    taken in ``work``: w = maxexp/4 (256 in float64, 32 in float32)."""
    return _maxexp(work) // WINDOW_FRACTION


def jacobian_exponent(jacobian: torch.Tensor, work: torch.dtype) -> int:
    """The power of two that brings the Jacobian's largest entry into [0.5, 1), or 0 when it
    is already inside the window of ``work`` (the dtype the products are taken in)."""
    if not jacobian.numel():
        return 0
    low, high = torch.aminmax(jacobian)  # one pass, no temporary
    top = max(-float(low), float(high))
    return exponent_into_range(top, jacobian_window(work))


def _maxexp(dtype: torch.dtype) -> int:
    """The smallest power of two above the dtype's largest number (1024 for float64)."""
    return math.frexp(torch.finfo(dtype).max)[1]


#: Columns per float64 block when a direction is combined from rescaled weights.
_CHUNK = 1 << 20


def combine(
    v: torch.Tensor, jacobian: torch.Tensor, t: float, e: int, *, in_float64: bool = False
) -> torch.Tensor:
    """The direction ``2^t · vᵀJ`` in the Jacobian's dtype.

    ``t = 0`` (scale-invariant weights, or no rescaling): ``vᵀJ`` as it is, in the Jacobian's
    dtype (or, with ``in_float64``, summed in float64 blocks and rounded once). Otherwise
    ``2^(t−e) · vᵀ(2^e J)`` in float64 blocks: ``2^e J`` has entries in range (``e`` from
    :func:`jacobian_exponent`), so neither the weights ``2^t v`` (which may be out of range
    while the direction is not) nor the products overflow or underflow.
    """
    v = v.to(jacobian.device)
    if t == 0 and (not in_float64 or jacobian.dtype == torch.float64):
        return v.to(jacobian.dtype) @ jacobian
    out = torch.empty(jacobian.shape[1], dtype=jacobian.dtype, device=jacobian.device)
    for start in range(0, jacobian.shape[1], _CHUNK):
        block = jacobian[:, start : start + _CHUNK].to(torch.float64)
        if t == 0:
            part = v @ block
        else:
            part = times_pow2(v @ times_pow2(block, e), t - e)
        out[start : start + _CHUNK] = part.to(jacobian.dtype)
    return out
