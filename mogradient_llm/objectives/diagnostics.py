"""Per-objective diagnostics logged every step: how much the objectives conflict.

At the gradient level the cosine of every pair of the objectives' policy-loss gradients (read
off the Gramian the aggregator decides from: ``cos = Gᵢⱼ / √(Gᵢᵢ Gⱼⱼ)``); at the advantage
level the correlation of the objectives' advantages over the response tokens (of the scores
over the completions when a loss weighting has already summed the advantages). The conflict
rate is the fraction of pairs whose cosine (correlation) is negative. An engine may keep each
step's :class:`Correlation` and compute them when it logs, a window of steps in one batched pass
(:func:`correlation_stats`; the TRL adapter does).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Literal, NamedTuple

import torch

Stats = dict[str, float]
Correlated = Literal["adv_corr", "score_corr"]


def _pair_stats(matrix: torch.Tensor, names: Sequence[str], kind: str) -> Stats:
    """``diag/{kind}/{a}/{b}`` for every pair and ``diag/conflict_rate``."""
    pairs = list(combinations(range(len(names)), 2))
    stats = {f"diag/{kind}/{names[i]}/{names[j]}": float(matrix[i, j]) for i, j in pairs}
    if pairs:
        stats["diag/conflict_rate"] = sum(float(matrix[i, j]) < 0 for i, j in pairs) / len(pairs)
    return stats


def cosine_matrix(gramian: torch.Tensor) -> torch.Tensor:
    """Pairwise cosines ``[..., k, k]`` of the vectors whose Gramian is ``gramian``
    ``[..., k, k]`` (0 for a zero vector)."""
    gramian = gramian.double()
    norms = gramian.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()
    outer = norms[..., :, None] * norms[..., None, :]
    cos = torch.where(outer > 0, gramian / outer.clamp(min=1e-300), torch.zeros_like(gramian))
    return cos.clamp(-1.0, 1.0)


def gradient_diagnostics(gramian: torch.Tensor, names: Sequence[str]) -> Stats:
    """The gradients' cosine for every pair of objectives and the conflict rate."""
    return _pair_stats(cosine_matrix(gramian), names, "grad_cos")


def correlation_matrices(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted Pearson correlations ``[n, k, k]`` of the rows of each of ``n`` samples
    ``x [n, k, m]`` under its ``weights [n, m]`` (0 for a constant row): one pass for a batch
    of steps, each computed as it would be alone."""
    w = weights.double()
    x = x.double()
    total = w.sum(-1, keepdim=True).clamp(min=1e-300)
    centred = x - (x * w[:, None]).sum(-1, keepdim=True) / total[:, None]
    return cosine_matrix((centred * w[:, None]) @ centred.transpose(-1, -2))


def correlation_matrix(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted Pearson correlations ``[k, k]`` of the rows of ``x [k, ...]`` (0 for a constant
    row); ``weights`` broadcast to ``x[0]`` (a mask)."""
    w = weights.expand_as(x[0]).flatten()
    return correlation_matrices(x.flatten(1)[None], w[None])[0]


class Correlation(NamedTuple):
    """What one step's correlation diagnostics read: the rows ``x [k, m]``, the weight of each
    column ``weights [m]`` (``None``: ``x`` are scores, NaN where not scored, and a column
    counts when every row scored it), and which correlation it is (``kind``). Computed when
    logged: :func:`correlation_stats` takes a window of them in one pass."""

    kind: Correlated
    x: torch.Tensor
    weights: torch.Tensor | None


def advantage_correlation(advantages: torch.Tensor, mask: torch.Tensor) -> Correlation:
    """The advantages ``[k, B, T]`` over the response tokens of ``mask``."""
    return Correlation("adv_corr", advantages.flatten(1), mask.expand_as(advantages[0]).flatten())


def score_correlation(scores: torch.Tensor) -> Correlation:
    """The rewards ``scores [k, B]`` over the completions every reward scored (NaN: none)."""
    return Correlation("score_corr", scores, None)


def correlation_stats(steps: Sequence[Correlation], names: Sequence[str]) -> list[Stats]:
    """Every pair's correlation and the conflict rate of each step, in order; the steps of one
    kind and shape in one batched pass."""
    batches: dict[tuple[Correlated, tuple[int, ...]], list[int]] = {}
    for i, step in enumerate(steps):
        batches.setdefault((step.kind, tuple(step.x.shape)), []).append(i)
    out: list[Stats] = [{} for _ in steps]
    for (kind, _), index in batches.items():
        x = torch.stack([steps[i].x for i in index])
        if kind == "score_corr":
            weights = (~torch.isnan(x)).all(1)
            x = x.nan_to_num(0.0)
        else:
            weights = torch.stack([w for i in index if (w := steps[i].weights) is not None])
        for i, matrix in zip(index, correlation_matrices(x, weights).cpu()):
            out[i] = _pair_stats(matrix, names, kind)
    return out


def advantage_diagnostics(
    advantages: torch.Tensor, mask: torch.Tensor, names: Sequence[str]
) -> Stats:
    """The advantages' correlation for every pair of objectives (``[k, B, T]`` over the response
    tokens of ``mask``) and the conflict rate."""
    return correlation_stats([advantage_correlation(advantages, mask)], names)[0]


def score_diagnostics(scores: torch.Tensor, names: Sequence[str]) -> Stats:
    """The rewards' correlation for every pair of objectives over the completions that every
    reward scored (``scores [k, B]``, NaN = no score) and the conflict rate."""
    return correlation_stats([score_correlation(scores)], names)[0]
