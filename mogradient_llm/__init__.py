"""RL adapter: multi-objective PPO, GRPO and RLOO on top of the ``mogradient`` aggregators.

One loop (:class:`~mogradient_llm.loop.trainer.MOTrainer`) with pluggable advantage estimators
(:mod:`mogradient_llm.estimators`), chosen by the config's class: :class:`MOPPOConfig`,
:class:`MOGRPOConfig`, :class:`MORLOOConfig`. Modules: ``config``, ``estimators``,
``trainer``, ``update``, ``batch``, ``rewards``, ``reward_specs`` (``--reward`` specs),
``reward_context`` (TRL's ``trainer_state``, ``log_extra``, ``log_metric``, async rewards),
``data``, ``aggregation``, ``diagnostics``,
``advantages``, ``loss``, ``value_heads``, ``rollout``, ``sampling``, ``kl``, ``models`` (tiny
offline policies), ``evaluate``, ``metrics``, ``sweep`` (a front from one run per preference),
``front`` (its points, matched KL, metrics and plots), ``soups`` (Rewarded Soups), ``demo``,
``specs`` (a run's model, data and evaluation records), ``run`` (the services: train, evaluate)
and ``cli/`` (``mogradient-llm``, one module per command; the only one that parses flags).
See ``docs/llm.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MOTrainer": "mogradient_llm.loop.trainer",
    "MOConfig": "mogradient_llm.config",
    "MOPPOConfig": "mogradient_llm.estimators",
    "MOGRPOConfig": "mogradient_llm.estimators",
    "MORLOOConfig": "mogradient_llm.estimators",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import the trainer and configs on first use (``import mogradient_llm`` stays light)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mogradient_llm' has no attribute {name!r}")
