"""PAMA: Pareto Multi-Objective Alignment (He & Maghsudi 2025, arXiv 2508.07768), Theorem 1.

For per-sample scalars A⁽¹⁾…A⁽ⁿ⁾ (the objectives' advantages, after the PPO clip indicator),
min over the simplex of (Σ cᵢ A⁽ⁱ⁾)² has the closed form s* = projection of 0 onto
[minᵢ A⁽ⁱ⁾, maxᵢ A⁽ⁱ⁾]. It bounds the min-norm problem of MGDA through Cauchy–Schwarz,
‖Σ cᵢ A⁽ⁱ⁾ ∇π/π_ref‖² ≤ (Σ cᵢ A⁽ⁱ⁾)² ‖∇π/π_ref‖², so it costs O(n) per sample and no extra
backward at all.
"""

from __future__ import annotations

from typing import Literal

import torch

from mogradient.aggregation.kinds import AdvantageCombiner, AllReduceSum, Combination, Property
from mogradient.aggregation.registry import register

Granularity = Literal["token", "batch"]


def pama_weights(
    advantages: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Theorem 1, vectorised over every dimension after the first.

    Args:
        advantages: ``[n_objectives, *batch]`` per-sample (or per-token) coefficients.
        valid: ``[n_objectives, *batch]`` bool, which objectives scored each sample (default:
            all). Min and max are over those only, the others get weight 0, and a sample no
            objective scored gets s* = 0 and no weight at all.

    Returns:
        ``(weights [n_objectives, *batch], s_star [*batch])`` with weights on the simplex and
        ``Σᵢ weightsᵢ · advantagesᵢ == s_star``:

        * all positive → one-hot on the argmin, so s* = min (ties share the weight equally);
        * all negative → one-hot on the argmax, so s* = max (ties share equally);
        * straddling 0 → weight only on the minimum and the maximum, c_min = max/(max − min),
          so that s* = 0 (for two objectives A₁ < 0 < A₂ this is c₁ = A₂/(A₂ − A₁));
        * a minimum or maximum of exactly 0 → s* = 0 with the weight on the zero entries.
    """
    a = torch.as_tensor(advantages)
    if a.ndim == 0:
        raise ValueError(
            "expected advantages of shape [n_objectives, *batch], got a scalar; "
            "add the objectives dimension first"
        )
    if a.shape[0] == 0:
        raise ValueError("got advantages for zero objectives; pass at least one")
    if not a.is_floating_point():
        a = a.to(torch.get_default_dtype())
    finite = torch.isfinite(a).reshape(a.shape[0], -1).all(dim=1)
    if not bool(finite.all()):
        i = int(torch.nonzero(~finite)[0])
        raise ValueError(
            f"the advantages of objective {i} contain NaN or Inf; check that objective's "
            "rewards and value head, or skip this batch"
        )
    if valid is None:
        valid = torch.ones(a.shape, dtype=torch.bool, device=a.device)
    elif valid.shape != a.shape:
        raise ValueError(
            f"valid has shape {tuple(valid.shape)} but the advantages {tuple(a.shape)}; pass "
            "one entry per objective and sample (True where that objective scored it)"
        )
    valid = valid.to(device=a.device, dtype=torch.bool)
    scored = valid.any(dim=0)
    inf = torch.tensor(float("inf"), dtype=a.dtype, device=a.device)
    lo = torch.where(scored, torch.where(valid, a, inf).amin(dim=0), 0.0)
    hi = torch.where(scored, torch.where(valid, a, -inf).amax(dim=0), 0.0)
    s_star = torch.clamp(torch.zeros_like(lo), min=lo, max=hi)

    is_min = ((a == lo) & valid).to(a.dtype)
    is_max = ((a == hi) & valid).to(a.dtype)
    on_min = is_min / is_min.sum(dim=0).clamp(min=1)
    on_max = is_max / is_max.sum(dim=0).clamp(min=1)
    span = hi - lo
    straddle = (lo < 0) & (hi > 0)
    safe_span = torch.where(straddle, span, torch.ones_like(span))
    c_min = torch.where(straddle, hi / safe_span, (lo >= 0).to(a.dtype))
    c_max = torch.where(straddle, -lo / safe_span, (lo < 0).to(a.dtype))
    weights = c_min * on_min + c_max * on_max
    # Every entry equal (a single objective included): min == max, so the two terms coincide.
    # A sample no objective scored: on_min is 0 there, so it gets no weight at all.
    weights = torch.where(span == 0, on_min, weights)
    return weights, s_star


@register("pama")
class PAMA(AdvantageCombiner):
    """PAMA's closed-form weights (Theorem 1): O(n) per sample, no Gramian, no extra backward.

    In RLHF (``mogradient_llm``) the coefficients are the objectives' clipped advantages:
    ``granularity="token"`` uses each sample's own s* (the default); ``"batch"`` takes one weight
    vector from the masked batch-mean advantages and applies it to every sample (take those
    means before whitening and Noon, or the choice follows noise).

    Called on a Jacobian ``[n, d]`` there are no advantages, so each coordinate is treated as a
    sample whose shared direction is that coordinate's unit vector: ``"token"`` applies Theorem 1
    column by column (step only where every objective agrees in sign, by the smallest amount);
    ``"batch"`` takes weights from each objective's mean over the coordinates and returns
    ``wᵀJ``. The token rule is a common descent direction (``J d ≥ 0``) that stops where
    objectives disagree in every coordinate.
    """

    properties = frozenset(
        {"permutation_invariant", "scale_equivariant", "deterministic", "non_differentiable"}
    )
    example_settings = ({"granularity": "batch"},)

    def __init__(self, granularity: Granularity = "token") -> None:
        if granularity not in ("token", "batch"):
            raise ValueError(f"granularity must be 'token' or 'batch', got {granularity!r}")
        self.granularity: Granularity = granularity

    def claims(self) -> frozenset[Property]:
        if self.granularity == "token":
            return self.properties | {"non_conflicting"}
        return self.properties

    def _hyperparameters(self) -> dict[str, object]:
        return {"granularity": self.granularity}

    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        valid: torch.Tensor | None = None,
    ) -> Combination:
        """``advantages [n, *batch]`` → the advantage PAMA follows per sample, ``[*batch]``.

        ``token``: s* of each sample's advantages over the objectives that scored it (``valid``
        ``[n, *batch]``, default all; after the Noon clip: their minimum); a sample none scored
        takes no part (0). ``batch``: one ``c`` = PAMA weights of the objectives' batch means,
        each over the masked samples it scored, and ``Σ cᵢ Aᵢ`` per sample over the objectives
        that scored it (a missing one adds nothing); with ``all_reduce_sum`` the means are over
        every process's batch.
        """
        a = torch.as_tensor(advantages)
        if mask is None:
            mask = torch.ones(a.shape[1:], dtype=a.dtype, device=a.device)
        elif mask.shape != a.shape[1:]:
            raise ValueError(
                f"the mask has shape {tuple(mask.shape)} but the advantages' batch shape is "
                f"{tuple(a.shape[1:])}; pass one mask entry per sample"
            )
        mask = mask.to(a.dtype if a.is_floating_point() else torch.get_default_dtype())
        if valid is not None and valid.shape != a.shape:
            raise ValueError(
                f"valid has shape {tuple(valid.shape)} but the advantages {tuple(a.shape)}; "
                "pass one entry per objective and sample (True where that objective scored it)"
            )
        if self.granularity == "token":
            weights, s_star = pama_weights(a, valid)
            return Combination(s_star * mask, weights, s_star)
        n, dims = a.shape[0], tuple(range(1, a.ndim))
        scored = mask if valid is None else mask * valid.to(mask.dtype)  # [n, *batch] or [*batch]
        counts = scored.sum(dims) if valid is not None else mask.sum().expand(n)
        totals = torch.cat([(a * scored).sum(dims).reshape(-1), counts.reshape(-1)])
        if all_reduce_sum is not None:
            totals = all_reduce_sum(totals)
        means = totals[:n] / totals[n:].clamp(min=1)
        weights, s_star = pama_weights(means, totals[n:] > 0)
        weights = weights.to(mask.dtype)
        combined = torch.tensordot(weights, (a * scored).to(mask.dtype), dims=1)
        return Combination(combined, weights, s_star)
