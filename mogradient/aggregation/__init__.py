"""The aggregation framework: the four kinds of method (base classes, ``kinds``), the
``registry``, the one ``dispatch`` on kind, the ``preference`` vector, the ``gramian``, the
checks of inputs (Jacobians, Gramians, loss values: ``inputs``) and of hyper-parameters
(``checks``) that the methods share.

The methods themselves live in :mod:`mogradient.aggregators`, one module each; this package
never imports them (the registry finds them on :func:`discover`).
"""

from mogradient.aggregation.cross_gramian import CrossGramianWeighting
from mogradient.aggregation.dispatch import dispatch
from mogradient.aggregation.gramian import gramian_of, scaled_gramian
from mogradient.aggregation.kinds import (
    AdvantageCombiner,
    Aggregator,
    AllReduceSum,
    Combination,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
    Property,
)
from mogradient.aggregation.preference import Preference, PreferenceAware
from mogradient.aggregation.registry import (
    aliases_of,
    available_aggregators,
    discover,
    get_aggregator,
    register,
    registered,
)

__all__ = [
    "AdvantageCombiner",
    "Aggregator",
    "AllReduceSum",
    "Combination",
    "CrossGramianWeighting",
    "GramianWeighting",
    "JacobianWeighting",
    "LossWeighting",
    "Preference",
    "PreferenceAware",
    "Property",
    "aliases_of",
    "available_aggregators",
    "discover",
    "dispatch",
    "get_aggregator",
    "gramian_of",
    "register",
    "registered",
    "scaled_gramian",
]
