"""The estimator interface: what turns (rollout, scores) into per-objective advantages.

The loop (:class:`mogradient_llm.loop.trainer.MOTrainer`) owns everything else — prompts, rollouts,
scoring, the Noon clip, the combine, minibatches, logging, checkpoints. An estimator says

* which forwards the rollout needs (value heads, a reference, the old log-probabilities),
* how scores become per-objective advantages ``[k, B, T]`` (:meth:`Estimator.estimate`), and
  where a loss weighting scalarises them (``scalarize``: MORLHF's ``Σ wᵢ Aᵢ`` before whitening
  in PPO, GRPO's ``sum_then_normalize`` on the rewards),
* how token losses are normalised and clipped, and which loss is added outside the aggregator
  (PPO's value loss, GRPO's KL term) (:meth:`Estimator.extra_loss`).

Adding an algorithm is one module that subclasses :class:`Estimator` and :class:`MOConfig`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import torch

from mogradient_llm.config import MOConfig
from mogradient_llm.objectives.advantages import Advantages
from mogradient_llm.objectives.loss import AllReduceSum, Scalarize
from mogradient_llm.objectives.surrogate import TokenNormalization, clipped_surrogate

Stats = dict[str, float]

ConfigT = TypeVar("ConfigT", bound=MOConfig)


@dataclass
class EstimatorInputs:
    """What the loop hands an estimator after the rollout's forwards, on the device.

    ``scores`` ``[k, B]`` are the raw rewards, NaN where a reward returned ``None``; rows come in
    groups of ``num_generations`` consecutive completions of one prompt.
    """

    scores: torch.Tensor
    mask: torch.Tensor  #: ``[B, T]`` float response mask
    num_generations: int
    logprobs: torch.Tensor | None = None  #: ``[B, T]`` of the sampling policy (no grad)
    ref_logprobs: torch.Tensor | None = None  #: ``[B, T]`` of the KL reference
    values: torch.Tensor | None = None  #: ``[k, B, T]`` of the value heads
    all_reduce_sum: AllReduceSum | None = None

    @property
    def valid(self) -> torch.Tensor:
        """``[k, B]``: where a reward scored the completion."""
        return ~torch.isnan(self.scores)


@dataclass
class Estimate:
    """An estimator's output: advantages (one row per objective, or the one combined row once
    a loss weighting scalarised them) and what its extra loss reads later. Estimators with more
    (PPO's value targets) return a subclass."""

    advantages: Advantages
    kl: torch.Tensor | None = None  #: ``[B, T]`` per-token KL to the reference, for logging
    stats: Stats = field(default_factory=dict)

    def nonfinite(self) -> str | None:
        """A description of the first non-finite value of the estimate, or ``None``."""
        for name, row in zip(self.advantages.names, self.advantages.values):
            if not torch.isfinite(row).all():
                return f"the advantages of objective {name!r} are not finite"
        return None


@dataclass
class Minibatch:
    """What an estimator's losses read for the rows ``index`` of a step's batch, from the
    update's forward (``logprobs``, ``values``: with grad)."""

    index: torch.Tensor
    logprobs: torch.Tensor  #: ``[b, T]`` the live policy's
    old_logprobs: torch.Tensor  #: ``[b, T]`` the sampling policy's (no grad)
    weights: torch.Tensor  #: ``[b, T]`` what each token counts for in a loss
    ref_logprobs: torch.Tensor | None = None  #: ``[b, T]`` the KL reference's
    values: torch.Tensor | None = None  #: ``[k, b, T]`` the value heads'


class Estimator(ABC, Generic[ConfigT]):
    """Per-objective advantages and the losses around the aggregator, for one algorithm."""

    #: ``--algorithm`` name.
    algorithm: ClassVar[str]
    #: Its config dataclass.
    config_class: ClassVar[type[MOConfig]]
    #: Whether the policy gets one value head per objective.
    value_heads: ClassVar[bool] = False
    #: Whether the KL to the reference enters the loss only (computed there from the live
    #: log-probs): with one pass and one minibatch the trainer then runs no policy forward
    #: before the updates, as TRL does; the KL it logs comes from the update's forward.
    kl_in_loss_only: ClassVar[bool] = False
    #: How token losses are normalised (a config field may choose: GRPO's ``loss_type``).
    normalization: TokenNormalization = "token"

    def __init__(self, config: ConfigT, names: list[str]):
        self.config = config
        self.names = names

    @property
    def weight_total(self) -> float:
        """What a loss weighting's normalised weights sum to when it scalarises here (1: on the
        simplex)."""
        return 1.0

    @property
    def needs_reference(self) -> bool:
        """Whether a KL reference model is loaded and run."""
        return True

    @property
    def needs_old_logprobs(self) -> bool:
        """Whether the rollout's log-probabilities are computed before the updates; when not
        (one pass, one minibatch), the first forward's own, detached, serve as ``π_old``."""
        cfg = self.config
        return cfg.epochs > 1 or cfg.batch_size > cfg.mini_batch_size

    @abstractmethod
    def estimate(self, inputs: EstimatorInputs, scalarize: Scalarize | None) -> Estimate:
        """Per-objective advantages of the rollout (scalarised where the algorithm says when
        ``scalarize`` is given), before the Noon clip and the combine."""

    def named_advantages(
        self, values: torch.Tensor, inputs: EstimatorInputs, scalarized: bool
    ) -> Advantages:
        """``values`` named: the objectives' rows, or the one combined row once scalarised."""
        if scalarized:
            return Advantages.combined(values)
        return Advantages.of(values, self.names, inputs.valid)

    def policy_losses(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One clipped-surrogate loss per advantage row ``[m]`` (the ones aggregated)."""
        epsilon, epsilon_high = self.clip_range
        return clipped_surrogate(logprobs, old_logprobs, advantages, weights, epsilon, epsilon_high)

    @property
    @abstractmethod
    def clip_range(self) -> tuple[float, float | None]:
        """``(ε, ε_high)`` of the ratio clip (``ε_high = None``: symmetric)."""

    @abstractmethod
    def extra_loss(
        self, estimate: Estimate, rows: Minibatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss added outside the aggregator on the ``rows`` (value loss, KL term), from
        this estimator's own ``estimate`` of the step."""

    def after_step(self, mean_kl: float, n_samples: int) -> None:
        """Adapt to the finished step (PPO's adaptive KL coefficient); default: nothing."""

    def stats(self) -> Stats:
        """Values logged with every step (e.g. the KL coefficient)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the estimator (JSON-serialisable); also restored when a
        step is abandoned, so that its statistics do not count."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
