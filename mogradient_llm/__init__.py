"""RLHF adapter: multi-objective PPO on top of the ``mogradient`` aggregators.

Modules: ``config`` (:class:`~mogradient_llm.config.MOPPOConfig`), ``trainer``
(:class:`~mogradient_llm.trainer.MOPPOTrainer`), ``rewards``, ``value_heads``, ``advantages``,
``loss``, ``aggregation``, ``rollout``, ``kl``, ``data``, ``models`` (tiny offline policies),
``evaluate``, ``metrics``, ``demo`` and ``cli`` (the ``mogradient-llm`` command).
See ``docs/llm.md``.
"""
