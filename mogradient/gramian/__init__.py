"""Jacobians and Gramians of several losses: the Jacobian (:mod:`~mogradient.gramian.jacobians`),
the Gramian of the mean loss over micro-batches and ranks with the weights decided from it
(:mod:`~mogradient.gramian.accumulator`), and the distributed helpers, defined once
(:mod:`~mogradient.gramian.distributed`). The per-layer Gramian engine is
:mod:`mogradient.gramian_engine`; ``backward()`` is :mod:`mogradient.autograd`.
"""

from mogradient.gramian.accumulator import GramianAccumulator, feature_weights, parameter_weights
from mogradient.gramian.distributed import all_reduce_mean, world_size
from mogradient.gramian.jacobians import jacobian

__all__ = [
    "GramianAccumulator",
    "all_reduce_mean",
    "feature_weights",
    "jacobian",
    "parameter_weights",
    "world_size",
]
