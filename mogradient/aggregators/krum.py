"""Krum and Multi-Krum: the gradients closest to their neighbours (Blanchard et al. 2017)."""

from __future__ import annotations

import warnings

import numpy as np

from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import register


def _count(name: str, value: int, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


@register("krum", "multi-krum")
class Krum(GramianWeighting):
    """Averages the ``n_selected`` gradients whose ``n − f − 2`` nearest other gradients are
    closest (the smallest sum of distances), f = ``n_byzantine``: a Byzantine-robust choice that
    ignores up to f arbitrary gradients.

    The distances come from the Gramian, ‖gᵢ − gⱼ‖² = Gᵢᵢ + Gⱼⱼ − 2Gᵢⱼ, so Krum is a Gramian
    weighting (as in TorchJD). Where scores tie at the cut, the remaining places are shared
    equally among the tied gradients (TorchJD picks some of them), which keeps the result
    independent of the objectives' order. With n ≤ f + 2 objectives no neighbour is left to
    score by and Krum's guarantee cannot hold (TorchJD refuses): every gradient ties and the
    result is the mean, with a ``UserWarning`` (once per instance); ``n_selected`` above n
    selects all n. Cost: O(n² log n) on the Gramian. See ``docs/aggregators/krum.md``.

    Reference: Blanchard, El Mhamdi, Guerraoui, Stainer, *Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent*, NeurIPS 2017 (Krum and Multi-Krum).

    Args:
        n_byzantine: f, how many gradients may be adversarial (an integer ≥ 0).
        n_selected: how many of the best-scored gradients to average (1: Krum; more:
            Multi-Krum).
    """

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    example_settings = ({"n_byzantine": 1}, {"n_selected": 2})

    def __init__(self, n_byzantine: int = 0, n_selected: int = 1) -> None:
        self.n_byzantine = _count("n_byzantine", n_byzantine, 0)
        self.n_selected = _count("n_selected", n_selected, 1)
        #: Whether the too-few-objectives warning was given (once per instance).
        self.warned_too_few = False

    def _hyperparameters(self) -> dict[str, object]:
        return {"n_byzantine": self.n_byzantine, "n_selected": self.n_selected}

    def _solve(self, gramian: np.ndarray) -> np.ndarray:
        n = gramian.shape[0]
        neighbours = n - self.n_byzantine - 2
        if neighbours < 1:
            if not self.warned_too_few:
                self.warned_too_few = True
                warnings.warn(
                    f"{self!r} got {n} objectives: Krum needs at least n_byzantine + 3 = "
                    f"{self.n_byzantine + 3} to score them, so it returns their mean; lower "
                    "n_byzantine or add objectives. (Warned once per instance.)",
                    UserWarning,
                    stacklevel=4,
                )
            return np.full(n, 1.0 / n)
        diagonal = np.diagonal(gramian)
        squared = diagonal[:, None] + diagonal[None, :] - 2.0 * gramian
        distances = np.sqrt(np.maximum(squared, 0.0))
        np.fill_diagonal(distances, np.inf)
        scores = np.sort(distances, axis=1)[:, :neighbours].sum(axis=1)
        k = min(self.n_selected, n)
        cut = np.sort(scores)[k - 1]
        below, tied = scores < cut, scores == cut
        weights = below / k
        return weights + tied * ((k - int(below.sum())) / (k * int(tied.sum())))
