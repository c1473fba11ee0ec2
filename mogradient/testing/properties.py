"""The property table: every :data:`~mogradient.aggregators.Property` once, with its check on
each call, its check across runs, and its standalone ``assert_*``.

:func:`mogradient.testing.check_claims` walks this table; nothing else lists the properties.
The checks themselves are in :mod:`mogradient.testing.per_call` (weights and directions of one
call) and :mod:`mogradient.testing.per_run` (comparisons between runs); the harness they share
(tolerances, factories, reading weights) is :mod:`mogradient.testing.harness`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.kinds import Aggregator, Property
from mogradient.testing.harness import Tolerance, _f64, _fresh
from mogradient.testing.per_call import (
    _check_kkt,
    _check_no_graph,
    _check_non_conflicting,
    _check_non_negative,
    _check_simplex,
    assert_min_norm_kkt,
    assert_non_conflicting,
    assert_non_differentiable,
    assert_non_negative_weights,
    assert_simplex_weights,
)
from mogradient.testing.per_run import (
    _check_same,
    _compare_permuted,
    _compare_scaled,
    _default_permutation,
    _run,
    assert_deterministic,
    assert_permutation_invariant,
    assert_reset_restores,
    assert_scale_equivariant,
)

#: Every property name a method may claim (the :data:`Property` literal).
PROPERTIES: tuple[Property, ...] = get_args(Property)


@dataclass(frozen=True)
class Call:
    """One step of a run, as the per-call checks see it: the aggregator (in its state before
    the step), the input, the weights read from a copy (``None`` for a plain function) and the
    direction (computed from inputs that require grad where a property asks for it)."""

    agg: Aggregator
    jacobian: torch.Tensor
    losses: torch.Tensor | None
    weights: np.ndarray | None
    direction: torch.Tensor
    tol: Tolerance
    where: str


@dataclass(frozen=True)
class Run:
    """A whole run, as the per-run checks see it: the instance that ran the steps, the factory
    of fresh ones, the steps, each step's output and weights, a twin of the instance taken
    before the run (for the properties that ask for one), and the check's parameters."""

    agg: Aggregator
    factory: Callable[[], Aggregator]
    steps: list[tuple[torch.Tensor, torch.Tensor | None]]
    outputs: list[torch.Tensor]
    weights: list[np.ndarray | None]
    twin: Aggregator | None
    tol: Tolerance
    permutation: Sequence[int] | None
    factor: float


@dataclass(frozen=True)
class PropertyCheck:
    """How one property is checked.

    ``check``: the standalone ``assert_*`` (``(agg_or_factory, jacobian, losses, **options)``).
    ``on_weights`` / ``on_direction``: the check of one call's weights (before the direction is
    computed) or direction. ``across_runs``: the comparison once the run is over.
    ``needs``: what the aggregator must expose (``"weights"``, or ``"gramian"`` for a Gramian
    weighting). ``grad_inputs``: the call's direction comes from inputs that require grad.
    ``twin``: ``across_runs`` compares with a copy of the instance taken before the run.
    """

    check: Callable[..., object]
    on_weights: Callable[[Call], None] | None = None
    on_direction: Callable[[Call], None] | None = None
    across_runs: Callable[[Run], None] | None = None
    needs: Literal["weights", "gramian"] | None = None
    grad_inputs: bool = False
    twin: bool = False


def _weights(call: Call) -> np.ndarray:
    assert call.weights is not None
    return call.weights


def _permutation(run: Run) -> None:
    n = run.steps[0][0].shape[0]
    if n == 1 or run.twin is None:
        return
    perm = list(run.permutation) if run.permutation is not None else _default_permutation(n)
    if sorted(perm) != list(range(n)):
        raise ValueError(f"{perm} is not a permutation of range({n})")
    _compare_permuted(run.twin, run.steps, perm, run.outputs, run.weights, run.tol)


def _scale(run: Run) -> None:
    assert run.twin is not None
    _compare_scaled(run.twin, run.steps, run.factor, run.outputs, run.weights, run.tol)


def _deterministic(run: Run) -> None:
    other = _fresh(run.factory)
    _check_same("deterministic", other, run.outputs, _run(other, run.steps), 0.0)


def _reset_restores(run: Run) -> None:
    run.agg.reset()
    _check_same("reset_restores", run.agg, run.outputs, _run(run.agg, run.steps), 0.0)


def _min_norm_kkt(agg: Any, jacobian: torch.Tensor, losses: Any = None, **kw: Any) -> object:
    return assert_min_norm_kkt(agg, jacobian, **kw)


#: Every property once, in the order :func:`check_claims` checks them.
TABLE: dict[Property, PropertyCheck] = {
    "simplex_weights": PropertyCheck(
        assert_simplex_weights,
        on_weights=lambda c: _check_simplex(c.agg, _weights(c), c.tol, c.where),
        needs="weights",
    ),
    "non_negative_weights": PropertyCheck(
        assert_non_negative_weights,
        on_weights=lambda c: _check_non_negative(c.agg, _weights(c), c.tol, c.where),
        needs="weights",
    ),
    "min_norm_kkt": PropertyCheck(
        _min_norm_kkt,
        on_weights=lambda c: _check_kkt(
            c.agg, _f64(gramian_of(c.jacobian)), _weights(c), c.tol, c.where
        ),
        needs="gramian",
    ),
    "non_differentiable": PropertyCheck(
        assert_non_differentiable,
        on_direction=lambda c: _check_no_graph(c.agg, c.direction, c.where),
        grad_inputs=True,
    ),
    "non_conflicting": PropertyCheck(
        assert_non_conflicting,
        on_direction=lambda c: _check_non_conflicting(
            c.agg,
            _f64(c.jacobian),
            _f64(c.direction),
            c.weights,
            c.tol.for_dtype(c.jacobian.dtype),
            c.where,
        ),
    ),
    "deterministic": PropertyCheck(assert_deterministic, across_runs=_deterministic),
    "reset_restores": PropertyCheck(assert_reset_restores, across_runs=_reset_restores),
    "permutation_invariant": PropertyCheck(
        assert_permutation_invariant, across_runs=_permutation, twin=True
    ),
    "scale_equivariant": PropertyCheck(assert_scale_equivariant, across_runs=_scale, twin=True),
}

#: The standalone check of each property, by name (each takes
#: ``(agg_or_factory, jacobian, losses)``).
CHECKS: dict[str, Callable[..., object]] = {name: p.check for name, p in TABLE.items()}
