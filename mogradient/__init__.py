"""mogradient: pluggable multi-objective gradient aggregators with exact numba weight solvers.

>>> import mogradient
>>> agg = mogradient.get_aggregator("mgda")
>>> direction = agg(jacobian)                      # [n_objectives, d] -> [d]
>>> mogradient.backward(losses, model.parameters(), aggregator="pcgrad")
"""

from mogradient import solvers
from mogradient.aggregators import (
    MGDA,
    PAMA,
    Aggregator,
    CAGrad,
    Linear,
    Mean,
    PCGrad,
    available_aggregators,
    get_aggregator,
    gramian_of,
    pama_weights,
)
from mogradient.autograd import (
    GramianAccumulator,
    backward,
    feature_weights,
    jacobian,
    parameter_weights,
)

__version__ = "0.1.0"

__all__ = [
    "CAGrad",
    "MGDA",
    "PAMA",
    "PCGrad",
    "Aggregator",
    "GramianAccumulator",
    "Linear",
    "Mean",
    "available_aggregators",
    "backward",
    "feature_weights",
    "get_aggregator",
    "gramian_of",
    "jacobian",
    "pama_weights",
    "parameter_weights",
    "solvers",
]
