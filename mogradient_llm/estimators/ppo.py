"""Multi-objective PPO: one value head per objective, KL penalty in the rewards, GAE per
objective, whitening (Noon PPO when the loop clips at zero).

Pipeline (order is part of the API, tested): scores ``[k, B]`` → running normalisation (moments
all-reduced; std floored) → ``−β KL`` on every objective's token rewards → GAE per objective →
(loss weightings: ``Σ wᵢ Aᵢ``, MORLHF) → whitening → [loop: Noon clip → combine].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from mogradient_llm.config import MOConfig, _help
from mogradient_llm.estimators.advantages import (
    RunningMeanStd,
    gae,
    masked_mean,
    masked_whiten,
    normalize_scores,
    token_rewards,
)
from mogradient_llm.estimators.base import (
    Estimate,
    Estimator,
    EstimatorInputs,
    Minibatch,
    Scalarize,
    Stats,
)
from mogradient_llm.estimators.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    kl_estimate,
)
from mogradient_llm.estimators.value_heads import clipped_value_loss

KL_ESTIMATORS = ("k1", "k3")
KL_CONTROLLERS = ("fixed", "adaptive")


@dataclass
class MOPPOConfig(MOConfig):
    """PPO's hyper-parameters (TRL's PPO names) on top of :class:`MOConfig`.

    * ``use_score_scaling`` / ``use_score_norm``: divide each objective's score by its running
      std / also subtract its running mean (moments all-reduced over the processes);
      ``score_std_floor``: the smallest std divided by.
    * ``kl_estimator``: the per-token KL in the reward penalty: ``k1`` (log π − log π_ref) or
      ``k3`` ((r − 1) − log r, r = π_ref / π: non-negative, lower variance).
    * ``kl_controller``: ``"fixed"`` keeps β = ``kl_coef``; ``"adaptive"`` (Ziegler et al.
      2019) moves it towards ``target_kl`` over ``kl_horizon`` samples.
    """

    algorithm: ClassVar[str] = "ppo"
    renamed: ClassVar[dict[str, str]] = {
        "ppo_epochs": "num_ppo_epochs",
        "adap_kl_ctrl": "kl_controller ('adaptive' for True, 'fixed' for False)",
        "target": "target_kl",
        "horizon": "kl_horizon",
    }
    demo_preset: ClassVar[dict[str, Any]] = {"num_ppo_epochs": 2, "kl_coef": 0.05}
    tiny_preset: ClassVar[dict[str, Any]] = {"num_ppo_epochs": 1}

    num_ppo_epochs: int = field(default=4, metadata=_help("passes over each step's rollouts"))
    cliprange: float = field(default=0.2, metadata=_help("policy ratio clip ε"))
    cliprange_value: float = field(default=0.2, metadata=_help("value clip"))
    vf_coef: float = field(default=0.1, metadata=_help("value-loss coefficient"))
    gamma: float = field(default=1.0, metadata=_help("discount"))
    lam: float = field(default=0.95, metadata=_help("GAE λ"))
    kl_coef: float = field(default=0.2, metadata=_help("initial KL-penalty coefficient β"))
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata=_help("per-token KL estimate in the reward penalty")
    )
    kl_controller: Literal["fixed", "adaptive"] = field(
        default="adaptive",
        metadata=_help("β's controller: 'fixed' (kl_coef) or 'adaptive' (towards target_kl)"),
    )
    target_kl: float = field(
        default=6.0, metadata=_help("target KL of the adaptive controller (nats per sequence)")
    )
    kl_horizon: float = field(
        default=10000.0, metadata=_help("samples over which the adaptive controller adapts")
    )
    whiten_advantages: bool = field(default=True, metadata=_help("whiten each advantage"))
    use_score_scaling: bool = field(
        default=True, metadata=_help("divide each score by its running std")
    )
    use_score_norm: bool = field(default=True, metadata=_help("also subtract its running mean"))
    score_clip: float | None = field(default=None, metadata=_help("clip normalised scores"))
    score_std_floor: float = field(default=0.01, metadata=_help("smallest running std divided by"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_ppo_epochs <= 0 or self.kl_horizon <= 0:
            raise ValueError(
                f"num_ppo_epochs and kl_horizon must be positive, got {self.num_ppo_epochs}, "
                f"{self.kl_horizon}"
            )
        if self.kl_controller not in KL_CONTROLLERS:
            raise ValueError(
                f"kl_controller must be one of {KL_CONTROLLERS}, got {self.kl_controller!r}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}"
            )
        for name in ("cliprange", "cliprange_value", "vf_coef", "kl_coef", "target_kl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"gamma and lam must lie in [0, 1], got {self.gamma}, {self.lam}")
        if self.score_std_floor < 0:
            raise ValueError(f"score_std_floor must be non-negative, got {self.score_std_floor}")
        if self.score_clip is not None and self.score_clip <= 0:
            raise ValueError(f"score_clip must be positive or None, got {self.score_clip}")

    @property
    def epochs(self) -> int:
        return self.num_ppo_epochs


@dataclass(kw_only=True)
class ValueEstimate(Estimate):
    """PPO's estimate: the advantages and, per value head ``[k, B, T]``, the rollout's values,
    the returns its loss regresses on and the tokens it is trained on."""

    old_values: torch.Tensor
    returns: torch.Tensor
    value_mask: torch.Tensor

    def nonfinite(self) -> str | None:
        for name, row in zip(self.advantages.names, self.returns):
            if not torch.isfinite(row).all():
                return f"the returns of objective {name!r} are not finite"
        return super().nonfinite()


class PPOEstimator(Estimator[MOPPOConfig]):
    """GAE per objective with one value head each; the value loss is added outside."""

    algorithm = "ppo"
    config_class = MOPPOConfig
    value_heads = True

    def __init__(self, config: MOPPOConfig, names: list[str]):
        super().__init__(config, names)
        self.kl_ctl: KLController
        if config.kl_controller == "adaptive":
            self.kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
        else:
            self.kl_ctl = FixedKLController(config.kl_coef)
        self.score_stats = RunningMeanStd(len(names))

    @property
    def needs_old_logprobs(self) -> bool:
        return True  # the KL penalty is in the rewards

    @property
    def clip_range(self) -> tuple[float, float | None]:
        return self.config.cliprange, None

    def estimate(self, inputs: EstimatorInputs, scalarize: Scalarize | None) -> Estimate:
        cfg = self.config
        mask, valid = inputs.mask, inputs.valid
        assert inputs.logprobs is not None and inputs.ref_logprobs is not None
        assert inputs.values is not None
        kl = kl_estimate(inputs.logprobs, inputs.ref_logprobs, cfg.kl_estimator) * mask
        scores = inputs.scores
        if cfg.use_score_scaling:
            self.score_stats.update(scores, inputs.all_reduce_sum)
            scores = normalize_scores(
                scores,
                self.score_stats,
                use_score_norm=cfg.use_score_norm,
                clip=cfg.score_clip,
                std_floor=cfg.score_std_floor,
            )
        rewards = token_rewards(scores.nan_to_num(0.0), kl, mask, self.kl_ctl.value)
        value_mask = mask * valid[:, :, None].to(mask.dtype)
        advantages, returns = gae(rewards, inputs.values * mask, mask, cfg.gamma, cfg.lam)
        advantages = advantages * value_mask  # an objective that could not score: no advantage
        stats: Stats = {
            f"advantages/{name}/positive_frac": float(masked_mean((adv > 0).float(), mask))
            for name, adv in zip(self.names, advantages)
        }
        scored = value_mask  # the tokens each remaining advantage row is defined on
        if scalarize is not None:
            advantages = scalarize(advantages)
            scored = value_mask.amax(0, keepdim=True)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, scored)
        return ValueEstimate(
            self.named_advantages(advantages, inputs, scalarize is not None),
            kl=kl,
            stats=stats,
            old_values=inputs.values,
            returns=returns,
            value_mask=value_mask,
        )

    def extra_loss(
        self, estimate: Estimate, rows: Minibatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``vf_coef`` × the clipped value loss summed over the heads."""
        assert isinstance(estimate, ValueEstimate) and rows.values is not None
        index, weights = rows.index, rows.weights
        head_weights = weights * (estimate.value_mask[:, index] > 0).to(weights.dtype)
        loss, stats = clipped_value_loss(
            rows.values,
            estimate.old_values[:, index],
            estimate.returns[:, index],
            head_weights,
            self.config.cliprange_value,
        )
        stats["loss/value_avg"] = loss.detach()
        return self.config.vf_coef * loss, stats

    def after_step(self, mean_kl: float, n_samples: int) -> None:
        self.kl_ctl.update(mean_kl, n_samples)

    def stats(self) -> Stats:
        return {"objective/kl_coef": self.kl_ctl.value}

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_ctl.value, "score_stats": self.score_stats.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_ctl.value = float(state["kl_coef"])
        self.score_stats.load_state_dict(state["score_stats"])
