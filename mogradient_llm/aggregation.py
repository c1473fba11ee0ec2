"""Where the objectives are combined, chosen by the aggregator's kind (its ``needs``).

* loss weightings (``linear``/``morlhf``, ``mean``): at the advantage level, before whitening
  — ``A = Σ wᵢ Aᵢ`` of the per-objective GAE advantages, which is GAE on ``Σ wᵢ rᵢ`` with the
  value ``Σ wᵢ Vᵢ`` (GAE is linear), then whitening and the Noon clip of that one advantage:
  PPO on the scalarised reward, the MORLHF baseline.
* ``"coefficients"`` (PAMA): at the advantage level, after the Noon clip — one advantage per
  token (:func:`mogradient_llm.advantages.pama_advantages`).
* ``"gramian"`` (``mgda``, ``pcgrad``, ``cagrad``): at the gradient level — the weights come
  from the Gramian of the per-objective policy-loss gradients over the policy parameters or
  over the last hidden states (MGDA-UB), all-reduced over the processes and accumulated over
  the micro-batches of a minibatch (:class:`mogradient.GramianAccumulator`); the update is then one
  ``accelerator.backward`` of ``Σ wᵢ Lᵢ`` plus the value loss, like every other method's.

The value loss is never aggregated: it is added (sum over heads) outside the aggregator.
With ``normalize_weights`` the weights are rescaled to Σw = 1 whatever the method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mogradient_llm.advantages import pama_advantages
from mogradient_llm.config import MOPPOConfig


def build_aggregator(config: MOPPOConfig) -> Any:
    """The registry aggregator named by ``config.aggregator`` (PAMA gets ``pama_granularity``)."""
    from mogradient import get_aggregator

    kwargs = dict(config.aggregator_kwargs)
    if config.aggregator.strip().lower() == "pama":
        if kwargs.setdefault("granularity", config.pama_granularity) != config.pama_granularity:
            raise ValueError(
                "set PAMA's granularity with pama_granularity, not aggregator_kwargs "
                f"(got {kwargs['granularity']!r} and {config.pama_granularity!r})"
            )
    return get_aggregator(config.aggregator, **kwargs)


def _normalized(weights: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """``weights / Σ weights`` when ``normalize`` (and the sum is positive); logs the raw sum."""
    total = float(weights.sum())
    if normalize and total > 0:
        weights = weights / total
    return weights, {"agg/weight_sum": total}


class ObjectiveCombiner:
    """Applies one registry aggregator at the level its kind calls for."""

    def __init__(self, config: MOPPOConfig, names: Sequence[str]):
        self.aggregator = build_aggregator(config)
        self.needs: str = self.aggregator.needs
        if self.needs not in ("coefficients", "losses", "gramian"):
            raise ValueError(f"aggregator {self.aggregator!r} needs {self.needs!r}: unsupported")
        self.config = config
        self.names = list(names)
        self.loss_weights: torch.Tensor | None = None
        self._loss_weight_stats: dict[str, float] = {}
        if self.needs == "losses":
            raw = torch.as_tensor(self.aggregator.loss_weights(len(self.names)))
            weights, self._loss_weight_stats = _normalized(raw, config.normalize_weights)
            self.loss_weights = weights.to(torch.float32)

    @property
    def gradient_level(self) -> bool:
        """Whether the weights are decided from gradients (a Gramian method)."""
        return self.needs == "gramian"

    def scalarize(self, advantages: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss weightings: ``[k, B, T]`` → ``Σ wᵢ Aᵢ`` ``[1, B, T]`` (before whitening and
        Noon); every other kind: unchanged."""
        if self.loss_weights is None:
            return advantages, {}
        weights = self.loss_weights.to(advantages)
        stats = {f"agg/weight/{n}": float(w) for n, w in zip(self.names, weights)}
        stats.update(self._loss_weight_stats)
        return torch.einsum("k,kbt->bt", weights, advantages).unsqueeze(0), stats

    def combine_advantages(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """PAMA (after the Noon clip): ``[k, B, T]`` → ``[1, B, T]``; other kinds: unchanged.

        ``all_reduce_sum`` (batch granularity) sums the masked totals over the processes, so
        every rank takes the same weights from the global batch means.
        """
        if self.needs != "coefficients":
            return advantages, {}
        granularity = self.config.pama_granularity
        combined, weights, s_star = pama_advantages(advantages, mask, granularity, all_reduce_sum)
        stats: dict[str, float] = {"agg/weight_sum": 1.0}  # on the simplex per token / batch
        if granularity == "token":
            token_mask = mask.to(weights.dtype)
            per_objective = (weights * token_mask).sum((1, 2)) / token_mask.sum().clamp(min=1)
            stats["agg/s_star"] = float((s_star * mask).sum() / mask.sum().clamp(min=1))
        else:
            per_objective = weights
            stats["agg/s_star"] = float(s_star)
        for name, w in zip(self.names, per_objective.tolist()):
            stats[f"agg/weight/{name}"] = w
        stats["agg/used_token_frac"] = float(((combined > 0) & mask.bool()).sum() / mask.sum())
        return combined.to(advantages.dtype).unsqueeze(0), stats

    def gramian_weights(self, gramian: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Gramian methods: the weights for a global Gramian (normalised per the config; from
        :class:`mogradient.GramianAccumulator`) and their stats."""
        raw = self.aggregator.weights(gramian)
        weights, stats = _normalized(raw, self.config.normalize_weights)
        stats.update({f"agg/weight/{n}": float(w) for n, w in zip(self.names, weights)})
        return weights, stats

    def policy_loss(self, losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """``Σ wᵢ Lᵢ`` at the gradient level; the single combined loss otherwise."""
        if weights is None:
            return losses[0]
        return weights.to(losses) @ losses
