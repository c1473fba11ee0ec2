"""One small module per aggregation method; a registry maps names to classes."""

from mogradient.aggregators.base import (
    Aggregator,
    CoefficientAggregator,
    GramianWeighting,
    LossWeighting,
    WeightedAggregator,
    gramian_of,
)
from mogradient.aggregators.cagrad import CAGrad
from mogradient.aggregators.linear import Linear
from mogradient.aggregators.mean import Mean
from mogradient.aggregators.mgda import MGDA
from mogradient.aggregators.pama import PAMA, pama_weights
from mogradient.aggregators.pcgrad import PCGrad
from mogradient.aggregators.registry import available_aggregators, get_aggregator, register

__all__ = [
    "CAGrad",
    "MGDA",
    "PAMA",
    "PCGrad",
    "Aggregator",
    "CoefficientAggregator",
    "GramianWeighting",
    "Linear",
    "LossWeighting",
    "Mean",
    "WeightedAggregator",
    "available_aggregators",
    "get_aggregator",
    "gramian_of",
    "pama_weights",
    "register",
]
