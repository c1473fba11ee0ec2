"""DWA: dynamic weight average (Liu et al., CVPR 2019)."""

from __future__ import annotations

import math

import numpy as np

from mogradient.aggregation.checks import check_loss_signs, check_objective_count
from mogradient.aggregation.kinds import LossWeighting
from mogradient.aggregation.registry import register


@register("dwa")
class DWA(LossWeighting):
    """Dynamic weight average: wᵢ(t) = n·softmax(rᵢ/T), rᵢ = Lᵢ(t−1)/Lᵢ(t−2), the ratio of the
    loss values passed at the two previous calls; wᵢ = 1 at the first two calls.

    An objective whose loss fell more slowly than the others' over the last step gets more
    weight. The weights sum to n, as in the paper (so the first two calls train on the plain sum
    Σ Lᵢ; divide the learning rate by n to compare with ``mean``). The paper takes the ratio of
    epoch-average losses; here each call is one time step, so pass averaged losses if the
    per-batch ratio is too noisy. Loss values must be positive (the ratio needs a consistent,
    non-zero sign). Cost: one backward of the weighted loss; O(n) per call, two past loss
    vectors of state. See ``docs/aggregators/dwa.md``.

    Reference: Liu, Johns, Davison, *End-to-End Multi-Task Learning with Attention*, CVPR 2019.

    Args:
        temperature: T > 0; larger T makes the weights more uniform (the paper uses 2).
    """

    properties = frozenset(
        {
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    needs_positive_losses = True
    example_settings = ({"temperature": 0.5}, {"temperature": 10.0})

    def __init__(self, temperature: float = 2.0) -> None:
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self._history: list[np.ndarray] = []

    def _hyperparameters(self) -> dict[str, object]:
        return {"temperature": self.temperature}

    def reset(self) -> None:
        self._history = []

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        n = losses.shape[0]
        check_loss_signs(
            losses,
            "DWA needs positive loss values (it divides consecutive losses), but objective {i} "
            "has loss {loss:g}; shift that objective by a constant so it stays > 0",
        )
        if self._history:
            check_objective_count("DWA's history", self._history[-1].shape[0], "objectives", n)
        if len(self._history) < 2:
            weights = np.ones(n)
        else:
            older, newer = self._history
            z = (newer / older) / self.temperature
            e = np.exp(z - z.max())
            weights = n * (e / e.sum())
        self._history = [*self._history, losses.copy()][-2:]
        return weights
