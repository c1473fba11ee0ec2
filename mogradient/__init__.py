"""mogradient: pluggable multi-objective gradient aggregators with exact numba weight solvers.

>>> import mogradient
>>> agg = mogradient.get_aggregator("mgda")
>>> direction = agg(jacobian)                      # [n_objectives, d] -> [d]
>>> mogradient.backward(losses, model.parameters(), aggregator="pcgrad")
"""

from mogradient import solvers
from mogradient.aggregators import (  # imports the methods (registers them)
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
    Preference,
    available_aggregators,
    dispatch,
    get_aggregator,
    gramian_of,
    registered,
)
from mogradient.aggregators.pama import pama_weights
from mogradient.autograd import along, backward
from mogradient.gramian import (
    GramianAccumulator,
    feature_weights,
    jacobian,
    parameter_weights,
)

__version__ = "0.2.0"


def __getattr__(name: str) -> type[Aggregator]:
    """A registered method's class by its class name: ``mogradient.MGDA``, ``mogradient.UPGrad``."""
    for cls in registered().values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'mogradient' has no attribute {name!r}")


__all__ = [
    "AdvantageCombiner",
    "Aggregator",
    "GramianAccumulator",
    "GramianWeighting",
    "JacobianWeighting",
    "LossWeighting",
    "Preference",
    "along",
    "available_aggregators",
    "backward",
    "dispatch",
    "feature_weights",
    "get_aggregator",
    "gramian_of",
    "jacobian",
    "pama_weights",
    "parameter_weights",
    "solvers",
]
