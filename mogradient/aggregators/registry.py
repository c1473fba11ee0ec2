"""Former import path of the registry, now :mod:`mogradient.aggregation.registry`; re-exported
so that existing imports keep working."""

from mogradient.aggregation.registry import (
    aliases_of,
    available_aggregators,
    discover,
    get_aggregator,
    register,
    registered,
)

__all__ = [
    "aliases_of",
    "available_aggregators",
    "discover",
    "get_aggregator",
    "register",
    "registered",
]
