"""Jacobians and Gramians of several losses: the Jacobian (:mod:`~mogradient.gramian.jacobians`),
the Gramian of the mean loss over micro-batches and ranks with the weights decided from it
(:mod:`~mogradient.gramian.accumulator`), the distributed helpers, defined once
(:mod:`~mogradient.gramian.distributed`), and the per-layer Gramian engine: the recorder
(:mod:`~mogradient.gramian.recorder`), its taps (:mod:`~mogradient.gramian.taps`), its
closed-form layer rules (:mod:`~mogradient.gramian.rules`) and its generic replay and fallback
(:mod:`~mogradient.gramian.replay`), and the rule that picks the Jacobian (loop) or the
per-layer path (:mod:`~mogradient.gramian.path`). ``backward()`` is :mod:`mogradient.autograd`.
"""

from mogradient.gramian.accumulator import GramianAccumulator, feature_weights, parameter_weights
from mogradient.gramian.distributed import all_reduce_mean, world_size
from mogradient.gramian.jacobians import jacobian
from mogradient.gramian.path import choose_parameter_path

__all__ = [
    "GramianAccumulator",
    "all_reduce_mean",
    "choose_parameter_path",
    "feature_weights",
    "jacobian",
    "parameter_weights",
    "world_size",
]
