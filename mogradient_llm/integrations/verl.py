"""mogradient's advantage-level methods as one verl advantage estimator, ``"mogradient"``.

verl (0.9.1) picks its advantage estimator by name, ``algorithm.adv_estimator``, from the
registry of ``verl.trainer.ppo.core_algos``; importing this module registers
:func:`compute_mogradient_advantage` there under :data:`NAME` (``register()`` does it again
explicitly, e.g. as a Ray ``worker_process_setup_hook``). One name configured by
``algorithm.mogradient`` rather than one name per method: every advantage combiner (PAMA) and
loss weighting (``linear``, ``tchebycheff``, ``stch``, ``famo``, ...) of mogradient's registry,
present and future, works with no new code here, and their hyper-parameters need config keys
anyway (verl's own GDPO reads ``algorithm.gdpo_*`` the same way).

For each objective (a key of ``compute_score``'s returned dict) it computes verl's GRPO group
advantage per ``index`` (uid), ``(r − mean) / (std + ε)`` with ``ε = 1e-6`` and verl's
convention for a group of one (mean 0, std 1), then hands the named advantages to
:class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss`: its ``clip`` (Noon) and
``combine`` stages make the one advantage verl's actor trains on; ``whiten`` then applies
verl's own ``masked_whiten`` (GDPO's last step). Gramian methods decide from gradients, which
an advantage estimator never sees: they are refused.

The per-objective rewards reach the estimator as ``non_tensor_batch`` (verl passes it to the
estimator named ``"gdpo"`` only) or through :func:`objective_rewards`, which the trainer glue
in :mod:`mogradient_llm.integrations.verl_trainers` sets. See ``docs/verl.md``.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

try:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est
    from verl.utils.torch_functional import masked_whiten
except ImportError as error:  # verl is optional: only this integration needs it
    raise ImportError(
        f"mogradient_llm.integrations.verl needs verl (tested with 0.9.1): {error}. Install it "
        "with `pip install verl==0.9.1`; docs/verl.md gives a light environment for tests"
    ) from error

from mogradient import get_aggregator
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.objectives.loss import MultiObjectiveLoss, objective_losses

#: The estimator's name in verl's registry (``algorithm.adv_estimator``).
NAME = "mogradient"
#: The objective's name when no ``reward_keys`` are given: verl's summed token-level reward.
SCORE = "score"
#: verl's GRPO epsilon (added to the group's std); TRL's is 1e-4.
VERL_GRPO_EPS = 1e-6


@dataclass(frozen=True)
class Settings:
    """``algorithm.mogradient``: how the estimator combines the objectives.

    ``reward_keys``: the objectives, keys of ``compute_score``'s dict (``None``: one objective,
    the token-level reward). ``aggregator``/``aggregator_kwargs``: a mogradient advantage
    combiner or loss weighting; ``preference``: its preference (preference-aware methods).
    ``noon``: clip each advantage at 0 first (PAMA's Noon). ``whiten``: verl's token-weighted
    batch whitening of the combined advantage (GDPO's last step). ``epsilon``: added to each
    group's std. ``norm_adv_by_std``: divide by the group's std (``algorithm.
    norm_adv_by_std_in_grpo``; off: Dr. GRPO).
    """

    reward_keys: tuple[str, ...] | None = None
    aggregator: str = "linear"
    aggregator_kwargs: str = "{}"  # JSON, so that the settings can key a cache
    preference: tuple[float, ...] | None = None
    noon: bool = False
    whiten: bool = False
    epsilon: float = VERL_GRPO_EPS
    norm_adv_by_std: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """The objectives' names, in the order of the advantage rows."""
        return self.reward_keys if self.reward_keys is not None else (SCORE,)


def _plain(value: Any) -> Any:
    """A config value (omegaconf ``DictConfig``/``ListConfig`` included) as dicts and lists."""
    if isinstance(value, (str, bytes)):
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) or hasattr(value, "__iter__"):
        return [_plain(v) for v in value]
    return value


def settings_from(
    config: Any, *, epsilon: float = VERL_GRPO_EPS, norm_adv_by_std: bool = True
) -> Settings:
    """:class:`Settings` from verl's algorithm config (``DictConfig``, ``AlgoConfig``, a dict or
    ``None``): its ``mogradient`` section and ``norm_adv_by_std_in_grpo``; ``epsilon`` and
    ``norm_adv_by_std`` where the config does not set them."""
    section: Any = None
    if config is not None:
        section = config.get("mogradient", None)
        norm_adv_by_std = bool(config.get("norm_adv_by_std_in_grpo", norm_adv_by_std))
    raw = _plain(section) if section is not None else {}
    if not isinstance(raw, dict):
        raise TypeError(f"algorithm.mogradient must be a mapping of settings, got {raw!r}")
    known = {f.name for f in fields(Settings)} - {"norm_adv_by_std"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(
            f"unknown algorithm.mogradient setting(s) {unknown}; valid: {sorted(known)} "
            "(norm_adv_by_std_in_grpo is verl's own algorithm.norm_adv_by_std_in_grpo)"
        )
    keys = raw.get("reward_keys")
    if keys is not None:
        if isinstance(keys, str) or not keys or not all(isinstance(k, str) for k in keys):
            raise ValueError(
                "algorithm.mogradient.reward_keys must be a non-empty list of the keys of "
                f"compute_score's returned dict, got {keys!r}"
            )
        if len(set(keys)) != len(keys):
            raise ValueError(f"algorithm.mogradient.reward_keys repeat a key: {keys}")
    kwargs = raw.get("aggregator_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"algorithm.mogradient.aggregator_kwargs must be a mapping, got {kwargs!r}")
    for flag in ("noon", "whiten"):
        if not isinstance(raw.get(flag, False), bool):
            raise TypeError(f"algorithm.mogradient.{flag} must be true or false, got {raw[flag]!r}")
    preference = raw.get("preference")
    epsilon = float(raw.get("epsilon", epsilon))
    if not epsilon > 0:
        raise ValueError(f"algorithm.mogradient.epsilon must be > 0, got {epsilon}")
    return Settings(
        reward_keys=tuple(keys) if keys is not None else None,
        aggregator=str(raw.get("aggregator", "linear")),
        aggregator_kwargs=json.dumps(kwargs, sort_keys=True),
        preference=tuple(float(p) for p in preference) if preference is not None else None,
        noon=raw.get("noon", False),
        whiten=raw.get("whiten", False),
        epsilon=epsilon,
        norm_adv_by_std=norm_adv_by_std,
    )


_LOSSES: dict[Settings, MultiObjectiveLoss] = {}


def multi_objective_loss(settings: Settings) -> MultiObjectiveLoss:
    """The :class:`MultiObjectiveLoss` of ``settings``, one per distinct settings for the
    process's life, so a stateful aggregator (FAMO, DWA, ...) keeps its state across steps."""
    cached = _LOSSES.get(settings)
    if cached is not None:
        return cached
    kwargs = json.loads(settings.aggregator_kwargs)
    if settings.preference is not None:
        if "preference" in kwargs:
            raise ValueError(
                "algorithm.mogradient.preference and aggregator_kwargs.preference are both set; "
                "give the preference once"
            )
        kwargs["preference"] = list(settings.preference)
    loss = MultiObjectiveLoss(
        get_aggregator(settings.aggregator, **kwargs), settings.names, noon=settings.noon
    )
    if loss.kind in ("gramian", "jacobian"):
        raise ValueError(
            f"aggregator {settings.aggregator!r} decides its weights from the objectives' "
            "gradients, which a verl advantage estimator never sees; use an advantage combiner "
            "(pama) or a loss weighting (linear, tchebycheff, stch, ...), or a gradient-level "
            "method through mogradient's own loop"
        )
    _LOSSES[settings] = loss
    return loss


@dataclass
class RewardContext:
    """What a trainer hands the estimator outside its arguments: the per-objective ``rewards``
    (key → one value per sample, ``None`` where unscored) and, back, the last ``stats``."""

    rewards: Mapping[str, Sequence[Any]] | None
    stats: dict[str, float] = field(default_factory=dict)


_CONTEXT: contextvars.ContextVar[RewardContext | None] = contextvars.ContextVar(
    "mogradient_verl_rewards", default=None
)


@contextmanager
def objective_rewards(rewards: Mapping[str, Sequence[Any]] | None) -> Iterator[RewardContext]:
    """Within the block, the estimator reads the per-objective ``rewards`` (in the batch's row
    order) when verl passes it no ``non_tensor_batch``; the context's ``stats`` then hold the
    weights and diagnostics of the last call."""
    context = RewardContext(rewards)
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


def objective_scores(
    settings: Settings,
    token_level_rewards: torch.Tensor,
    rewards: Mapping[str, Sequence[Any]] | None,
) -> torch.Tensor:
    """The objectives' scores ``[k, B]`` (float64, NaN where a reward is ``None``)."""
    batch = token_level_rewards.shape[0]
    if settings.reward_keys is None:
        return token_level_rewards.sum(-1).to(torch.float64).unsqueeze(0)
    if rewards is None:
        raise ValueError(
            f"algorithm.mogradient.reward_keys={list(settings.reward_keys)} needs the "
            "per-objective rewards, but the trainer passed none to the estimator (verl's legacy "
            "trainer passes them only to 'gdpo', its v1 trainer to no estimator): run the v1 "
            "trainer with trainer.v1.trainer_mode=mogradient_sync (register_trainers()) or call "
            "patch_legacy_trainer(); see docs/verl.md"
        )
    rows = []
    for key in settings.reward_keys:
        if key not in rewards:
            raise KeyError(
                f"reward key {key!r} is not among the rewards {sorted(rewards)}: make "
                f"compute_score return a dict with {key!r}, or fix algorithm.mogradient.reward_keys"
            )
        values = [np.nan if v is None else float(v) for v in np.asarray(rewards[key]).tolist()]
        if len(values) != batch:
            raise ValueError(
                f"reward {key!r} has {len(values)} values for a batch of {batch} responses"
            )
        rows.append(values)
    return torch.tensor(rows, dtype=torch.float64, device=token_level_rewards.device)


def group_advantages(
    scores: torch.Tensor, index: Iterable[Any], epsilon: float, norm_by_std: bool = True
) -> torch.Tensor:
    """verl's GRPO advantage of each objective ``[k, B]`` per group of equal ``index``:
    ``(r − mean) / (std + epsilon)`` (unbiased std; ``r − mean`` without ``norm_by_std``); a
    group of one takes mean 0 and std 1 as verl's GRPO does. Unscored (NaN) rewards take no part
    in their objective's statistics and get 0."""
    ids: dict[Any, int] = {}
    group = torch.tensor([ids.setdefault(u, len(ids)) for u in index], device=scores.device)
    if len(group) != scores.shape[1]:
        raise ValueError(f"{len(group)} uids for {scores.shape[1]} responses")
    valid = ~torch.isnan(scores)
    x = torch.where(valid, scores, torch.zeros_like(scores))
    k, size = scores.shape[0], len(ids)
    count = x.new_zeros(k, size).index_add_(1, group, valid.to(x.dtype))
    mean = x.new_zeros(k, size).index_add_(1, group, x) / count.clamp(min=1)
    deviation = torch.where(valid, x - mean[:, group], torch.zeros_like(x))
    var = x.new_zeros(k, size).index_add_(1, group, deviation**2) / (count - 1).clamp(min=1)
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(var), var.sqrt())
    centred = x - mean[:, group]
    out = centred / (std[:, group] + epsilon) if norm_by_std else centred
    return torch.where(valid, out, torch.zeros_like(out))


def compute_mogradient_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = VERL_GRPO_EPS,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
    non_tensor_batch: Mapping[str, Sequence[Any]] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's estimator signature: the combined advantage ``[B, T]`` (and the same as returns).

    ``config``: verl's algorithm config (its ``mogradient`` section, :class:`Settings`);
    ``non_tensor_batch``: the per-objective rewards when verl passes them, else those of
    :func:`objective_rewards`. Other keyword arguments verl passes are not used.
    """
    settings = settings_from(config, epsilon=epsilon, norm_adv_by_std=norm_adv_by_std_in_grpo)
    loss = multi_objective_loss(settings)
    context = _CONTEXT.get()
    rewards = non_tensor_batch
    if rewards is None and context is not None:
        rewards = context.rewards
    scores = objective_scores(settings, token_level_rewards, rewards)
    mask = response_mask.to(token_level_rewards.dtype)
    with torch.no_grad():
        values = group_advantages(scores, index, settings.epsilon, settings.norm_adv_by_std)
        advantages = Advantages.of(
            values.to(token_level_rewards.dtype), settings.names, ~torch.isnan(scores)
        )
        clipped = loss.clip(advantages, mask)
        losses = objective_losses(scores) if loss.reads_loss_values else None
        combined, stats = loss.combine(clipped, mask, losses)
        out = combined.values[0] * mask
        if settings.whiten:
            out = masked_whiten(out, mask) * mask
    if context is not None:
        context.stats = {**stats, **loss.diagnostics(clipped, mask, scores)}
    return out, out


def register() -> None:
    """Register :func:`compute_mogradient_advantage` in verl's registry as :data:`NAME`
    (idempotent: this module does it on import)."""
    if ADV_ESTIMATOR_REGISTRY.get(NAME) is not compute_mogradient_advantage:
        register_adv_est(NAME)(compute_mogradient_advantage)


register()
