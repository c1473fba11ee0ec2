"""Jacobian constructions with a known geometry, from a numpy random generator (no hypothesis).

Every construction works in an ``r``-dimensional coefficient space: it builds ``A [n, r]`` and
returns ``J = A B`` where ``B [r, d]`` has orthonormal rows (``B Bᵀ = I``), so inner products,
conflicts and convex combinations of the rows of ``A`` carry over to ``J`` unchanged. In the
``"integer"`` style ``A`` holds small integers and ``B`` is ``r`` distinct signed coordinate
vectors, so ``J`` is an integer matrix and every construction is exact (exact ties, exact zeros,
exactly stationary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

#: The geometric constructions of :func:`random_jacobian` and the ``jacobians`` strategy.
Kind = Literal[
    "generic",  # no structure imposed (low rank, degenerate rows, ties are still drawn)
    "conflicting",  # some pair of gradients has gᵢ·gⱼ < 0
    "pareto_stationary",  # 0 is in the convex hull of the gradients (min-norm point 0)
    "strongly_stationary",  # 0 = Σ cᵢ gᵢ with every cᵢ > 0 (0 in the relative interior)
    "non_stationary",  # a common ascent direction u exists: gᵢ·u > 0 for every i
]
KINDS: tuple[Kind, ...] = get_args(Kind)

#: How entries are drawn: Gaussian (rank exact almost surely) or small integers (exact ties).
Style = Literal["gaussian", "integer"]
STYLES: tuple[Style, ...] = get_args(Style)

#: Rows derived from other rows: copies, positive multiples, negated multiples, zero rows.
Derived = Literal["copy", "multiple", "negated", "zero"]

# Which derived rows keep each construction's guarantee (zero rows and negated rows put 0 in
# the convex hull, which a non-stationary Jacobian must not have).
_ALLOWED_DERIVED: dict[str, tuple[Derived, ...]] = {
    "generic": ("copy", "multiple", "negated", "zero"),
    "conflicting": ("copy", "multiple", "negated", "zero"),
    "pareto_stationary": ("copy", "multiple", "negated", "zero"),
    "strongly_stationary": ("copy", "multiple", "negated", "zero"),
    "non_stationary": ("copy", "multiple"),
}


def min_objectives(kind: str) -> int:
    """The fewest rows a construction needs (conflicting: a pair)."""
    return 2 if kind == "conflicting" else 1


def rank_range(kind: str, n: int, d: int) -> tuple[int, int]:
    """The ranks ``(lo, hi)`` a construction can have with ``n`` objectives in ``d`` dims.

    Stationary constructions satisfy one linear relation among their rows, so their rank is at
    most ``n − 1``; conflicting and non-stationary ones need a non-zero row.
    """
    _check_kind(kind)
    hi = min(n, d)
    lo = 0
    if kind in ("pareto_stationary", "strongly_stationary"):
        hi = min(n - 1, d)
    if kind in ("conflicting", "non_stationary"):
        lo = 1
    return lo, hi


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown construction {kind!r}; choose one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Layout:
    """Everything a construction draws besides the random stream: the recipe of one Jacobian.

    ``derived`` lists ``(kind_of_row, source_row)`` for rows appended after the ``n − len(
    derived)`` constructed ones; ``row_decades`` scales row ``i`` by ``10**-row_decades[i]``.
    """

    n: int
    d: int
    rank: int
    kind: Kind = "generic"
    style: Style = "gaussian"
    derived: tuple[tuple[Derived, int], ...] = ()
    row_decades: tuple[float, ...] = ()


def construct(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """A float64 Jacobian ``[n, d]`` with entries of order 1 following ``layout``."""
    kind, n, d, r = layout.kind, layout.n, layout.d, layout.rank
    _check_kind(kind)
    n_base = n - len(layout.derived)
    lo, hi = rank_range(kind, n_base, d)
    if not (n_base >= min_objectives(kind) and lo <= r <= hi):
        raise ValueError(
            f"a {kind!r} Jacobian with {n_base} constructed rows in {d} dimensions has rank "
            f"in [{lo}, {hi}], got rank {r}"
        )
    for what, _ in layout.derived:
        if what not in _ALLOWED_DERIVED[kind]:
            raise ValueError(f"{what!r} rows would break the {kind!r} construction")
    integer = layout.style == "integer"
    a = _coefficients(rng, kind, n_base, r, integer)
    rows = [a[i] for i in range(n_base)]
    for what, source in layout.derived:
        base = rows[source % n_base]
        factor = float(rng.integers(2, 4)) if integer else float(rng.uniform(0.1, 3.0))
        if what == "copy":
            rows.append(base.copy())
        elif what == "multiple":
            rows.append(factor * base)
        elif what == "negated":
            rows.append(-factor * base)
        else:
            rows.append(np.zeros(r))
    a = np.stack(rows) if rows else np.zeros((0, r))
    a = a[rng.permutation(n)]
    if layout.row_decades:
        a = a * (10.0 ** -np.asarray(layout.row_decades, dtype=np.float64))[:, None]
    return a @ _basis(rng, r, d, integer)


def _basis(rng: np.random.Generator, r: int, d: int, integer: bool) -> np.ndarray:
    """``[r, d]`` with orthonormal rows."""
    if r == 0:
        return np.zeros((0, d))
    if integer:
        b = np.zeros((r, d))
        columns = rng.choice(d, size=r, replace=False)
        b[np.arange(r), columns] = rng.choice([-1.0, 1.0], size=r)
        return b
    q, _ = np.linalg.qr(rng.standard_normal((d, r)))
    return np.ascontiguousarray(q.T)


def _generic(rng: np.random.Generator, shape: tuple[int, ...], integer: bool) -> np.ndarray:
    if integer:
        return rng.integers(-3, 4, size=shape).astype(np.float64)
    return rng.standard_normal(shape)


def _coefficients(rng: np.random.Generator, kind: str, n: int, r: int, integer: bool) -> np.ndarray:
    """``A [n, r]`` in coefficient space with the construction's geometry."""
    if r == 0:
        return np.zeros((n, 0))
    if kind == "generic":
        return _generic(rng, (n, r), integer)
    if kind == "conflicting":
        a = _generic(rng, (n, r), integer)
        i, j = rng.choice(n, size=2, replace=False)
        if not a[i].any():
            a[i, rng.integers(r)] = 1.0
        sq = float(a[i] @ a[i])
        dot = float(a[i] @ a[j])
        if integer:
            # an integer step keeps the rows integer: aᵢ·aⱼ becomes ≤ −1 exactly
            a[j] -= (math.floor(dot / sq) + 1.0) * a[i]
        else:
            a[j] -= (dot / sq + rng.uniform(0.25, 2.0)) * a[i]
        return a
    if kind in ("pareto_stationary", "strongly_stationary"):
        a = _generic(rng, (n, r), integer)
        if kind == "strongly_stationary":
            support = np.arange(n)
        else:
            support = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
        if support.size == 1:
            a[support[0]] = 0.0  # a zero gradient: trivially stationary
            return a
        c = rng.integers(1, 4, size=support.size).astype(np.float64)
        if not integer:
            c = rng.uniform(0.1, 1.0, size=support.size)
        last = support[-1]
        c[-1] = 1.0  # keeps integer rows integer
        a[last] = -(c[:-1] @ a[support[:-1]])
        # rank ≤ r is kept; the relation Σ cᵢ aᵢ = 0 holds exactly for integer rows
        return a
    # non_stationary: every row has a positive component along one unit vector u
    if integer:
        u = np.zeros(r)
        u[rng.integers(r)] = 1.0
        a = _generic(rng, (n, r), True)
        a[:, u.astype(bool)] = rng.integers(1, 4, size=(n, 1)).astype(np.float64)
        return a
    u = rng.standard_normal(r)
    u /= np.linalg.norm(u)
    v = rng.standard_normal((n, r))
    v -= np.outer(v @ u, u)
    return rng.uniform(0.1, 2.0, size=(n, 1)) * u + v


def random_jacobian(
    n: int,
    d: int,
    seed: int,
    *,
    scale: float = 1.0,
    kind: Kind = "generic",
    rank: int | None = None,
    style: Style = "gaussian",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A seeded random Jacobian ``[n, d]`` (no hypothesis needed): for pinned tests and
    benchmarks.

    ``kind="generic"`` with ``rank=None`` is i.i.d. standard normal entries times ``scale``.
    Other kinds and ranks follow the constructions of the ``jacobians`` strategy (see
    ``docs/testing.md``); ``rank`` defaults to the largest the construction allows.
    """
    if n < 1 or d < 1:
        raise ValueError(f"need n >= 1 objectives and d >= 1 dimensions, got n={n}, d={d}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
    rng = np.random.default_rng(seed)
    if kind == "generic" and rank is None and style == "gaussian":
        values = rng.standard_normal((n, d))
    else:
        if n < min_objectives(kind):
            raise ValueError(f"a {kind!r} Jacobian needs at least {min_objectives(kind)} rows")
        r = rank_range(kind, n, d)[1] if rank is None else rank
        values = construct(rng, Layout(n=n, d=d, rank=r, kind=kind, style=style))
    return torch.tensor(values * scale, dtype=dtype)
