"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mogradient.aggregation.checks import stream_seed
from mogradient.aggregation.kinds import AdvantageCombiner, AllReduceSum, Combination, Property
from mogradient.aggregation.registry import register
from mogradient.aggregators._coordinatewise import checked


@register("graddrop", "grad-drop")
class GradDrop(AdvantageCombiner):
    """Per coordinate, keeps only the objectives' values of one sign, drawn at random with the
    probability of positive sign purity ``P = ½(1 + Σᵢ gᵢ / Σᵢ |gᵢ|)``, and sums them
    (Algorithm 1, lines 10–15, with f the identity).

    For each coordinate a uniform ``U`` is drawn; the positive values are kept where ``P > U``,
    the negative ones where ``P < U``; objective i's kept value counts fully, a dropped one by
    its ``leak`` ℓᵢ: ``d = Σᵢ (ℓᵢ + (1 − ℓᵢ)Mᵢ) gᵢ``. The stream of ``U`` is
    ``numpy.random.default_rng(seed).random(shape)`` per call (float64), so a run is
    reproducible and :meth:`reset` restores it. The rule is per coordinate and needs J, not its
    Gramian, so it is an advantage combiner (the kind whose Jacobian call combines column by
    column); in the RL trainer it drops per token. Cost: O(n) per coordinate and one uniform
    draw. See ``docs/aggregators/graddrop.md``.

    Reference: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, *Just Pick a Sign:
    Optimizing Deep Multitask Models with Gradient Sign Dropout*, NeurIPS 2020.

    Args:
        leak: ``None`` (no leak) or one number in [0, 1] per objective: how much of a dropped
            value still passes.
        seed: seed of the stream of draws (a non-negative int), or ``None`` for fresh entropy
            drawn once at construction (then two instances differ).
    """

    properties = frozenset(
        {
            "non_negative_weights",
            "permutation_invariant",
            "scale_equivariant",
            "reset_restores",
            "non_differentiable",
        }
    )  # plus "deterministic" with an integer seed (the default): see claims()
    seeded = True
    example_settings = ({"seed": None},)

    def __init__(self, leak: Sequence[float] | None = None, seed: int | None = 0) -> None:
        if leak is not None:
            values = np.asarray(leak, dtype=np.float64)
            if values.ndim != 1 or not ((values >= 0) & (values <= 1)).all():
                raise ValueError(
                    f"leak must be None or one number in [0, 1] per objective, got {leak!r}"
                )
            self.leak: np.ndarray | None = values
        else:
            self.leak = None
        self._stream_seed = stream_seed(seed)
        self.seed = seed
        self._rng = np.random.default_rng(self._stream_seed)

    def claims(self) -> frozenset[Property]:
        claims: set[Property] = set(self.properties)
        if self.seed is not None:  # two instances draw the same stream
            claims.add("deterministic")
        if self.leak is not None and len(set(self.leak.tolist())) > 1:
            claims.discard("permutation_invariant")  # the leak is tied to positions
        return frozenset(claims)

    def _hyperparameters(self) -> dict[str, object]:
        leak = None if self.leak is None else self.leak.tolist()
        return {"leak": leak, "seed": self.seed}

    def reset(self) -> None:
        self._rng = np.random.default_rng(self._stream_seed)

    def combine(
        self,
        advantages: torch.Tensor,
        mask: torch.Tensor | None = None,
        all_reduce_sum: AllReduceSum | None = None,
        valid: torch.Tensor | None = None,
    ) -> Combination:
        """``Σᵢ (ℓᵢ + (1 − ℓᵢ)Mᵢ) Aᵢ`` per sample over the objectives that scored it (the others
        take no part in P nor in the sum), 0 where the mask is 0; weights ``[n, *batch]``
        (float64). One uniform per sample is drawn whatever the mask."""
        a, mask, valid = checked(advantages, mask, valid)
        n = a.shape[0]
        if self.leak is not None and self.leak.shape[0] != n:
            raise ValueError(
                f"leak has {self.leak.shape[0]} entries but got {n} objectives; pass one leak "
                "per objective"
            )
        x = torch.where(valid, a, 0.0).double()
        total, size = x.sum(dim=0), x.abs().sum(dim=0)
        purity = 0.5 * (1.0 + total / torch.where(size > 0, size, 1.0))
        u = torch.from_numpy(self._rng.random(tuple(a.shape[1:]))).to(a.device)
        keep = ((purity > u) & (x > 0)) | ((purity < u) & (x < 0))
        leak = torch.zeros(n, dtype=torch.float64, device=a.device)
        if self.leak is not None:
            leak = torch.from_numpy(self.leak).to(a.device)
        leak = leak.reshape((n,) + (1,) * (a.ndim - 1))
        weights = torch.where(valid, leak + (1.0 - leak) * keep.double(), 0.0)
        s = (weights.to(a.dtype) * a).sum(dim=0)
        return Combination(s * mask, weights, s)
