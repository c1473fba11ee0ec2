"""DB-MTL: dual-balancing multi-task learning (Lin et al., 2023)."""

from __future__ import annotations

import numpy as np
import torch

from mogradient.aggregation.checks import check_loss_signs
from mogradient.aggregation.kinds import JacobianWeighting
from mogradient.aggregation.registry import register
from mogradient.aggregators._tracking import (
    check_non_negative,
    check_unit_rate,
    decayed,
    track,
)


@register("db-mtl", "dbmtl")
class DBMTL(JacobianWeighting):
    """Balances the losses by taking their logarithms and the gradients by rescaling each
    objective's EMA gradient of its log loss to the largest norm among them, then summing:
    ``d = Σᵢ (maxⱼ‖ĝⱼ‖ / ‖ĝᵢ‖) ĝᵢ``.

    Loss-scale balancing: the gradient of ``log Lᵢ`` is ``gᵢ / Lᵢ``, so every loss counts by
    its relative change. Gradient-magnitude balancing: the EMA ``ĝᵢ ← β_t ĝᵢ + (1 − β_t) gᵢ/Lᵢ``
    (from ĝ = 0, β_t = ``beta`` / t^``beta_decay`` at call t), each rescaled to the largest
    norm, so no objective's step is smaller than another's. A zero ĝᵢ adds nothing. The
    direction mixes in the gradients of past calls, so it is not ``Σ wᵢ gᵢ`` of this call's.

    As LibMTL's ``DB_MTL`` with these differences: the log is of ``Lᵢ`` itself (LibMTL:
    ``Lᵢ + 1e-8``), and no 1e-8 is added to the norms (a zero EMA gradient gets factor 0), so
    the direction is exactly scale-equivariant. Loss values must be positive.

    State: ĝ (the Jacobian's size, its dtype and device) and the call count. Cost: O(nd) per
    call beyond the Jacobian. See ``docs/aggregators/db-mtl.md``.

    Reference: Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Kwok, *Dual-Balancing for Multi-Task
    Learning*, arXiv:2308.12029, 2023 (LibMTL's ``DB_MTL``).

    Args:
        beta: the EMA's weight on the past, in [0, 1] (0: this call's gradients only).
        beta_decay: σ ≥ 0, the decay of that weight over calls, ``β_t = beta / t^σ``.
    """

    properties = frozenset(
        {
            "permutation_invariant",
            "scale_equivariant",
            "deterministic",
            "reset_restores",
            "non_differentiable",
        }
    )
    uses_loss_values = True
    needs_positive_losses = True
    example_settings = ({"beta": 0.0}, {"beta": 0.5, "beta_decay": 0.5})

    def __init__(self, beta: float = 0.9, beta_decay: float = 0.0) -> None:
        self.beta = check_unit_rate("beta", beta, "the EMA's weight on past gradients")
        self.beta_decay = check_non_negative(
            "beta_decay", beta_decay, "beta is divided by t^beta_decay at call t"
        )
        self.reset()

    def _hyperparameters(self) -> dict[str, object]:
        return {"beta": self.beta, "beta_decay": self.beta_decay}

    def reset(self) -> None:
        self._tracked: torch.Tensor | None = None
        self._calls = 0

    def _direction(self, jacobian: torch.Tensor, losses: np.ndarray | None) -> torch.Tensor:
        assert losses is not None
        check_loss_signs(
            losses,
            "DB-MTL needs positive loss values (it takes their logarithm), but objective {i} "
            "has loss {loss:g}; shift that objective by a constant (subtract a known lower "
            "bound, add a small margin) so it stays > 0",
        )
        self._check_state(self._tracked, jacobian)
        self._calls += 1
        log_gradients = jacobian / torch.as_tensor(losses, device=jacobian.device).to(
            jacobian.dtype
        ).unsqueeze(1)
        past = decayed(self.beta, self.beta_decay, self._calls)
        held = None if self._tracked is None else self._tracked.to(jacobian)
        self._tracked = track(held, log_gradients, 1.0 - past)
        # norms in float64: a float32 EMA near its range would overflow in its squares
        norms = torch.linalg.vector_norm(self._tracked.double(), dim=1)
        factors = torch.where(norms > 0, norms.max() / norms, torch.zeros_like(norms))
        return factors.to(jacobian.dtype) @ self._tracked
