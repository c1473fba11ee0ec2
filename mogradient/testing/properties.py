"""Property checks for aggregators: one ``assert_*`` per :data:`~mogradient.aggregators.Property`
and :func:`check_claims`, which checks every claim of an instance.

Each check raises :class:`PropertyViolation` (an ``AssertionError``, so pytest reports it as a
failed assertion) naming the property, the aggregator, the worst offending entry, its value and
the tolerance. The checks need neither hypothesis nor pytest.

**Instances and factories.** Checks on one call (``assert_simplex_weights``,
``assert_non_conflicting``, ``assert_min_norm_kkt``, ``assert_non_differentiable``) run on a
deep copy of the instance you pass, in its current state: your instance is never advanced.
Checks that compare runs start from fresh instances made by a factory: pass a zero-argument
callable, or an instance, whose class is then called with its ``_hyperparameters()`` as keyword
arguments (a :class:`Preference` is passed as its values). Determinism compares two fresh
instances; ``reset()`` one instance before and after; permutation and scale compare a fresh
instance with a deep copy of it taken before either runs, so a method drawing random numbers
sees the same draws in both runs (a method without a seed can still be scale-equivariant).

**Tolerances** (:class:`Tolerance`) scale with the input's magnitude and dtype: a quantity
computed from a direction ``d`` is compared within ``rtol[dtype] · M`` where
``M = max(maxⱼ‖gⱼ‖, ‖d‖, Σⱼ|wⱼ|‖gⱼ‖)`` (the last term when the method exposes weights: it bounds
the rounding of ``wᵀJ``), times ``‖gᵢ‖`` for an inner product ``gᵢ·d``. Weights are float64 and
dimensionless: ``weight_atol``. The min-norm KKT conditions are in Gramian units:
``kkt_rtol · maxᵢ Gᵢᵢ``. Determinism and ``reset()`` are exact by default (``atol=0``): the same
computation must give the same bits. See ``docs/testing.md``.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

import numpy as np
import torch

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.kinds import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    LossWeighting,
    Property,
)
from mogradient.aggregation.preference import Preference
from mogradient.testing._function import DirectionFunction, direction_function

#: Every property name a method may claim (the :data:`Property` literal).
PROPERTIES: tuple[Property, ...] = get_args(Property)

AggregatorOrFactory = Aggregator | Callable[[], Aggregator]
A = TypeVar("A")
Steps = torch.Tensor | Sequence[torch.Tensor]


class PropertyViolation(AssertionError):
    """A claimed property does not hold on the given input."""

    def __init__(self, prop: str, agg: object, detail: str, where: str = "") -> None:
        self.property = prop
        self.aggregator = agg
        self.detail = detail
        location = f" ({where})" if where else ""
        super().__init__(f"{agg!r} violates {prop!r}{location}: {detail}")


_DEFAULT_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-7,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


@dataclass(frozen=True)
class Tolerance:
    """Tolerances of the checks (see the module docstring for where each applies).

    Args:
        rtol: relative tolerance of directions per Jacobian dtype. float64: 1e-7 (an exact
            active-set solve reaches ~1e-16 in its objective, which is ~1e-8 in the direction,
            the square root); float32: 1e-4 (the weights are cast to float32 and combined in
            float32, ~n·6e-8 per entry, with room for ill-conditioned inputs).
        weight_atol: absolute tolerance on float64 weights (``w ≥ −atol``, ``|Σw − 1| ≤ atol``).
        kkt_rtol: the min-norm KKT residuals, relative to the largest diagonal entry of ``G``.
    """

    rtol: Mapping[torch.dtype, float] = field(default_factory=lambda: dict(_DEFAULT_RTOL))
    weight_atol: float = 1e-9
    kkt_rtol: float = 1e-8

    def for_dtype(self, dtype: torch.dtype) -> float:
        """The direction tolerance for a Jacobian of ``dtype``."""
        if dtype in self.rtol:
            return self.rtol[dtype]
        return max(self.rtol.values())


DEFAULT_TOLERANCE = Tolerance()


# -- instances, factories and calls --------------------------------------------------------


def make_factory(agg_or_factory: AggregatorOrFactory) -> Callable[[], Aggregator]:
    """A zero-argument callable returning fresh instances.

    A factory is returned as it is. A plain function of the Jacobian (``lambda J: J.mean(0)``,
    ``f(J, losses)``) is wrapped as a :class:`DirectionFunction`: it claims nothing, exposes no
    weights and keeps no state. For an instance, its class is called with the instance's
    ``_hyperparameters()`` as keyword arguments (a :class:`Preference` is passed as its values);
    if that fails, or if the rebuilt instance's ``repr`` differs, a ``TypeError`` asks for a
    factory.
    """
    if not isinstance(agg_or_factory, Aggregator):
        if not callable(agg_or_factory):
            raise TypeError(
                f"expected an Aggregator instance, a zero-argument factory returning one, or a "
                f"function of the Jacobian returning the direction, got {agg_or_factory!r}"
            )
        wrapped = direction_function(agg_or_factory)
        if wrapped is not None:
            return lambda: wrapped
        return agg_or_factory
    agg = agg_or_factory
    cls = type(agg)
    kwargs = {k: _as_argument(v) for k, v in agg._hyperparameters().items()}
    try:
        inspect.signature(cls).bind(**kwargs)
        rebuilt = cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"cannot rebuild {agg!r} from its _hyperparameters() ({error}); pass a factory "
            f"instead, e.g. lambda: {cls.__name__}(...)"
        ) from error
    if repr(rebuilt) != repr(agg):
        raise TypeError(
            f"rebuilding {agg!r} from its _hyperparameters() gave {rebuilt!r}; pass a factory "
            f"instead, e.g. lambda: {cls.__name__}(...)"
        )

    def factory() -> Aggregator:
        return cls(**kwargs)

    return factory


def _as_argument(value: object) -> object:
    if isinstance(value, Preference):
        return None if value.values is None else value.values.tolist()
    return value


def _fresh(factory: Callable[[], Aggregator]) -> Aggregator:
    agg = factory()
    if isinstance(agg, Aggregator):
        return agg
    wrapped = direction_function(agg)
    if wrapped is None:
        raise TypeError(
            f"the factory returned {agg!r}, which is neither an Aggregator nor a function of the "
            "Jacobian (agg(jacobian) -> direction)"
        )
    return wrapped


def _snapshot(agg: A) -> A:
    """A deep copy in the same state (the instance itself if it cannot be copied: the single-
    call checks then advance it)."""
    try:
        return copy.deepcopy(agg)
    except Exception:  # noqa: BLE001 - an uncopyable instance is checked in place
        return agg


def _copy(agg: A) -> A:
    """A deep copy in the same state, for reading weights without advancing ``agg``: where the
    weights and the direction of one step come from two calls, both must start from the same
    state."""
    try:
        return copy.deepcopy(agg)
    except Exception as error:
        raise TypeError(
            f"the checks read each step's weights from a copy of {agg!r}, but copy.deepcopy "
            f"failed ({error}); make the aggregator deep-copyable (define __deepcopy__)"
        ) from error


def _twin(agg: Aggregator, factory: Callable[[], Aggregator]) -> Aggregator:
    """A second instance in the same state as the fresh ``agg`` (random streams included), so
    that comparisons between runs see the same random draws; a new fresh instance if ``agg``
    cannot be copied."""
    try:
        return copy.deepcopy(agg)
    except Exception:  # noqa: BLE001
        return _fresh(factory)


def _losses_for(agg: object, jacobian: torch.Tensor, losses: torch.Tensor | None) -> Any:
    if losses is None and getattr(agg, "uses_loss_values", False):
        raise ValueError(
            f"{agg!r} decides from the loss values: pass losses=... (one positive value per "
            "objective; mogradient.testing.loss_values draws them)"
        )
    if losses is not None and losses.shape != (jacobian.shape[0],):
        raise ValueError(
            f"got {tuple(losses.shape)} loss values for a Jacobian with {jacobian.shape[0]} rows"
        )
    return losses


def direction_of(
    agg: Callable[..., torch.Tensor], jacobian: torch.Tensor, losses: torch.Tensor | None = None
) -> torch.Tensor:
    """``agg(jacobian)`` or ``agg(jacobian, losses)`` (only when losses are given)."""
    if losses is None:
        return agg(jacobian)
    return agg(jacobian, losses)


def weights_of(
    agg: Aggregator, jacobian: torch.Tensor, losses: torch.Tensor | None = None
) -> np.ndarray:
    """The weights ``agg`` decides for this input, as float64 numpy.

    ``GramianWeighting``: ``weights(gramian_of(J))`` ``[n]`` (with the losses for a method
    that reads them, ``uses_loss_values``); ``LossWeighting``:
    ``weights(losses)`` ``[n]`` (zeros when it does not use loss values); ``AdvantageCombiner``:
    ``combine(J).weights``, ``[n]`` or ``[n, d]`` (one simplex per coordinate). Advances the
    instance's state like a call would.
    """
    if isinstance(agg, GramianWeighting):
        if agg.uses_loss_values:
            _losses_for(agg, jacobian, losses)
            w = agg.weights(gramian_of(jacobian), None if losses is None else losses.detach())
        else:
            w = agg.weights(gramian_of(jacobian))
    elif isinstance(agg, LossWeighting):
        if losses is None:
            if agg.uses_loss_values:
                _losses_for(agg, jacobian, losses)
            losses = torch.zeros(jacobian.shape[0], dtype=torch.float64)
        w = agg.weights(losses.detach())
    elif isinstance(agg, AdvantageCombiner):
        with torch.no_grad():
            w = agg.combine(jacobian.detach()).weights
    else:
        raise TypeError(
            f"{agg!r} exposes no weights: subclass GramianWeighting, LossWeighting or "
            "AdvantageCombiner"
        )
    return np.asarray(torch.as_tensor(w).detach().to("cpu", torch.float64).numpy())


def _has_weights(agg: object) -> bool:
    return isinstance(agg, (GramianWeighting, LossWeighting, AdvantageCombiner))


def _f64(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().to("cpu", torch.float64).numpy())


def _magnitude(jac: np.ndarray, d: np.ndarray, w: np.ndarray | None) -> float:
    """``M = max(maxⱼ‖gⱼ‖, ‖d‖, Σⱼ|wⱼ|‖gⱼ‖)``: the size of what rounding in ``wᵀJ`` touches."""
    norms = np.linalg.norm(jac, axis=1)
    m = max(float(norms.max(initial=0.0)), float(np.linalg.norm(d)))
    if w is not None and w.shape[:1] == norms.shape:
        spread = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        m = max(m, float(spread @ norms))
    return m


# -- output ------------------------------------------------------------------------------


def assert_valid_output(agg: object, jacobian: torch.Tensor, direction: torch.Tensor) -> None:
    """The direction is a finite tensor ``[d]`` in the Jacobian's dtype (checked by
    :func:`check_claims` on every call, whatever the claims)."""
    if not isinstance(direction, torch.Tensor):
        raise PropertyViolation("output", agg, f"returned {type(direction).__name__}, not a tensor")
    if direction.shape != (jacobian.shape[1],):
        raise PropertyViolation(
            "output",
            agg,
            f"returned shape {tuple(direction.shape)} for a Jacobian {tuple(jacobian.shape)}; "
            f"expected ({jacobian.shape[1]},)",
        )
    if direction.dtype != jacobian.dtype:
        raise PropertyViolation(
            "output", agg, f"returned {direction.dtype} for a {jacobian.dtype} Jacobian"
        )
    if not bool(torch.isfinite(direction).all()):
        raise PropertyViolation("output", agg, f"returned a non-finite direction {direction}")


# -- weights ----------------------------------------------------------------------------


def _check_finite_weights(agg: object, w: np.ndarray, where: str = "") -> None:
    """Weights with NaN or ±inf void every claim about them: reported as such, whatever the
    claims (checked by :func:`check_claims` on every step of a method that has weights)."""
    bad = ~np.isfinite(w)
    if bad.any():
        kinds = " and ".join(k for k, m in (("NaN", np.isnan(w)), ("±inf", np.isinf(w))) if m.any())
        at = [tuple(int(x) for x in i) if w.ndim > 1 else int(i[0]) for i in np.argwhere(bad)]
        raise PropertyViolation(
            "finite_weights",
            agg,
            f"the weights are {kinds} at {at[:8]}{' ...' if len(at) > 8 else ''} (weights {w}); "
            "a division by zero or a log of 0 in the method, or an input it cannot handle",
            where,
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


# -- comparisons between runs -----------------------------------------------------------


def _as_steps(
    jacobian: Steps, losses: torch.Tensor | Sequence[torch.Tensor] | None
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    jacs = [jacobian] if isinstance(jacobian, torch.Tensor) else list(jacobian)
    if not jacs:
        raise ValueError("give at least one Jacobian")
    if losses is None:
        loss_list: list[torch.Tensor | None] = [None] * len(jacs)
    elif isinstance(losses, torch.Tensor):
        if len(jacs) != 1:
            raise ValueError(f"{len(jacs)} Jacobians but one tensor of losses: give one per step")
        loss_list = [losses]
    else:
        loss_list = list(losses)
        if len(loss_list) != len(jacs):
            raise ValueError(f"{len(jacs)} Jacobians but {len(loss_list)} loss vectors")
    n = jacs[0].shape[0]
    for j in jacs:
        if j.ndim != 2 or j.shape[0] != n:
            raise ValueError(
                f"every step needs a Jacobian [n, d] with the same n; got {tuple(j.shape)} "
                f"after n = {n}"
            )
    return list(zip(jacs, loss_list, strict=True))


def _run(
    agg: Aggregator, steps: list[tuple[torch.Tensor, torch.Tensor | None]]
) -> list[torch.Tensor]:
    out = []
    for jac, loss in steps:
        out.append(direction_of(agg, jac, _losses_for(agg, jac, loss)).detach().clone())
    return out


#: What a difference between two runs of the same inputs means, by property.
_SAME_MEANS = {
    "deterministic": (
        "two fresh instances with the same hyper-parameters give different outputs at step {t}",
        "a random stream without a fixed seed, or state shared between instances (a class "
        "attribute, a global)",
    ),
    "reset_restores": (
        "state not restored by reset(): the call at step {t} after reset() differs from the "
        "same call before it",
        "state carried between calls (a history, a running average, a random stream, a warm "
        "start) that reset() does not restore",
    ),
}


def _check_same(
    prop: str, agg: object, first: list[torch.Tensor], second: list[torch.Tensor], atol: float
) -> None:
    """The runs must agree bit for bit (``atol = 0``: the same inputs give the same bits, so a
    difference of any size, 1e-19 included, is a state bug, not rounding)."""
    what, cause = _SAME_MEANS[prop]
    for t, (a, b) in enumerate(zip(first, second, strict=True)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise PropertyViolation(
                prop,
                agg,
                f"{what.format(t=t)}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}",
            )
        if atol == 0.0:
            same = torch.equal(a, b)
        else:
            same = bool((a.double() - b.double()).abs().max() <= atol) if a.numel() else True
        if not same:
            diff = (a.double() - b.double()).abs().nan_to_num(nan=math.inf).flatten()
            j = int(diff.argmax())
            compared = "compared bit for bit" if atol == 0.0 else f"tolerance {atol:g}"
            raise PropertyViolation(
                prop,
                agg,
                f"{what.format(t=t)} ({compared}; the inputs are the same, so any difference "
                f"is not rounding): coordinate {j} is {float(a.flatten()[j])!r} then "
                f"{float(b.flatten()[j])!r} (difference {float(diff[j]):.3g}); likely cause: "
                f"{cause}. First run {a}, second run {b}",
            )


def assert_deterministic(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    atol: float = 0.0,
) -> list[torch.Tensor]:
    """Two fresh instances (same hyper-parameters and seed) give the same outputs on the same
    sequence of inputs (``jacobians``: one tensor or a list of steps). Returns the outputs."""
    factory = make_factory(agg_or_factory)
    steps = _as_steps(jacobians, losses)
    first = _run(_fresh(factory), steps)
    second_agg = _fresh(factory)
    _check_same("deterministic", second_agg, first, _run(second_agg, steps), atol)
    return first


def assert_reset_restores(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    atol: float = 0.0,
) -> list[torch.Tensor]:
    """After running a sequence and calling ``reset()``, the same sequence gives the same
    outputs again (the first output included). Returns the outputs."""
    agg = _fresh(make_factory(agg_or_factory))
    steps = _as_steps(jacobians, losses)
    first = _run(agg, steps)
    agg.reset()
    _check_same("reset_restores", agg, first, _run(agg, steps), atol)
    return first


def _default_permutation(n: int) -> list[int]:
    """A permutation that moves every objective when n ≥ 2 (a rotation by one)."""
    return [*range(1, n), 0] if n > 1 else [0]


def _permute(
    steps: list[tuple[torch.Tensor, torch.Tensor | None]], perm: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [(j[perm], None if loss is None else loss[perm]) for j, loss in steps]


def _well_conditioned(jac: np.ndarray) -> bool:
    s = np.linalg.svd(jac, compute_uv=False)
    return s.size == jac.shape[0] and s.size > 0 and s[-1] >= 1e-4 * s[0] > 0


def _compare_permuted(
    agg: Aggregator,
    steps: list[tuple[torch.Tensor, torch.Tensor | None]],
    perm: list[int],
    reference: list[torch.Tensor],
    reference_weights: list[np.ndarray | None],
    tol: Tolerance,
) -> None:
    """Runs ``agg`` (fresh) on the permuted steps and compares with the reference run."""
    for t, (jac, loss) in enumerate(_permute(steps, perm)):
        w_ref = reference_weights[t]
        jac64 = _f64(steps[t][0])
        # Loss weights must follow the permutation; a Gramian method's weights only where the
        # Jacobian determines them (full row rank, well conditioned), else only d is defined;
        # a combiner's per-coordinate weights are not compared.
        compare_weights = (
            w_ref is not None
            and not isinstance(agg, AdvantageCombiner)
            and not (isinstance(agg, GramianWeighting) and not _well_conditioned(jac64))
        )
        w = weights_of(_copy(agg), jac, _losses_for(agg, jac, loss)) if compare_weights else None
        d = direction_of(agg, jac, _losses_for(agg, jac, loss)).detach()
        d_ref = _f64(reference[t])
        bound = tol.for_dtype(jac.dtype) * _magnitude(jac64, d_ref, w_ref)
        gap = float(np.linalg.norm(_f64(d) - d_ref))
        where = f"step {t}, permutation {perm}"
        if not gap <= bound:
            raise PropertyViolation(
                "permutation_invariant",
                agg,
                f"the direction moved by {gap:.3g} > {bound:.3g}: {d_ref} vs {_f64(d)}",
                where,
            )
        if w is None or w_ref is None:
            continue
        expected = w_ref[perm]
        wgap = float(np.max(np.abs(w - expected))) if w.size else 0.0
        # float64 weights: rtol(float64); a Gramian solve amplifies rounding by up to the
        # condition number of G (≤ 1e8 here), hence 1e3 × that for Gramian weightings
        relative = tol.for_dtype(torch.float64)
        if isinstance(agg, GramianWeighting):
            relative *= 1e3
        wbound = tol.weight_atol + relative * float(np.abs(expected).max())
        if not wgap <= wbound:
            raise PropertyViolation(
                "permutation_invariant",
                agg,
                f"weights {w} are not the permuted {expected} (gap {wgap:.3g} > {wbound:.3g})",
                where,
            )


def assert_permutation_invariant(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    permutation: Sequence[int] | None = None,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> None:
    """Permuting the objectives (rows of every step's Jacobian and losses alike) gives the
    same direction, within ``rtol·M``, and weights permuted alike (loss weightings always;
    Gramian weightings where the Jacobian has full row rank with σ_min ≥ 1e-4·σ_max, since
    otherwise several weight vectors give the same direction). Default permutation: a
    rotation by one, which moves every objective."""
    factory = make_factory(agg_or_factory)
    steps = _as_steps(jacobians, losses)
    n = steps[0][0].shape[0]
    perm = list(permutation) if permutation is not None else _default_permutation(n)
    if sorted(perm) != list(range(n)):
        raise ValueError(f"{perm} is not a permutation of range({n})")
    agg = _fresh(factory)
    twin = _twin(agg, factory)
    reference: list[torch.Tensor] = []
    reference_weights: list[np.ndarray | None] = []
    for jac, loss in steps:
        w = weights_of(_copy(agg), jac, _losses_for(agg, jac, loss)) if _has_weights(agg) else None
        reference_weights.append(w)
        reference.append(direction_of(agg, jac, _losses_for(agg, jac, loss)).detach())
    _compare_permuted(twin, steps, perm, reference, reference_weights, tol)


def _scale_steps(
    steps: list[tuple[torch.Tensor, torch.Tensor | None]], factor: float
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [((j.to(torch.float64) * factor).to(j.dtype), loss) for j, loss in steps]


def _compare_scaled(
    agg: Aggregator,
    steps: list[tuple[torch.Tensor, torch.Tensor | None]],
    factor: float,
    reference: list[torch.Tensor],
    reference_weights: list[np.ndarray | None],
    tol: Tolerance,
) -> None:
    scaled = _scale_steps(steps, factor)
    for t, (jac, loss) in enumerate(scaled):
        d = _f64(direction_of(agg, jac, _losses_for(agg, jac, loss)))
        expected = factor * _f64(reference[t])
        if not np.isfinite(d).all():
            raise PropertyViolation(
                "scale_equivariant", agg, f"non-finite output {d} at factor {factor:g}", f"step {t}"
            )
        bound = (
            tol.for_dtype(jac.dtype)
            * factor
            * _magnitude(_f64(steps[t][0]), _f64(reference[t]), reference_weights[t])
        )
        gap = float(np.linalg.norm(d - expected))
        if not gap <= bound:
            raise PropertyViolation(
                "scale_equivariant",
                agg,
                f"A({factor:g}·J) − {factor:g}·A(J) has norm {gap:.3g} > {bound:.3g}: "
                f"{d} vs {expected}",
                f"step {t}",
            )


def assert_scale_equivariant(
    agg_or_factory: AggregatorOrFactory,
    jacobians: Steps,
    losses: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    factor: float = 2.0**20,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> None:
    """``A(a·J) = a·A(J)`` for ``a = factor > 0`` (losses unchanged), within ``a·rtol·M``.

    The default factor is a power of two, so the scaled input is exact in any binary float
    format and only the method's own arithmetic is tested; pass other factors to include the
    rounding of the scaled input as well."""
    if not factor > 0 or not np.isfinite(factor):
        raise ValueError(f"factor must be finite and > 0, got {factor!r}")
    factory = make_factory(agg_or_factory)
    steps = _as_steps(jacobians, losses)
    agg = _fresh(factory)
    twin = _twin(agg, factory)
    reference = []
    reference_weights: list[np.ndarray | None] = []
    for jac, loss in steps:
        w = weights_of(_copy(agg), jac, _losses_for(agg, jac, loss)) if _has_weights(agg) else None
        reference_weights.append(w)
        reference.append(direction_of(agg, jac, _losses_for(agg, jac, loss)).detach())
    _compare_scaled(twin, steps, factor, reference, reference_weights, tol)


# -- every claim at once ------------------------------------------------------------------

#: Properties checked on each call's weights or direction.
_PER_CALL = frozenset(
    {
        "simplex_weights",
        "non_negative_weights",
        "min_norm_kkt",
        "non_conflicting",
        "non_differentiable",
    }
)


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
    if "min_norm_kkt" in claimed and not isinstance(agg, GramianWeighting):
        raise TypeError(f"{agg!r} claims min_norm_kkt but is not a GramianWeighting")
    need_weights = _has_weights(agg)
    on_weights = sorted(claimed & {"simplex_weights", "non_negative_weights"})
    if on_weights and not need_weights:
        raise TypeError(
            f"{agg!r} exposes no weights, so {on_weights} cannot be checked on it"
            + (
                " (a plain function gives only its direction)"
                if isinstance(agg, DirectionFunction)
                else ""
            )
            + "; drop them from claims=, or subclass GramianWeighting or LossWeighting"
        )
    steps = _as_steps(jacobian, losses)
    n = steps[0][0].shape[0]
    perm_twin = _twin(agg, factory) if "permutation_invariant" in claimed and n > 1 else None
    scale_twin = _twin(agg, factory) if "scale_equivariant" in claimed else None
    outputs: list[torch.Tensor] = []
    weights: list[np.ndarray | None] = []
    graph = "non_differentiable" in claimed
    for t, (jac, loss) in enumerate(steps):
        where = f"step {t}" if len(steps) > 1 else ""
        loss = _losses_for(agg, jac, loss)
        w = weights_of(_copy(agg), jac, loss) if need_weights else None
        weights.append(w)
        if w is not None:
            _check_finite_weights(agg, w, where)
            if "simplex_weights" in claimed:
                _check_simplex(agg, w, tol, where)
            if "non_negative_weights" in claimed:
                _check_non_negative(agg, w, tol, where)
            if "min_norm_kkt" in claimed:
                _check_kkt(agg, _f64(gramian_of(jac)), w, tol, where)
        if graph:
            jac_in = jac.detach().clone().requires_grad_(True)
            loss_in = None if loss is None else loss.detach().clone().requires_grad_(True)
            d = direction_of(agg, jac_in, loss_in)
            _check_no_graph(agg, d, where)
            d = d.detach()
        else:
            d = direction_of(agg, jac, loss)
        assert_valid_output(agg, jac, d)
        if "non_conflicting" in claimed:
            _check_non_conflicting(agg, _f64(jac), _f64(d), w, tol.for_dtype(jac.dtype), where)
        outputs.append(d.detach().clone())
    if "deterministic" in claimed:
        other = _fresh(factory)
        _check_same("deterministic", other, outputs, _run(other, steps), 0.0)
    if "reset_restores" in claimed:
        agg.reset()
        _check_same("reset_restores", agg, outputs, _run(agg, steps), 0.0)
    if perm_twin is not None:
        perm = list(permutation) if permutation is not None else _default_permutation(n)
        if sorted(perm) != list(range(n)):
            raise ValueError(f"{perm} is not a permutation of range({n})")
        _compare_permuted(perm_twin, steps, perm, outputs, weights, tol)
    if scale_twin is not None:
        _compare_scaled(scale_twin, steps, factor, outputs, weights, tol)
    return claimed


#: The check of each property, by name (each takes ``(agg_or_factory, jacobian, losses)``).
CHECKS: dict[str, Callable[..., object]] = {
    "simplex_weights": assert_simplex_weights,
    "non_negative_weights": assert_non_negative_weights,
    "non_conflicting": assert_non_conflicting,
    "permutation_invariant": assert_permutation_invariant,
    "scale_equivariant": assert_scale_equivariant,
    "min_norm_kkt": lambda agg, jacobian, losses=None, **kw: assert_min_norm_kkt(
        agg, jacobian, **kw
    ),
    "deterministic": assert_deterministic,
    "reset_restores": assert_reset_restores,
    "non_differentiable": assert_non_differentiable,
}
