"""The checks of the properties that hold on each call: the weights (on the simplex, non-
negative, min-norm KKT) and the direction (non-conflicting, no autograd graph). Each has a
``_check_*`` on one call's weights or direction, used by :func:`mogradient.testing.check_claims`
through the property table, and a standalone ``assert_*``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.kinds import Aggregator, GramianWeighting
from mogradient.testing.harness import (
    DEFAULT_TOLERANCE,
    PropertyViolation,
    Tolerance,
    _check_finite_weights,
    _f64,
    _has_weights,
    _losses_for,
    _magnitude,
    _snapshot,
    assert_valid_output,
    direction_of,
    weights_of,
)


def _check_non_negative(agg: object, w: np.ndarray, tol: Tolerance, where: str = "") -> None:
    _check_finite_weights(agg, w, where)
    i = int(np.argmin(w)) if w.size else 0
    if w.size and w.flat[i] < -tol.weight_atol:
        raise PropertyViolation(
            "non_negative_weights",
            agg,
            f"weight {np.unravel_index(i, w.shape)} = {w.flat[i]:.6g} < -{tol.weight_atol:g} "
            f"(weights {w})",
            where,
        )


def _check_simplex(agg: object, w: np.ndarray, tol: Tolerance, where: str = "") -> None:
    _check_finite_weights(agg, w, where)
    try:
        _check_non_negative(agg, w, tol, where)
    except PropertyViolation as error:
        raise PropertyViolation("simplex_weights", agg, error.detail, where) from None
    sums = w.sum(axis=0)
    worst = float(np.max(np.abs(sums - 1.0)))
    if worst > tol.weight_atol:
        raise PropertyViolation(
            "simplex_weights",
            agg,
            f"weights sum to {sums} (|Σw − 1| = {worst:.3g} > {tol.weight_atol:g}; weights {w})",
            where,
        )


def assert_simplex_weights(
    agg: Aggregator,
    jacobian: torch.Tensor,
    losses: torch.Tensor | None = None,
    *,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """``w ≥ 0`` and ``Σw = 1`` (per coordinate for an advantage combiner's ``[n, d]``
    weights), within ``tol.weight_atol``. Returns the weights."""
    w = weights_of(_snapshot(agg), jacobian, _losses_for(agg, jacobian, losses))
    _check_simplex(agg, w, tol)
    return w


def assert_non_negative_weights(
    agg: Aggregator,
    jacobian: torch.Tensor,
    losses: torch.Tensor | None = None,
    *,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """``w ≥ −tol.weight_atol``. Returns the weights."""
    w = weights_of(_snapshot(agg), jacobian, _losses_for(agg, jacobian, losses))
    _check_non_negative(agg, w, tol)
    return w


def _check_kkt(
    agg: object, gram: np.ndarray, w: np.ndarray, tol: Tolerance, where: str = ""
) -> None:
    if w.shape != (gram.shape[0],):
        raise PropertyViolation("min_norm_kkt", agg, f"weights of shape {w.shape}", where)
    try:
        _check_simplex(agg, w, tol, where)
    except PropertyViolation as error:
        raise PropertyViolation("min_norm_kkt", agg, error.detail, where) from None
    gw = gram @ w
    f = float(w @ gw)
    unit = tol.kkt_rtol * max(float(np.max(np.diag(gram))), 0.0)
    # stationarity on the support and dual feasibility off it: (Gw)ᵢ ≥ wᵀGw for all i, with
    # equality where wᵢ > 0 (complementary slackness as wᵢ·((Gw)ᵢ − wᵀGw) = 0)
    low = gw - f
    i = int(np.argmin(low))
    if low[i] < -unit:
        raise PropertyViolation(
            "min_norm_kkt",
            agg,
            f"(Gw)[{i}] = {gw[i]:.6g} < wᵀGw = {f:.6g} by {-low[i]:.3g} > {unit:.3g}: the "
            f"direction conflicts with objective {i} relative to the min-norm optimum "
            f"(weights {w})",
            where,
        )
    slack = np.abs(w * low)
    i = int(np.argmax(slack))
    if slack[i] > unit:
        raise PropertyViolation(
            "min_norm_kkt",
            agg,
            f"w[{i}] = {w[i]:.6g} > 0 but (Gw)[{i}] − wᵀGw = {low[i]:.3g}: not optimal "
            f"(w·slack {slack[i]:.3g} > {unit:.3g}; weights {w})",
            where,
        )


def assert_min_norm_kkt(
    agg: GramianWeighting,
    jacobian: torch.Tensor | None = None,
    *,
    gramian: np.ndarray | torch.Tensor | None = None,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """The weights solve min ``wᵀGw`` over the simplex: ``w`` on the simplex, ``(Gw)ᵢ ≥ wᵀGw``
    for every ``i``, with equality where ``wᵢ > 0`` (within ``tol.kkt_rtol · maxᵢ Gᵢᵢ``).

    Give a Jacobian (``G = gramian_of(J)``) or a Gramian. Returns the weights.
    """
    if not isinstance(agg, GramianWeighting):
        raise TypeError(f"min_norm_kkt is a property of Gramian weightings; {agg!r} is not one")
    if (jacobian is None) == (gramian is None):
        raise TypeError("pass exactly one of jacobian= and gramian=")
    if gramian is None:
        assert jacobian is not None
        gram = _f64(gramian_of(jacobian))
    else:
        gram = np.asarray(torch.as_tensor(gramian).to("cpu", torch.float64).numpy())
    w = np.asarray(_snapshot(agg).weights(np.ascontiguousarray(gram)), dtype=np.float64)
    _check_kkt(agg, gram, w, tol)
    return w


# -- directions -------------------------------------------------------------------------


def _check_non_conflicting(
    agg: object,
    jac: np.ndarray,
    d: np.ndarray,
    w: np.ndarray | None,
    rtol: float,
    where: str = "",
) -> None:
    norms = np.linalg.norm(jac, axis=1)
    bound = rtol * norms * _magnitude(jac, d, w)
    jd = jac @ d
    excess = jd + bound
    i = int(np.argmin(excess))
    if excess[i] < 0:
        raise PropertyViolation(
            "non_conflicting",
            agg,
            f"gradient {i}·d = {jd[i]:.6g} < -{bound[i]:.3g} (J·d = {jd}, d = {d})",
            where,
        )


def assert_non_conflicting(
    agg: Callable[..., torch.Tensor],
    jacobian: torch.Tensor,
    losses: torch.Tensor | None = None,
    *,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> torch.Tensor:
    """``gᵢ·d ≥ −rtol·‖gᵢ‖·M`` for every objective ``i``: no objective gets worse to first
    order along ``d``. Returns the direction."""
    snap = _snapshot(agg) if isinstance(agg, Aggregator) else agg
    w = None
    if _has_weights(snap):
        assert isinstance(snap, Aggregator)
        w = weights_of(_snapshot(snap), jacobian, _losses_for(snap, jacobian, losses))
    direction = direction_of(snap, jacobian, _losses_for(snap, jacobian, losses))
    assert_valid_output(agg, jacobian, direction)
    _check_non_conflicting(agg, _f64(jacobian), _f64(direction), w, tol.for_dtype(jacobian.dtype))
    return direction


def assert_non_differentiable(
    agg: Callable[..., torch.Tensor],
    jacobian: torch.Tensor,
    losses: torch.Tensor | None = None,
) -> torch.Tensor:
    """Called on a Jacobian (and losses) that require grad, the output carries no graph."""
    snap = _snapshot(agg) if isinstance(agg, Aggregator) else agg
    jac = jacobian.detach().clone().requires_grad_(True)
    loss = None
    if losses is not None:
        loss = losses.detach().clone().to(torch.float64).requires_grad_(True)
    direction = direction_of(snap, jac, _losses_for(snap, jac, loss))
    _check_no_graph(agg, direction)
    return direction


def _check_no_graph(agg: object, direction: torch.Tensor, where: str = "") -> None:
    if direction.requires_grad or direction.grad_fn is not None:
        raise PropertyViolation(
            "non_differentiable",
            agg,
            f"the output has a graph (grad_fn={direction.grad_fn}); a gradient through it would "
            "treat the weights as constants: decide them under torch.no_grad()",
            where,
        )
