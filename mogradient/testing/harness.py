"""The harness of the property checks: violations and tolerances, factories and fresh
instances, reading an aggregator's weights and direction, and steps of inputs.

The checks are one ``assert_*`` per :data:`~mogradient.aggregators.Property` (listed once in
the property table, :mod:`mogradient.testing.properties`) and :func:`check_claims`
(:mod:`mogradient.testing.claims`), which checks every claim of an instance.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from mogradient.aggregation.gramian import gramian_of
from mogradient.aggregation.kinds import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    LossWeighting,
)
from mogradient.aggregation.preference import Preference
from mogradient.testing._function import direction_function

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
            f"{agg!r} exposes no weights (a JacobianWeighting gives only its direction): "
            "subclass GramianWeighting, LossWeighting or AdvantageCombiner"
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


# -- output and steps ------------------------------------------------------------------------------


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
