"""Soft-min advantage combination: a smooth minimum of normalised per-objective advantages."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mogradient.aggregation.checks import positive_or_hint
from mogradient.aggregation.kinds import AdvantageCombiner, AllReduceSum, Combination, Property
from mogradient.aggregation.preference import DRAWN_PREFERENCE, Preference
from mogradient.aggregation.registry import register
from mogradient.aggregators._coordinatewise import checked


def softmin(
    advantages: torch.Tensor,
    tau: float,
    preference: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = −τ·log Σᵢ p̃ᵢ exp(−Aᵢ/τ)`` per sample and its gradient ``w = ∂s/∂A``.

    Args:
        advantages: ``[n, *batch]``.
        tau: the temperature τ > 0.
        preference: ``[n]`` on the simplex.
        valid: ``[n, *batch]`` bool (default all): the sum runs over the objectives that scored
            the sample, with the preference renormalised over them (p̃); a sample with no such
            objective of positive preference gets ``s = 0`` and no weight.

    Returns:
        ``(s [*batch], w [n, *batch])``, ``wᵢ = p̃ᵢ exp(−Aᵢ/τ) / Σⱼ p̃ⱼ exp(−Aⱼ/τ)`` on the simplex.
        ``min A ≤ s ≤ Σ p̃ᵢAᵢ`` (over the objectives taking part): ``s → min`` as τ → 0 (within
        ``τ·log(1/p̃ᵢ)`` of the minimum ``Aᵢ``) and ``s → Σ p̃ᵢAᵢ`` as τ → ∞. Computed around
        the minimum, ``s = m − τ·log Σ p̃ᵢ exp(−(Aᵢ − m)/τ)``, so any finite input and τ give
        finite values.
    """
    shape = (-1,) + (1,) * (advantages.ndim - 1)
    p = preference.to(advantages).reshape(shape).expand_as(advantages)
    part = p > 0
    if valid is not None:
        part = part & valid
    taking = part.any(dim=0)
    inf = torch.tensor(float("inf"), dtype=advantages.dtype, device=advantages.device)
    m = torch.where(taking, torch.where(part, advantages, inf).amin(dim=0), 0.0)
    total = torch.where(part, p, 0.0).sum(dim=0)
    log_p = torch.where(part, torch.log(p / torch.where(taking, total, 1.0)), -inf)
    x = torch.where(part, -(advantages - m) / tau, 0.0)  # ≤ 0
    logits = torch.where(part, log_p + x, -inf)  # ≤ log p̃ᵢ ≤ 0
    safe = torch.where(taking, logits, torch.zeros_like(logits))  # no all -inf column
    lse = torch.logsumexp(safe, dim=0)
    # Near 0 the log-sum-exp's absolute rounding (ε, from sums of terms near 1) can be all of a
    # small s − m: there log1p(Σ p̃ᵢ expm1(xᵢ)) (Σ p̃ᵢ = 1; terms of one sign, so relative error
    # nε; 1 + S ≥ e^-½ keeps log1p well conditioned) gives it to relative precision.
    p_tilde = torch.exp(torch.where(part, log_p, 0.0)) * part
    near = torch.log1p((p_tilde * torch.expm1(x)).sum(dim=0))
    lse = torch.where(lse.abs() < 0.5, near, lse)
    s = torch.where(taking, m - tau * lse, 0.0)
    w = torch.where(taking, torch.exp(safe - lse), 0.0)  # the softmax, from the same sum
    return s, w


@register("softmin", "soft-min")
class SoftMin(AdvantageCombiner):
    """Combine normalised per-objective advantages by a smooth minimum with temperature τ:
    ``s = −τ·log Σᵢ pᵢ exp(−zᵢ/τ)`` per sample, the Tchebycheff (max–min) combination
    ``minᵢ zᵢ`` in the limit τ → 0 and the linear one ``Σ pᵢzᵢ`` as τ → ∞.

    Normalisation (``normalize=True``): each objective's advantages are standardised over the
    batch, ``zᵢ = (Aᵢ − μᵢ)/σᵢ``, with ``μᵢ`` and ``σᵢ`` (population) taken over the masked
    samples that objective scored and summed over the processes with ``all_reduce_sum``, so
    every rank applies the same affine map; an objective with ``σᵢ = 0`` has ``zᵢ = 0``. The
    objectives are then in the same units and τ is unitless. ``normalize=False`` takes the
    advantages as they come (then τ is in their units).

    The combined advantage is ``s`` (masked); the weights reported are ``w = ∂s/∂z``, on the
    simplex per sample (wᵢ ∝ pᵢ exp(−zᵢ/τ)): the objective on which a sample does worst counts
    most. Costs O(n) per sample, no Gramian and no extra backward. Recent multi-reward GRPO
    work combines per-objective normalised advantages this way (soft-min / Tchebycheff-like);
    see ``docs/aggregators/softmin.md``.

    Args:
        tau: the temperature τ, finite and > 0.
        preference: one non-negative entry per objective, not all zero (normalised to sum to 1);
            ``None``: uniform. An objective of preference 0 takes no part.
        normalize: standardise each objective's advantages over the batch first.
    """

    properties = frozenset(
        {
            "simplex_weights",
            "non_negative_weights",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    preference_aware = True
    example_settings = ({"tau": 0.01}, {"tau": 10.0, "preference": DRAWN_PREFERENCE})

    def __init__(
        self,
        tau: float = 1.0,
        preference: Sequence[float] | None = None,
        normalize: bool = True,
    ) -> None:
        self.tau = positive_or_hint("tau", tau, "for the hard minimum use a small tau such as 1e-3")
        self.preference = Preference(preference)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize

    def claims(self) -> frozenset[Property]:
        return self.preference.with_permutation_invariance(self.properties)

    def _hyperparameters(self) -> dict[str, object]:
        return {"tau": self.tau, "preference": self.preference, "normalize": self.normalize}

    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        valid: torch.Tensor | None = None,
    ) -> Combination:
        """``advantages [n, *batch]`` → the soft-min ``s`` per sample ``[*batch]`` (0 where the
        mask is 0 or no objective of positive preference scored the sample), with the weights
        ``[n, *batch]`` (float64) and ``s`` itself as ``s_star``. Computed in float64 (O(n) per
        sample), so the weights sum to 1 to float64 rounding; ``s`` is returned in the
        advantages' dtype (float32 for half-precision ones)."""
        a, mask, valid = checked(
            advantages,
            mask,
            valid,
            noun="advantages",
            fix="check that objective's rewards and value head",
        )
        p = torch.as_tensor(self.preference.resolve(a.shape[0]))
        z = self._normalized(a, mask, valid, all_reduce_sum) if self.normalize else a.double()
        s, w = softmin(z, self.tau, p, valid)
        s = s.to(a.dtype)
        return Combination(s * mask, w, s)

    @staticmethod
    def _normalized(
        a: torch.Tensor,
        mask: torch.Tensor,
        valid: torch.Tensor | None,
        all_reduce_sum: AllReduceSum | None,
    ) -> torch.Tensor:
        """``(Aᵢ − μᵢ)/σᵢ`` per objective over the masked samples it scored (two passes, each
        one all-reduce: counts and sums ``[2n]``, then squared deviations ``[n]``). Taken in
        float64, whose range holds the squares of any float32 advantage."""
        a, mask = a.double(), mask.double()
        n, dims = a.shape[0], tuple(range(1, a.ndim))
        scored = mask.expand_as(a) if valid is None else mask * valid.to(a.dtype)
        counts = scored.sum(dims)
        totals = torch.cat([(a * scored).sum(dims), counts])
        if all_reduce_sum is not None:
            totals = all_reduce_sum(totals)
        count = totals[n:].clamp(min=1)
        shape = (n,) + (1,) * (a.ndim - 1)
        centred = a - (totals[:n] / count).reshape(shape)
        squares = (centred**2 * scored).sum(dims)
        if all_reduce_sum is not None:
            squares = all_reduce_sum(squares)
        sigma = torch.sqrt(squares / count).reshape(shape)
        return torch.where(sigma > 0, centred / torch.where(sigma > 0, sigma, 1.0), 0.0)
