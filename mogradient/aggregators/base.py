"""Former import path of the three kinds: they live in :mod:`mogradient.aggregation.kinds`
(and the Gramian in :mod:`mogradient.aggregation.gramian`); re-exported so that existing
imports keep working. New code imports :mod:`mogradient.aggregation`."""

from mogradient.aggregation.gramian import gramian_of, scaled_gramian
from mogradient.aggregation.kinds import (
    AdvantageCombiner,
    Aggregator,
    AllReduceSum,
    Combination,
    GramianWeighting,
    LossWeighting,
    Property,
)

__all__ = [
    "AdvantageCombiner",
    "Aggregator",
    "AllReduceSum",
    "Combination",
    "GramianWeighting",
    "LossWeighting",
    "Property",
    "gramian_of",
    "scaled_gramian",
]
