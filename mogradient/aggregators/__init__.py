"""One small module per aggregation method, found by the registry without further edits.

The four kinds are base classes (:mod:`mogradient.aggregation.kinds`); every registered class is
also reachable as an attribute, ``mogradient.aggregators.MGDA`` (and ``mogradient.MGDA``).
"""

from mogradient.aggregation import (
    AdvantageCombiner,
    Aggregator,
    Combination,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
    Preference,
    Property,
    available_aggregators,
    discover,
    dispatch,
    get_aggregator,
    gramian_of,
    register,
    registered,
    scaled_gramian,
)

discover()


def __getattr__(name: str) -> type[Aggregator]:
    """A registered method's class by its class name (``MGDA``, ``UPGrad``, ...)."""
    for cls in registered().values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'mogradient.aggregators' has no attribute {name!r}")


__all__ = [
    "AdvantageCombiner",
    "Aggregator",
    "Combination",
    "GramianWeighting",
    "JacobianWeighting",
    "LossWeighting",
    "Preference",
    "Property",
    "available_aggregators",
    "discover",
    "dispatch",
    "get_aggregator",
    "gramian_of",
    "register",
    "registered",
    "scaled_gramian",
]
