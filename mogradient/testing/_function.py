"""A plain function ``f(J)`` (or ``f(J, losses)``) seen as an aggregator by the checks."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from mogradient.aggregation.kinds import Aggregator


class DirectionFunction(Aggregator):
    """Wraps a function that returns the direction ``[d]`` for a Jacobian ``[n, d]``.

    It claims nothing (pass ``claims=`` to :func:`~mogradient.testing.check_claims`), exposes no
    weights (so the weight properties do not apply to it) and keeps no state (``reset()`` does
    nothing). The losses are passed when given and the function takes a second argument; a
    function that requires them (``f(J, losses)``) ``uses_loss_values``, so the checks ask for
    them.
    """

    def __init__(
        self, fn: Callable[..., torch.Tensor], takes_losses: bool, uses_loss_values: bool
    ) -> None:
        self.fn = fn
        self.takes_losses = takes_losses
        self.uses_loss_values = uses_loss_values

    def __call__(self, jacobian: torch.Tensor, losses: torch.Tensor | None = None) -> torch.Tensor:
        if losses is not None and self.takes_losses:
            return self.fn(jacobian, losses)
        return self.fn(jacobian)

    def __repr__(self) -> str:
        return f"function {getattr(self.fn, '__qualname__', repr(self.fn))}"


def direction_function(fn: object) -> DirectionFunction | None:
    """``fn`` wrapped when it is a plain function of the Jacobian (it cannot be called with no
    argument but can with one or two); ``None`` when it is a factory, a class or not
    inspectable."""
    if isinstance(fn, type) or not callable(fn):
        return None
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    one, two = _binds(signature, 1), _binds(signature, 2)
    if _binds(signature, 0) or not (one or two):
        return None
    return DirectionFunction(fn, takes_losses=two, uses_loss_values=not one)


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True
