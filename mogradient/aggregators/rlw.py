"""RLW: random loss weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

import numpy as np

from mogradient.aggregation.checks import stream_seed
from mogradient.aggregation.kinds import LossWeighting, Property
from mogradient.aggregation.registry import register


@register("rlw", "random")
class RLW(LossWeighting):
    """Σ wᵢ Lᵢ with fresh random weights at every call: w = softmax(z), z ~ N(0, I).

    The "random loss weighting" baseline of Lin et al.: in expectation it is a rescaled mean,
    but the noise in the weights lets training move along the Pareto front, and the paper finds
    it competitive with most adaptive methods. Uses only the number of objectives, never their
    values, so it can also be called on a Jacobian alone. Cost: one backward of the weighted
    loss, plus n normal draws. See ``docs/aggregators/rlw.md``.

    Reference: Lin, Ye, Zhang, Tsang, *Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning*, TMLR 2022 (arXiv:2111.10603), with the standard normal as the
    distribution of the logits.

    Args:
        seed: seed of the stream of draws (a non-negative int). ``None`` draws a seed from
            fresh entropy once, at construction, so :meth:`reset` still restores that stream
            (but two instances built with ``None`` differ).
    """

    uses_loss_values = False
    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "scale_equivariant",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "deterministic" with an integer seed (the default): see claims()
    seeded = True
    example_settings = ({"seed": None},)

    def __init__(self, seed: int | None = 0) -> None:
        self._stream_seed = stream_seed(seed)
        self.seed = seed
        self._rng = np.random.default_rng(self._stream_seed)

    def claims(self) -> frozenset[Property]:
        if self.seed is None:  # two instances draw different streams
            return self.properties
        return self.properties | {"deterministic"}

    def _hyperparameters(self) -> dict[str, object]:
        return {"seed": self.seed}

    def _weigh(self, losses: np.ndarray) -> np.ndarray:
        z = self._rng.standard_normal(losses.shape[0])
        e = np.exp(z - np.max(z))
        return e / e.sum()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._stream_seed)
