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
    LossWeighting,
)

T = TypeVar("T")


def dispatch(
    aggregator: Aggregator,
    *,
    gramian: Callable[[GramianWeighting], T],
    losses: Callable[[LossWeighting], T],
    advantages: Callable[[AdvantageCombiner], T],
) -> T:
    """Call the handler for ``aggregator``'s kind with the aggregator (typed as that kind)."""
    if isinstance(aggregator, GramianWeighting):
        return gramian(aggregator)
    if isinstance(aggregator, LossWeighting):
        return losses(aggregator)
    if isinstance(aggregator, AdvantageCombiner):
        return advantages(aggregator)
    raise TypeError(
        f"{aggregator!r} is not a GramianWeighting, LossWeighting or AdvantageCombiner; "
        "subclass one of the three kinds in mogradient.aggregators"
    )
