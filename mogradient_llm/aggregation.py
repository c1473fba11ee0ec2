"""Where the objectives are combined, chosen by the aggregator's ``needs``.

* ``"coefficients"`` (PAMA): at the advantage level — one advantage per token, then one
  ordinary PPO loss (:func:`mogradient_llm.advantages.pama_advantages`).
* ``"losses"`` (``linear``/``morlhf``, ``mean``): at the loss level — ``Σ wᵢ Lᵢ`` of the
  per-objective surrogate losses with the registry's fixed weights.
* ``"gramian"`` (``mgda``, ``pcgrad``, ``cagrad``): at the gradient level — the Gramian of the
  per-objective policy-loss gradients over the policy parameters or over the last hidden
  states (MGDA-UB), weights from the registry, then one backward of ``Σ wᵢ Lᵢ``
  (:func:`mogradient.backward`). Under data parallelism the core all-reduces the k×k Gramian
  (features) or the k×d Jacobian (parameters), so every rank gets the same weights.

The value loss is never aggregated: it is added (sum over heads) outside the aggregator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

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


class ObjectiveCombiner:
    """Applies one registry aggregator at the level its ``needs`` calls for."""

    def __init__(self, config: MOPPOConfig, names: Sequence[str]):
        self.aggregator = build_aggregator(config)
        self.needs: str = self.aggregator.needs
        if self.needs not in ("coefficients", "losses", "gramian"):
            raise ValueError(f"aggregator {self.aggregator!r} needs {self.needs!r}: unsupported")
        self.config = config
        self.names = list(names)
        self.loss_weights: torch.Tensor | None = None
        if self.needs == "losses":
            w = self.aggregator.loss_weights(len(self.names))
            self.loss_weights = torch.as_tensor(w, dtype=torch.float32)

    def combine_advantages(
        self, advantages: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Advantages ``[k, B, T]`` → ``[m, B, T]`` with ``m = 1`` for PAMA, else ``k``."""
        if self.needs != "coefficients":
            return advantages, {}
        combined, weights, s_star = pama_advantages(advantages, mask, self.config.pama_granularity)
        stats: dict[str, float] = {}
        if self.config.pama_granularity == "token":
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

    def backward(
        self,
        policy_losses: torch.Tensor,
        value_loss: torch.Tensor,
        model: nn.Module,
        hidden: torch.Tensor,
        accelerator: Any,
    ) -> dict[str, float]:
        """Backward of the aggregated policy loss plus ``vf_coef`` × the value loss."""
        vf = self.config.vf_coef * value_loss
        if self.needs == "coefficients":
            accelerator.backward(policy_losses[0] + vf)
            return {}
        if self.needs == "losses":
            w = self.loss_weights.to(policy_losses)
            accelerator.backward(w @ policy_losses + vf)
            return {f"agg/weight/{n}": float(x) for n, x in zip(self.names, w)}
        return self._gramian_backward(policy_losses, vf, model, hidden, accelerator)

    def _gramian_backward(
        self,
        policy_losses: torch.Tensor,
        vf: torch.Tensor,
        model: nn.Module,
        hidden: torch.Tensor,
        accelerator: Any,
    ) -> dict[str, float]:
        """Gramian weights identical on every rank, through the core (:mod:`mogradient.autograd`).

        Features level: ``feature_weights`` all-reduces the k×k Gramian, then one backward of
        ``Σ wᵢ Lᵢ + vf`` that DDP averages like any other (one backward per step, as DDP needs).
        Parameters level: the value loss goes through DDP's backward, then ``mogradient.backward``
        all-reduces the k×d Jacobian once and adds the global direction to ``.grad``.
        """
        import mogradient

        losses = list(policy_losses.unbind())
        if self.config.gramian_level == "features":
            weights = mogradient.feature_weights(losses, hidden, self.aggregator)
            accelerator.backward(weights.to(policy_losses) @ policy_losses + vf)
        else:
            params = [
                p for p in accelerator.unwrap_model(model).policy.parameters() if p.requires_grad
            ]
            accelerator.backward(vf, retain_graph=True)
            weights = mogradient.backward(losses, params, aggregator=self.aggregator)
        return {f"agg/weight/{n}": float(x) for n, x in zip(self.names, weights)}
