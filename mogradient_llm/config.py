"""Configuration of the multi-objective PPO trainer (TRL's PPO vocabulary)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

GRAMIAN_LEVELS = ("parameters", "features")
PARAMETER_GRAMIANS = ("layers", "jacobian")
KL_ESTIMATORS = ("k1", "k3")


def _default_generation_kwargs() -> dict[str, Any]:
    return {"max_new_tokens": 32, "do_sample": True, "top_k": 0, "top_p": 1.0}


@dataclass
class MOPPOConfig:
    """Hyper-parameters of :class:`mogradient_llm.trainer.MOPPOTrainer`.

    The PPO names follow TRL. The multi-objective ones:

    * ``aggregator`` / ``aggregator_kwargs``: a name of the ``mogradient`` registry
      (``mogradient.available_aggregators()``) and its hyper-parameters (PAMA's
      ``{"granularity": "batch"}``, a ``{"preference": [...]}``, ...); the trainer picks the
      level from the aggregator's kind: loss weightings scalarise the advantages (Σ wᵢ Aᵢ,
      before whitening: MORLHF), PAMA combines them per token after the Noon clip, Gramian
      methods weigh the policy losses' gradients.
    * ``normalize_weights``: rescale the loss weights to Σw = 1 before the update (default),
      so the policy step's scale, its balance with the value loss on the shared trunk and how
      often gradient clipping fires do not depend on the aggregator; ``False`` keeps each
      method's own scale (PCGrad's Σw ≈ k, CAGrad's 1 + c‖g₀‖/‖g_w‖, user ``linear`` weights).
      ``agg/weight_sum`` logs the sum before rescaling.
    * ``noon``: clip every objective's advantage at zero before aggregating (Noon PPO).
    * ``parameter_gramian``: how the parameters-level Gramian is formed: ``"layers"`` (default:
      layer by layer during one backward, never holding the k×d Jacobian; with one micro-batch)
      or ``"jacobian"`` (the k×d Jacobian, then ``JJᵀ``; always used with accumulation).
    * ``gramian_level``: ``"parameters"`` (Gramian of the policy-loss gradients over all policy
      parameters) or ``"features"`` (over the last hidden states: MGDA-UB).
    * ``use_score_scaling`` / ``use_score_norm``: divide each objective's score by its running
      std / also subtract its running mean (TRL's names, applied per objective; the moments
      are all-reduced over the processes). ``score_std_floor``: the smallest std divided by,
      so that after batches of a constant reward a small change is not a many-σ event.
    * ``kl_estimator``: the per-token KL estimate in the reward penalty, TRL's names: ``k1``
      (log π − log π_ref: unbiased, but negative on some tokens and sequences, where it
      becomes a bonus) or ``k3`` ((r − 1) − log r with r = π_ref / π: non-negative, lower
      variance).
    * ``gradient_accumulation_steps``: split each minibatch into this many micro-batches
      whose gradients are accumulated (``accelerator.accumulate``) into one update, equal to
      that of the whole minibatch; token means are taken over the whole minibatch.
    * ``skip_nonfinite``: skip a step (with a warning) whose rewards, advantages or losses are
      NaN/inf instead of stopping with an error naming the objective and the step.
    * ``lora_r`` > 0: train LoRA adapters (peft) instead of the whole policy; the KL reference
      is then the base model with its adapters disabled. ``lora_target_modules``: ``None`` lets
      peft pick its default for the architecture. ``lora_dropout`` must be 0: dropout would
      make the PPO ratio and the KL to the reference noisy (every other dropout of the policy
      is switched off for the same reason).
    """

    learning_rate: float = 1.41e-5
    batch_size: int = 32
    mini_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    ppo_epochs: int = 4
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.2
    kl_estimator: Literal["k1", "k3"] = "k1"
    adap_kl_ctrl: bool = True
    target: float = 6.0
    horizon: float = 10000.0
    whiten_advantages: bool = True
    max_grad_norm: float | None = 1.0
    seed: int = 0
    aggregator: str = "pama"
    aggregator_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize_weights: bool = True
    noon: bool = True
    gramian_level: Literal["parameters", "features"] = "parameters"
    parameter_gramian: Literal["layers", "jacobian"] = "layers"
    use_score_scaling: bool = True
    use_score_norm: bool = True
    score_clip: float | None = None
    score_std_floor: float = 0.01
    generation_kwargs: dict[str, Any] = field(default_factory=_default_generation_kwargs)
    skip_nonfinite: bool = False
    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        positive = (
            "learning_rate",
            "batch_size",
            "mini_batch_size",
            "gradient_accumulation_steps",
            "ppo_epochs",
            "horizon",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size "
                f"({self.mini_batch_size})"
            )
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}"
            )
        for name in ("cliprange", "cliprange_value", "vf_coef", "kl_coef", "target"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"gamma and lam must lie in [0, 1], got {self.gamma}, {self.lam}")
        if self.gramian_level not in GRAMIAN_LEVELS:
            raise ValueError(
                f"gramian_level must be one of {GRAMIAN_LEVELS}, got {self.gramian_level!r}"
            )
        if self.parameter_gramian not in PARAMETER_GRAMIANS:
            raise ValueError(
                f"parameter_gramian must be one of {PARAMETER_GRAMIANS}, "
                f"got {self.parameter_gramian!r}"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.lora_dropout != 0.0:
            raise ValueError(
                f"lora_dropout={self.lora_dropout}: dropout makes the PPO ratio and the KL to the "
                "reference noisy (two forwards of the same tokens disagree); set it to 0"
            )
        if self.score_std_floor < 0:
            raise ValueError(f"score_std_floor must be non-negative, got {self.score_std_floor}")
        if self.score_clip is not None and self.score_clip <= 0:
            raise ValueError(f"score_clip must be positive or None, got {self.score_clip}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MOPPOConfig:
        """Build a config from :meth:`to_dict` output, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**values)
