"""The one place that switches on a method's kind.

``mogradient.backward`` and the RL adapter hand :func:`dispatch` one handler per kind and get
back what the matching handler returns; nothing else in the code base inspects kinds or names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mogradient.aggregation.kinds import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
)

T = TypeVar("T")


def dispatch(
    aggregator: Aggregator,
    *,
    gramian: Callable[[GramianWeighting], T],
    losses: Callable[[LossWeighting], T],
    advantages: Callable[[AdvantageCombiner], T],
    jacobian: Callable[[JacobianWeighting], T] | None = None,
) -> T:
    """Call the handler for ``aggregator``'s kind with the aggregator (typed as that kind).

    A caller that cannot give what a :class:`JacobianWeighting` needs (the k×d Jacobian over the
    parameters, every step) passes no ``jacobian`` handler: such a method is then refused with a
    ``ValueError`` that says so."""
    if isinstance(aggregator, GramianWeighting):
        return gramian(aggregator)
    if isinstance(aggregator, LossWeighting):
        return losses(aggregator)
    if isinstance(aggregator, AdvantageCombiner):
        return advantages(aggregator)
    if isinstance(aggregator, JacobianWeighting):
        if jacobian is None:
            raise ValueError(
                f"{aggregator!r} decides from the k×d Jacobian over the parameters and keeps "
                "state in that space, which this caller does not provide; call "
                "mogradient.backward in parameter mode (no features=, no recorder=) or pick "
                "another kind of method"
            )
        return jacobian(aggregator)
    raise TypeError(
        f"{aggregator!r} is not a GramianWeighting, LossWeighting, AdvantageCombiner or "
        "JacobianWeighting; subclass one of the four kinds in mogradient.aggregators"
    )
