"""Hypothesis strategies for Jacobians, Gramians, loss values and multi-step problems.

Every size argument takes an ``int``, an inclusive ``(low, high)`` range or a hypothesis
strategy; ``scale`` a number, a ``(low, high)`` range (drawn log-uniformly) or a strategy;
``dtype`` a torch dtype, a sequence of them or a strategy; ``kind`` one construction name, a
sequence of names or ``None`` (all five):

* ``"generic"``: no structure imposed (low rank, repeated / collinear / opposite / zero rows and
  rows a few decades apart are still drawn);
* ``"conflicting"``: some pair has ``gᵢ·gⱼ < 0``;
* ``"pareto_stationary"``: 0 is in the convex hull of the gradients (the min-norm point is 0);
* ``"strongly_stationary"``: ``Σ cᵢ gᵢ = 0`` with every ``cᵢ > 0`` (0 in the relative interior);
* ``"non_stationary"``: a common ascent direction ``u`` exists (``gᵢ·u > 0`` for every ``i``),
  so a common descent direction ``−u`` of the losses.

A construction holds exactly for the ``"integer"`` style and up to rounding otherwise; ``scale``
multiplies the whole Jacobian after construction (0 is only drawn for constructions that hold
at 0: ``generic`` and the stationary ones). See ``docs/testing.md``.

Requires hypothesis (``pip install hypothesis``); the rest of :mod:`mogradient` never imports it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

try:
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ModuleNotFoundError as error:  # pragma: no cover - exercised in a subprocess test
    raise ModuleNotFoundError(
        "mogradient.testing's strategies need hypothesis: pip install hypothesis "
        "(the property checks of mogradient.testing work without it)",
        name=error.name,
    ) from error

from mogradient.testing._constructions import (
    _ALLOWED_DERIVED,
    KINDS,
    STYLES,
    Kind,
    Layout,
    Style,
    construct,
    min_objectives,
    rank_range,
)

IntSpec = int | tuple[int, int] | SearchStrategy[int]
ScaleSpec = float | tuple[float, float] | SearchStrategy[float] | None
DtypeSpec = torch.dtype | Sequence[torch.dtype] | SearchStrategy[torch.dtype] | None
KindSpec = Kind | Sequence[Kind] | None

#: The magnitudes the library promises to handle: 0 and 1e-10 … 1e15.
MIN_SCALE = 1e-10
MAX_SCALE = 1e15

#: The Jacobian dtypes drawn by default.
DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32)

_KINDS_WITHOUT_ZERO = ("conflicting", "non_stationary")


def _ints(spec: IntSpec, what: str) -> SearchStrategy[int]:
    if isinstance(spec, SearchStrategy):
        return spec
    if isinstance(spec, bool):
        raise TypeError(f"{what} must be an int, a (low, high) pair or a strategy, got {spec!r}")
    if isinstance(spec, int):
        return st.just(spec)
    low, high = spec
    if low > high:
        raise ValueError(f"{what}: low {low} > high {high}")
    return st.integers(low, high)


_CHOICE_OF_TEN = st.integers(0, 9)


def scales(
    min_value: float = MIN_SCALE, max_value: float = MAX_SCALE, *, zero: bool = True
) -> SearchStrategy[float]:
    """Magnitudes: 1 (or ``min_value`` if 1 is out of range), ``min_value`` and ``max_value``
    one time in ten each, 0 one time in ten when ``zero``, otherwise log-uniform in
    ``[min_value, max_value]``. Shrinks towards 1."""
    if not (0 < min_value <= max_value) or not math.isfinite(max_value):
        raise ValueError(f"need 0 < min_value <= max_value < inf, got {min_value}, {max_value}")
    lo, hi = math.log10(min_value), math.log10(max_value)
    one = 1.0 if min_value <= 1.0 <= max_value else min_value
    special = {0: one, 1: min_value, 2: max_value}
    exponents = st.floats(lo, hi)

    @st.composite
    def draw_scale(draw: Any) -> float:
        k = draw(_CHOICE_OF_TEN)
        if k in special:
            return special[k]
        if k == 3 and zero:
            return 0.0
        return float(min(max(10.0 ** draw(exponents), min_value), max_value))

    return draw_scale()


def _scales(spec: ScaleSpec, zero: bool) -> SearchStrategy[float]:
    if spec is None:
        return scales(zero=zero)
    if isinstance(spec, SearchStrategy):
        return spec
    if isinstance(spec, tuple):
        low, high = spec
        if low == 0:
            return scales(MIN_SCALE, high, zero=zero)
        return scales(low, high, zero=False)
    return st.just(float(spec))


def dtypes(choices: Sequence[torch.dtype] = DTYPES) -> SearchStrategy[torch.dtype]:
    """Floating dtypes for Jacobians (float64 and float32 by default)."""
    return st.sampled_from(list(choices))


def _dtypes(spec: DtypeSpec) -> SearchStrategy[torch.dtype]:
    if spec is None:
        return dtypes()
    if isinstance(spec, SearchStrategy):
        return spec
    if isinstance(spec, torch.dtype):
        return st.just(spec)
    return dtypes(spec)


def _kinds(spec: KindSpec) -> list[Kind]:
    kinds: list[Kind] = (
        list(KINDS) if spec is None else [spec] if isinstance(spec, str) else list(spec)
    )
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown construction {kind!r}; choose from {', '.join(KINDS)}")
    if not kinds:
        raise ValueError("kind: give at least one construction")
    return kinds


@functools.lru_cache(maxsize=4096)
def _between(low: int, high: int) -> SearchStrategy[int]:
    return st.integers(low, high)


_SEEDS = st.integers(0, 2**32 - 1)


def layouts(
    *,
    n: IntSpec = (1, 6),
    d: IntSpec = (1, 8),
    rank: IntSpec | None = None,
    kind: KindSpec = None,
    style: Style | None = None,
    degenerate: bool = True,
    row_decades: float = 2.0,
) -> SearchStrategy[Layout]:
    """The recipe of one Jacobian (a :class:`~mogradient.testing.Layout`): shape, rank,
    construction, entry style and degenerate rows. ``rank`` is clamped into what the
    construction allows with the drawn ``n`` and ``d``; with ``degenerate``, rows derived from
    others (copies, positive multiples, negated multiples, zero rows: only those that keep the
    construction's guarantee) and row scales up to ``10**-row_decades`` are drawn too."""
    kinds = _kinds(kind)
    n_strategy = _ints(n, "n")
    d_strategy = _ints(d, "d")
    rank_strategy = None if rank is None else _ints(rank, "rank")
    kind_strategies = {
        k: st.sampled_from([c for c in kinds if k >= min_objectives(c)] or kinds)
        for k in range(1, 3)
    }
    style_strategy = st.just(style) if style is not None else st.sampled_from(STYLES)
    booleans = st.booleans()

    @st.composite
    def draw_layout(draw: Any) -> Layout:
        n_objectives = draw(n_strategy)
        chosen: Kind = draw(kind_strategies[min(n_objectives, 2)])
        if n_objectives < min_objectives(chosen):
            raise ValueError(f"a {chosen!r} Jacobian needs n >= {min_objectives(chosen)}")
        dims = draw(d_strategy)
        chosen_style: Style = draw(style_strategy)
        derived: list[tuple[Any, int]] = []
        decades: tuple[float, ...] = ()
        extra = draw(_between(0, n_objectives - min_objectives(chosen))) if degenerate else 0
        spread = degenerate and row_decades > 0 and draw(booleans)
        if extra or spread:
            # which rows are derived, and the row scales, come from one drawn seed
            rng = np.random.default_rng(draw(_SEEDS))
            allowed = _ALLOWED_DERIVED[chosen]
            for _ in range(extra):
                what = allowed[int(rng.integers(len(allowed)))]
                derived.append((what, int(rng.integers(n_objectives))))
            if spread:
                decades = tuple(float(x) for x in rng.uniform(0.0, row_decades, n_objectives))
        lo, hi = rank_range(chosen, n_objectives - len(derived), dims)
        if rank_strategy is None:
            r = draw(_between(lo, hi))
        else:
            r = min(max(draw(rank_strategy), lo), hi)
        return Layout(
            n=n_objectives,
            d=dims,
            rank=r,
            kind=chosen,
            style=chosen_style,
            derived=tuple(derived),
            row_decades=decades,
        )

    return draw_layout()


def jacobians(
    *,
    n: IntSpec = (1, 6),
    d: IntSpec = (1, 8),
    rank: IntSpec | None = None,
    scale: ScaleSpec = None,
    dtype: DtypeSpec = None,
    kind: KindSpec = None,
    style: Style | None = None,
    degenerate: bool = True,
) -> SearchStrategy[torch.Tensor]:
    """Jacobians ``[n, d]`` (a torch tensor of ``dtype``) with the geometry ``kind``.

    Args:
        n, d: number of objectives and of parameters.
        rank: the rank of the constructed rows (clamped into what ``kind`` allows; exact
            almost surely for the Gaussian style, at most ``rank`` for the integer one).
            ``None``: any.
        scale: overall magnitude (default: 0 and 1e-10 … 1e15, log-uniform); rows may be a
            further ``10**-2`` smaller when ``degenerate``.
        dtype: float64 / float32 by default.
        kind: construction(s), see the module docstring; ``None``: any.
        style: ``"gaussian"`` or ``"integer"`` entries (``None``: either).
        degenerate: also draw repeated, collinear, opposite and zero rows and rows a few
            decades apart (only those that keep ``kind``'s guarantee).
    """
    layout_strategy = layouts(n=n, d=d, rank=rank, kind=kind, style=style, degenerate=degenerate)
    scale_strategies = {zero: _scales(scale, zero) for zero in (True, False)}
    dtype_strategy = _dtypes(dtype)

    @st.composite
    def draw_jacobian(draw: Any) -> torch.Tensor:
        layout = draw(layout_strategy)
        value = draw(scale_strategies[layout.kind not in _KINDS_WITHOUT_ZERO])
        rng = np.random.default_rng(draw(_SEEDS))
        values = construct(rng, layout) * value
        return torch.tensor(values, dtype=draw(dtype_strategy))

    return draw_jacobian()


def conflicting_jacobians(**kwargs: Any) -> SearchStrategy[torch.Tensor]:
    """:func:`jacobians` with ``kind="conflicting"`` (``n ≥ 2``)."""
    kwargs.setdefault("n", (2, 6))
    return jacobians(kind="conflicting", **kwargs)


def pareto_stationary_jacobians(**kwargs: Any) -> SearchStrategy[torch.Tensor]:
    """:func:`jacobians` with ``kind="pareto_stationary"``."""
    return jacobians(kind="pareto_stationary", **kwargs)


def strongly_stationary_jacobians(**kwargs: Any) -> SearchStrategy[torch.Tensor]:
    """:func:`jacobians` with ``kind="strongly_stationary"``."""
    return jacobians(kind="strongly_stationary", **kwargs)


def non_stationary_jacobians(**kwargs: Any) -> SearchStrategy[torch.Tensor]:
    """:func:`jacobians` with ``kind="non_stationary"``."""
    return jacobians(kind="non_stationary", **kwargs)


def gramians(
    *,
    n: IntSpec = (1, 6),
    d: IntSpec = (1, 8),
    rank: IntSpec | None = None,
    scale: ScaleSpec = None,
    dtype: DtypeSpec = None,
    kind: KindSpec = None,
    style: Style | None = None,
    degenerate: bool = True,
) -> SearchStrategy[np.ndarray]:
    """Gramians ``G = J Jᵀ`` (numpy ``[n, n]``) of :func:`jacobians`, formed in ``dtype``.

    A float32 Gramian is computed in float32 from the float32 Jacobian (as a user's code
    would), so a rank-deficient one may have eigenvalues slightly below 0 from rounding.
    ``scale`` is the scale of ``J`` (so ``G`` scales with its square).
    """

    def gram(jac: torch.Tensor) -> np.ndarray:
        j = jac.numpy()
        g = j @ j.T
        return np.ascontiguousarray(0.5 * (g + g.T))

    return jacobians(
        n=n,
        d=d,
        rank=rank,
        scale=scale,
        dtype=dtype,
        kind=kind,
        style=style,
        degenerate=degenerate,
    ).map(gram)


def _check_loss_range(min_value: float, max_value: float) -> None:
    if not (0 < min_value <= max_value) or not math.isfinite(max_value):
        raise ValueError(f"need 0 < min_value <= max_value < inf, got {min_value}, {max_value}")


def _losses_from(
    rng: np.random.Generator, n: int, tie: bool, min_value: float, max_value: float
) -> np.ndarray:
    lo, hi = math.log10(min_value), math.log10(max_value)
    exponents = np.full(n, rng.uniform(lo, hi)) if tie else rng.uniform(lo, hi, n)
    return np.clip(10.0**exponents, min_value, max_value)


_TIES = st.integers(0, 4).map(lambda k: k == 0)  # one draw in five: all losses equal


def loss_values(
    n: IntSpec,
    *,
    min_value: float = 1e-3,
    max_value: float = 1e3,
    dtype: torch.dtype = torch.float64,
) -> SearchStrategy[torch.Tensor]:
    """Positive loss values ``[n]`` (torch), log-uniform in ``[min_value, max_value]``; one
    draw in five has every loss equal (ties are a common edge case for loss weightings)."""
    _check_loss_range(min_value, max_value)
    n_strategy = _ints(n, "n")

    @st.composite
    def draw_losses(draw: Any) -> torch.Tensor:
        k = draw(n_strategy)
        rng = np.random.default_rng(draw(_SEEDS))
        values = _losses_from(rng, k, draw(_TIES), min_value, max_value)
        return torch.tensor(values, dtype=dtype)

    return draw_losses()


def _tensor_source(t: torch.Tensor) -> str:
    return f"torch.tensor({t.tolist()!r}, dtype={t.dtype})"


@dataclass(frozen=True)
class Problem:
    """A sequence of training steps with a fixed number of objectives: ``jacobians[t]``
    ``[n, d]`` and ``losses[t]`` ``[n]`` (positive). ``kind`` is the construction used.

    Its ``repr`` is Python that rebuilds it exactly (float32 values print exactly too)."""

    jacobians: list[torch.Tensor]
    losses: list[torch.Tensor]
    kind: str = "generic"
    layout: Layout | None = field(default=None, compare=False)

    @property
    def n(self) -> int:
        return int(self.jacobians[0].shape[0])

    def __repr__(self) -> str:
        jac = ", ".join(_tensor_source(j) for j in self.jacobians)
        loss = ", ".join(_tensor_source(v) for v in self.losses)
        return f"Problem(jacobians=[{jac}], losses=[{loss}], kind={self.kind!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints falsifying examples with this: the exact, runnable repr."""
        printer.text(repr(self))


def problems(
    *,
    n: IntSpec = (1, 6),
    d: IntSpec = (1, 8),
    steps: IntSpec = (1, 3),
    rank: IntSpec | None = None,
    scale: ScaleSpec = None,
    dtype: DtypeSpec = None,
    kind: KindSpec = None,
    style: Style | None = None,
    degenerate: bool = True,
    min_loss: float = 1e-3,
    max_loss: float = 1e3,
) -> SearchStrategy[Problem]:
    """Problems: ``steps`` Jacobians of one shape, dtype, scale and construction
    (each step freshly drawn, a repeat of the previous one, or, for ``generic``, a small drift
    of it: what warm starts and running statistics see) and positive loss values per step
    (fresh, decreasing or unchanged). Other arguments as for :func:`jacobians` and
    :func:`loss_values`."""
    _check_loss_range(min_loss, max_loss)
    layout_strategy = layouts(n=n, d=d, rank=rank, kind=kind, style=style, degenerate=degenerate)
    scale_strategies = {zero: _scales(scale, zero) for zero in (True, False)}
    dtype_strategy = _dtypes(dtype)
    steps_strategy = _ints(steps, "steps")

    @st.composite
    def draw_problem(draw: Any) -> Problem:
        layout = draw(layout_strategy)
        scale_value = draw(scale_strategies[layout.kind not in _KINDS_WITHOUT_ZERO])
        torch_dtype = draw(dtype_strategy)
        rng = np.random.default_rng(draw(_SEEDS))
        k = draw(steps_strategy)
        if k < 1:
            raise ValueError(f"steps must be >= 1, got {k}")
        jacs: list[np.ndarray] = []
        losses: list[np.ndarray] = []
        for t in range(k):
            # how each step follows the previous one comes from the drawn seed
            move = ("new", "repeat", "drift")[int(rng.integers(3))] if t else "new"
            if move == "new":
                jacs.append(construct(rng, layout) * scale_value)
            elif move == "repeat" or layout.kind != "generic":
                jacs.append(jacs[-1].copy())
            else:
                noise = rng.standard_normal(jacs[-1].shape)
                jacs.append(jacs[-1] + 1e-3 * scale_value * noise)
            loss_move = ("new", "decrease", "same")[int(rng.integers(3))] if t else "new"
            if loss_move == "new":
                tie = bool(rng.integers(5) == 0)
                losses.append(_losses_from(rng, layout.n, tie, min_loss, max_loss))
            elif loss_move == "decrease":
                factors = rng.uniform(0.5, 1.0, layout.n)
                losses.append(np.clip(losses[-1] * factors, min_loss, max_loss))
            else:
                losses.append(losses[-1].copy())
        return Problem(
            jacobians=[torch.tensor(j, dtype=torch_dtype) for j in jacs],
            losses=[torch.tensor(v, dtype=torch.float64) for v in losses],
            kind=layout.kind,
            layout=layout,
        )

    return draw_problem()


__all__ = [
    "DTYPES",
    "MAX_SCALE",
    "MIN_SCALE",
    "Problem",
    "conflicting_jacobians",
    "dtypes",
    "gramians",
    "jacobians",
    "layouts",
    "loss_values",
    "non_stationary_jacobians",
    "pareto_stationary_jacobians",
    "problems",
    "scales",
    "strongly_stationary_jacobians",
]
