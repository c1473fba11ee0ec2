"""Per-objective diagnostics logged every step: how much the objectives conflict.

At the gradient level the cosine of every pair of the objectives' policy-loss gradients (read
off the Gramian the aggregator decides from: ``cos = Gᵢⱼ / √(Gᵢᵢ Gⱼⱼ)``); at the advantage
level the correlation of the objectives' advantages over the response tokens (of the scores
over the completions when a loss weighting has already summed the advantages). The conflict
rate is the fraction of pairs whose cosine (correlation) is negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch

Stats = dict[str, float]


def _pair_stats(matrix: torch.Tensor, names: Sequence[str], kind: str) -> Stats:
    """``diag/{kind}/{a}/{b}`` for every pair and ``diag/conflict_rate``."""
    pairs = list(combinations(range(len(names)), 2))
    stats = {f"diag/{kind}/{names[i]}/{names[j]}": float(matrix[i, j]) for i, j in pairs}
    if pairs:
        stats["diag/conflict_rate"] = sum(float(matrix[i, j]) < 0 for i, j in pairs) / len(pairs)
    return stats


def cosine_matrix(gramian: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines ``[k, k]`` of the vectors whose Gramian is ``gramian`` (0 for a zero
    vector)."""
    gramian = gramian.double()
    norms = gramian.diagonal().clamp(min=0).sqrt()
    outer = norms[:, None] * norms[None, :]
    cos = torch.where(outer > 0, gramian / outer.clamp(min=1e-300), torch.zeros_like(gramian))
    return cos.clamp(-1.0, 1.0)


def gradient_diagnostics(gramian: torch.Tensor, names: Sequence[str]) -> Stats:
    """The gradients' cosine for every pair of objectives and the conflict rate."""
    return _pair_stats(cosine_matrix(gramian), names, "grad_cos")


def correlation_matrix(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted Pearson correlations ``[k, k]`` of the rows of ``x [k, ...]`` (0 for a constant
    row); ``weights`` broadcast to ``x[0]`` (a mask)."""
    w = weights.expand_as(x[0]).double().flatten()
    x = x.double().flatten(1)
    total = w.sum().clamp(min=1e-300)
    centred = x - (x * w).sum(1, keepdim=True) / total
    return cosine_matrix((centred * w) @ centred.T)


def advantage_diagnostics(
    advantages: torch.Tensor, mask: torch.Tensor, names: Sequence[str]
) -> Stats:
    """The advantages' correlation for every pair of objectives (``[k, B, T]`` over the response
    tokens of ``mask``) and the conflict rate."""
    return _pair_stats(correlation_matrix(advantages, mask), names, "adv_corr")


def score_diagnostics(scores: torch.Tensor, names: Sequence[str]) -> Stats:
    """The rewards' correlation for every pair of objectives over the completions that every
    reward scored (``scores [k, B]``, NaN = no score) and the conflict rate."""
    scored = (~torch.isnan(scores)).all(0)
    return _pair_stats(correlation_matrix(scores.nan_to_num(0.0), scored), names, "score_corr")
