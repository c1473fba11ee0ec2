"""Trimmed mean: the coordinate-wise mean after dropping the extreme values (Yin et al. 2018)."""

from __future__ import annotations

import torch

from mogradient.aggregation.kinds import AdvantageCombiner, AllReduceSum, Combination
from mogradient.aggregation.registry import register
from mogradient.aggregators._coordinatewise import checked


@register("trimmed-mean", "trimmedmean")
class TrimmedMean(AdvantageCombiner):
    """Per coordinate, drops the ``trim_number`` largest and smallest of the objectives' values
    and averages the rest: a Byzantine-robust mean.

    Called on a Jacobian ``[n, d]`` this is TorchJD's ``TrimmedMean`` (each column trimmed on its
    own); in the RL trainer, the objectives' advantages are trimmed per token. With fewer than
    ``2·trim_number + 1`` values taking part (TorchJD refuses), ``⌊(m − 1)/2⌋`` are trimmed from
    each end of the m there: the median for odd m, the mean of the middle two for even m. A
    coordinate-wise rule needs the Jacobian (not its Gramian), so it is an advantage combiner,
    the kind whose Jacobian call combines column by column. Cost: a sort of n values per
    coordinate. See ``docs/aggregators/trimmed-mean.md``.

    Reference: Yin, Chen, Ramchandran, Bartlett, *Byzantine-Robust Distributed Learning: Towards
    Optimal Statistical Rates*, ICML 2018.

    Args:
        trim_number: how many values to drop at each end, an integer ≥ 0 (0: the mean).
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
    example_settings = ({"trim_number": 0}, {"trim_number": 2})

    def __init__(self, trim_number: int = 1) -> None:
        if isinstance(trim_number, bool) or not isinstance(trim_number, int) or trim_number < 0:
            raise ValueError(f"trim_number must be an integer >= 0, got {trim_number!r}")
        self.trim_number = trim_number

    def _hyperparameters(self) -> dict[str, object]:
        return {"trim_number": self.trim_number}

    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        valid: torch.Tensor | None = None,
    ) -> Combination:
        """The trimmed mean per sample over the objectives that scored it (``valid``), 0 where
        the mask is 0 or none scored; weights ``[n, *batch]`` (float64, ``1/kept`` on the kept
        values, which sum to 1). Per-sample, so ``all_reduce_sum`` is not needed."""
        a, mask, valid = checked(advantages, mask, valid)
        n = a.shape[0]
        inf = torch.tensor(float("inf"), dtype=a.dtype, device=a.device)
        order = torch.argsort(torch.where(valid, a, inf), dim=0, stable=True)
        count = valid.sum(dim=0)
        trim = torch.clamp((count - 1) // 2, min=0).clamp(max=self.trim_number)
        rank = torch.arange(n, device=a.device).reshape((n,) + (1,) * (a.ndim - 1))
        kept_sorted = (rank >= trim) & (rank < count - trim)
        kept = torch.zeros_like(valid).scatter(0, order, kept_sorted)
        kept_count = (count - 2 * trim).clamp(min=1).to(torch.float64)
        weights = kept.to(torch.float64) / kept_count
        s = torch.where(kept, a, 0.0).sum(dim=0) / kept_count.to(a.dtype)
        return Combination(s * mask, weights, s)
