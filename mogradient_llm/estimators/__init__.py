"""Advantage estimators, one module each: ``ppo`` (value heads, GAE), ``grpo`` (group-relative),
``rloo`` (leave-one-out). Every module of this package is imported and its :class:`Estimator`
subclasses found by their ``algorithm``, so adding one is adding a module (or defining the
subclass anywhere before use); :func:`estimator_class` finds one by its ``--algorithm`` name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from mogradient_llm.config import MOConfig
from mogradient_llm.estimators.base import Estimate, Estimator, EstimatorInputs, Minibatch
from mogradient_llm.estimators.grpo import GRPOEstimator, MOGRPOConfig
from mogradient_llm.estimators.ppo import MOPPOConfig, PPOEstimator
from mogradient_llm.estimators.rloo import MORLOOConfig, RLOOEstimator


def _import_modules() -> None:
    """Import every module of this package (its estimators subclass :class:`Estimator`)."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def estimators() -> dict[str, type[Estimator]]:
    """Every :class:`Estimator` subclass imported so far by its ``algorithm`` (this package's,
    and any defined elsewhere: a new algorithm needs no edit here)."""
    found: dict[str, type[Estimator]] = {}
    stack = list(Estimator.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):  # shared bases (GroupEstimator) train nothing
            found[cls.algorithm] = cls
    return dict(sorted(found.items()))


def estimator_class(algorithm: str) -> type[Estimator]:
    """The estimator named ``algorithm``; raises naming the valid ones."""
    found = estimators()
    if algorithm not in found:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {sorted(found)}")
    return found[algorithm]


def estimator_for(config: MOConfig) -> type[Estimator]:
    """The estimator that trains ``config`` (by its class: ``MOPPOConfig`` → PPO, ...)."""
    found = estimators()
    for cls in found.values():
        if type(config) is cls.config_class:
            return cls
    raise TypeError(
        f"{type(config).__name__} is not an estimator's config; use one of "
        f"{[cls.config_class.__name__ for cls in found.values()]}"
    )


_import_modules()

__all__ = [
    "Estimate",
    "Estimator",
    "EstimatorInputs",
    "GRPOEstimator",
    "MOGRPOConfig",
    "Minibatch",
    "MOPPOConfig",
    "MORLOOConfig",
    "PPOEstimator",
    "RLOOEstimator",
    "estimator_class",
    "estimator_for",
    "estimators",
]
