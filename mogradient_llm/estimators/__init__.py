"""Advantage estimators, one module each: ``ppo`` (value heads, GAE), ``grpo`` (group-relative),
``rloo`` (leave-one-out). Every module of this package is imported and its :class:`Estimator`
subclasses registered by their ``algorithm``, so adding one is adding a module;
:func:`estimator_class` finds one by its ``--algorithm`` name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from mogradient_llm.config import MOConfig
from mogradient_llm.estimators.base import Estimate, Estimator, EstimatorInputs
from mogradient_llm.estimators.grpo import GRPOEstimator, MOGRPOConfig
from mogradient_llm.estimators.ppo import MOPPOConfig, PPOEstimator
from mogradient_llm.estimators.rloo import MORLOOConfig, RLOOEstimator


def _discover() -> dict[str, type[Estimator]]:
    """Import every module here; every concrete :class:`Estimator` subclass by its
    ``algorithm``."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Estimator]] = {}
    stack = list(Estimator.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls):  # shared bases (GroupEstimator) train nothing
            found[cls.algorithm] = cls
    return dict(sorted(found.items()))


#: Every estimator by its ``--algorithm`` name.
ESTIMATORS: dict[str, type[Estimator]] = _discover()


def estimator_class(algorithm: str) -> type[Estimator]:
    """The estimator named ``algorithm``; raises naming the valid ones."""
    if algorithm not in ESTIMATORS:
        raise ValueError(f"unknown algorithm {algorithm!r}; valid: {sorted(ESTIMATORS)}")
    return ESTIMATORS[algorithm]


def estimator_for(config: MOConfig) -> type[Estimator]:
    """The estimator that trains ``config`` (by its class: ``MOPPOConfig`` → PPO, ...)."""
    for cls in ESTIMATORS.values():
        if type(config) is cls.config_class:
            return cls
    raise TypeError(
        f"{type(config).__name__} is not an estimator's config; use one of "
        f"{[cls.config_class.__name__ for cls in ESTIMATORS.values()]}"
    )


__all__ = [
    "ESTIMATORS",
    "Estimate",
    "Estimator",
    "EstimatorInputs",
    "GRPOEstimator",
    "MOGRPOConfig",
    "MOPPOConfig",
    "MORLOOConfig",
    "PPOEstimator",
    "RLOOEstimator",
    "estimator_class",
    "estimator_for",
]
