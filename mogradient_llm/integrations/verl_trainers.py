"""The glue that hands verl's per-objective rewards to the ``"mogradient"`` estimator.

``compute_score`` may return a dict (``{"score": total, "helpful": …, "short": …}``); verl's
reward managers copy its keys into ``reward_extra_info``, one value per response. What reaches
an advantage estimator in verl 0.9.1:

* **v1 trainer** (the default, ``trainer.use_v1=true``): ``PPOTrainer._compute_advantage``
  fetches ``uid``, ``response_mask``, ``rm_scores``, the log-probs and values from the
  TransferQueue, not ``extra_fields`` where ``reward_extra_info`` lives: no estimator sees the
  per-objective rewards (verl's ``gdpo`` included). :func:`register_trainers` registers, for
  each v1 mode (``sync``, ``colocate_async``, ``separate_async``), ``mogradient_<mode>``: the
  same trainer, whose ``_compute_advantage`` also fetches ``extra_fields`` for the batch's rows
  and provides their ``reward_extra_info`` (:func:`~mogradient_llm.integrations.verl.
  objective_rewards`) while verl's own ``_compute_advantage`` runs, then logs the aggregator's
  weights and diagnostics under ``mogradient/``.
* **legacy trainer** (``trainer.use_v1=false``, deprecated by verl): ``fit`` puts
  ``reward_extra_info`` into ``batch.non_tensor_batch``, but ``ray_trainer.compute_advantage``
  passes it to the estimator named ``"gdpo"`` only, and ``fit`` offers no method to override
  around that call. :func:`patch_legacy_trainer` replaces that one module function with a
  wrapper that provides ``non_tensor_batch`` to ``"mogradient"`` and calls verl's function
  unchanged for every estimator; it is explicit, logged and undone by the function it returns.

verl runs its trainer in a Ray actor: call :func:`setup` (v1) or :func:`setup_legacy` in that
process, e.g. as Ray's ``worker_process_setup_hook``. See ``docs/verl.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mogradient_llm.integrations.verl import NAME, objective_rewards, register

logger = logging.getLogger(__name__)

#: The verl versions whose trainer internals (``_compute_advantage``, the TransferQueue's
#: ``extra_fields``, ``ray_trainer.compute_advantage``) this glue was written against.
SUPPORTED_VERL = "0.9."
#: verl 0.9.1's v1 trainer modes (``trainer.v1.trainer_mode``).
V1_MODES = ("sync", "colocate_async", "separate_async")
#: The prefix of the per-objective stats in verl's metrics.
METRIC_PREFIX = "mogradient/"


def check_verl_version(version: str) -> None:
    """Refuse a verl whose trainer internals this glue was not written against."""
    if not version.startswith(SUPPORTED_VERL):
        raise RuntimeError(
            f"mogradient's verl trainer glue supports verl {SUPPORTED_VERL}x (tested with 0.9.1), "
            f"found {version}; install verl==0.9.1, or pass non_tensor_batch to the 'mogradient' "
            "estimator yourself (docs/verl.md)"
        )


def _check_installed_verl() -> None:
    import verl

    check_verl_version(str(getattr(verl, "__version__", "unknown")))


def rewards_from_extra_fields(rows: Iterable[Any]) -> dict[str, list[Any]]:
    """Each response's ``extra_fields["reward_extra_info"]`` (a dict, or tensordict's
    ``NonTensorData`` holding one) as key → one value per response, ``None`` where a response
    lacks the key."""
    infos = []
    for row in rows:
        row = getattr(row, "data", row)
        info = row.get("reward_extra_info", {}) if isinstance(row, Mapping) else {}
        infos.append(info if isinstance(info, Mapping) else {})
    keys = sorted({key for info in infos for key in info})
    return {key: [info.get(key) for info in infos] for key in keys}


class RewardExtraInfoMixin:
    """Put before a verl v1 ``PPOTrainer`` subclass: its ``_compute_advantage`` hands each
    response's ``reward_extra_info`` to the ``"mogradient"`` estimator."""

    config: Any

    def _compute_advantage(self, batch: Any, metrics: dict[str, Any]) -> Any:
        parent = super()._compute_advantage  # type: ignore[misc]
        if self.config.algorithm.adv_estimator != NAME:
            return parent(batch, metrics)
        import transfer_queue as tq

        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"]
        )
        raw = data["extra_fields"]
        rows = raw.tolist() if hasattr(raw, "tolist") else list(raw)
        with objective_rewards(rewards_from_extra_fields(rows)) as context:
            out = parent(batch, metrics)
        metrics.update({METRIC_PREFIX + key: value for key, value in context.stats.items()})
        return out


def register_trainers() -> dict[str, type]:
    """Register ``mogradient_<mode>`` for each of verl's v1 trainer modes (idempotent); select
    one with ``trainer.v1.trainer_mode=mogradient_sync``. Returns name → class."""
    _check_installed_verl()
    from verl.trainer.ppo.v1 import get_trainer_cls, register_trainer
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    out: dict[str, type] = {}
    for mode in V1_MODES:
        name = f"mogradient_{mode}"
        cls = TRAINER_REGISTRY.get(name)
        if cls is None:
            base = get_trainer_cls(mode)
            doc = f"verl's {base.__name__} handing reward_extra_info to the {NAME!r} estimator."
            cls = register_trainer(name)(
                type(f"MOGradient{base.__name__}", (RewardExtraInfoMixin, base), {"__doc__": doc})
            )
        out[name] = cls
    return out


_ORIGINAL = "_mogradient_original"


def patch_legacy_trainer() -> Callable[[], None]:
    """Make verl's legacy trainer hand ``non_tensor_batch`` (where it keeps
    ``reward_extra_info``) to the ``"mogradient"`` estimator, by wrapping
    ``verl.trainer.ppo.ray_trainer.compute_advantage``; other estimators go through verl's
    function unchanged. Idempotent; returns the function that restores verl's."""
    _check_installed_verl()
    import verl.trainer.ppo.ray_trainer as ray_trainer

    current = ray_trainer.compute_advantage
    original = getattr(current, _ORIGINAL, current)

    def compute_advantage(data: Any, adv_estimator: Any, *args: Any, **kwargs: Any) -> Any:
        if adv_estimator != NAME:
            return original(data, adv_estimator, *args, **kwargs)
        with objective_rewards(data.non_tensor_batch):
            return original(data, adv_estimator, *args, **kwargs)

    def undo() -> None:
        ray_trainer.compute_advantage = original

    if current is original:
        setattr(compute_advantage, _ORIGINAL, original)
        ray_trainer.compute_advantage = compute_advantage
        logger.warning(
            "mogradient: verl.trainer.ppo.ray_trainer.compute_advantage now hands "
            "non_tensor_batch (reward_extra_info) to the %r estimator; undo() restores it",
            NAME,
        )
    return undo


def setup() -> None:
    """The estimator and the v1 trainers (for ``worker_process_setup_hook``)."""
    register()
    register_trainers()


def setup_legacy() -> None:
    """The estimator and the legacy trainer's glue (for ``worker_process_setup_hook``)."""
    register()
    patch_legacy_trainer()
