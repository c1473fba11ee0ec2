""":func:`check_claims`: every property an aggregator claims, checked on one run of steps by
walking the property table (:data:`mogradient.testing.properties.TABLE`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mogradient.aggregation.kinds import GramianWeighting, JacobianWeighting
from mogradient.testing._function import DirectionFunction
from mogradient.testing.harness import (
    DEFAULT_TOLERANCE,
    AggregatorOrFactory,
    Steps,
    Tolerance,
    _as_steps,
    _check_finite_weights,
    _copy,
    _fresh,
    _has_weights,
    _losses_for,
    _twin,
    assert_valid_output,
    direction_of,
    make_factory,
    weights_of,
)
from mogradient.testing.properties import PROPERTIES, TABLE, Call, Run


def check_claims(
    agg_or_factory: AggregatorOrFactory,
    jacobian: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    claims: frozenset[str] | set[str] | None = None,
    permutation: Sequence[int] | None = None,
    factor: float = 2.0**20,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> frozenset[str]:
    """Check every property the aggregator claims (``agg.claims()``, or ``claims``) on one
    input or a sequence of steps; returns the properties checked.

    One fresh instance runs the steps; at each step its weights (on a copy in the same state)
    and its direction are checked for the per-call properties (weights on the simplex / non-
    negative, min-norm KKT, non-conflicting, no graph) and the output for shape, dtype and
    finiteness. Then: a second fresh instance must reproduce the outputs exactly
    (``deterministic``); the first, after ``reset()``, too (``reset_restores``); a fresh one on
    the permuted steps gives the same directions and permuted weights
    (``permutation_invariant``); a fresh one on the steps scaled by ``factor`` gives the
    directions times ``factor`` (``scale_equivariant``).
    """
    factory = make_factory(agg_or_factory)
    agg = _fresh(factory)
    claimed = frozenset(agg.claims() if claims is None else claims)
    unknown = sorted(claimed - set(PROPERTIES))
    if unknown:
        raise ValueError(
            f"{agg!r} claims unknown properties {unknown}; known: {', '.join(PROPERTIES)}"
        )
    checks = [(name, TABLE[name]) for name in TABLE if name in claimed]
    need_weights = _has_weights(agg)
    for name, check in checks:
        if check.needs == "gramian" and not isinstance(agg, GramianWeighting):
            raise TypeError(f"{agg!r} claims {name} but is not a GramianWeighting")
    on_weights = sorted(name for name, check in checks if check.needs == "weights")
    if on_weights and not need_weights:
        raise TypeError(
            f"{agg!r} exposes no weights, so {on_weights} cannot be checked on it"
            + (
                " (a plain function gives only its direction)"
                if isinstance(agg, DirectionFunction)
                else " (a Jacobian weighting gives only its direction)"
                if isinstance(agg, JacobianWeighting)
                else ""
            )
            + "; drop them from claims=, or subclass GramianWeighting or LossWeighting"
        )
    steps = _as_steps(jacobian, losses)
    twins = {name: _twin(agg, factory) for name, check in checks if check.twin}
    outputs: list[torch.Tensor] = []
    weights: list[np.ndarray | None] = []
    grad_inputs = any(check.grad_inputs for _, check in checks)
    for t, (jac, loss) in enumerate(steps):
        where = f"step {t}" if len(steps) > 1 else ""
        loss = _losses_for(agg, jac, loss)
        w = weights_of(_copy(agg), jac, loss) if need_weights else None
        weights.append(w)
        if w is not None:
            _check_finite_weights(agg, w, where)
        call = Call(agg, jac, loss, w, jac.new_empty(0), tol, where)
        for _, check in checks:
            if check.on_weights is not None and w is not None:
                check.on_weights(call)
        if grad_inputs:
            jac_in = jac.detach().clone().requires_grad_(True)
            loss_in = None if loss is None else loss.detach().clone().requires_grad_(True)
            d = direction_of(agg, jac_in, loss_in)
        else:
            d = direction_of(agg, jac, loss)
        assert_valid_output(agg, jac, d)
        call = Call(agg, jac, loss, w, d, tol, where)
        for _, check in checks:
            if check.on_direction is not None:
                check.on_direction(call)
        outputs.append(d.detach().clone())
    for name, check in checks:
        if check.across_runs is not None:
            run = Run(
                agg, factory, steps, outputs, weights, twins.get(name), tol, permutation, factor
            )
            check.across_runs(run)
    return claimed
