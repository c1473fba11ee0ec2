"""Pareto set learning: one model maps every preference to its solution, trained by aggregators.

:func:`preference_sweep` spends one descent per point of the front; :func:`pareto_set_learning`
trains a single small network ``x(p)`` from a preference ``p`` on the simplex to a decision
vector (Navon et al. 2021, Lin et al. 2022; LibMOON's PSL). At every step it draws a fresh batch
of preferences from a Dirichlet over the simplex, decodes them, and lets the preference-aware
aggregator ``aggregator(p)`` decide, from the Jacobian of the objectives at ``x(p)`` (and the
loss values), the direction ``d(p)`` in which that point should move. The model's parameters
get ``Σ_p (∂x(p)/∂θ)ᵀ d(p)``, one backward through the network for the whole batch, and take an
Adam step. Loss weightings (linear, Tchebycheff, STCH) and Gramian methods (EPO, UPGrad, ...)
plug in alike, because both hand back a direction for a Jacobian.

After training the model decodes the given preferences, and the points are scored exactly as
a sweep's (:class:`~mogradient.pareto.sweep.SweepResult`). Why and when:
``docs/pareto-set-learning.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from mogradient.aggregation.kinds import Aggregator
from mogradient.pareto.metrics import hypervolume, igd_plus, is_non_dominated, spacing
from mogradient.pareto.problems.base import Problem
from mogradient.pareto.sweep import (
    IDEAL_FLOOR,
    IDEAL_MARGIN,
    AggregatorFactory,
    SweepResult,
    _check_positive_int,
    _ideal_vector,
    _preference_matrix,
    check_betas,
    check_positive_number,
    front_and_reference,
    values_and_jacobians,
)


class PreferenceToSolution(nn.Module):
    """MLP ``p [K, n_obj] -> x [K, n_var]`` whose sigmoid output lies inside the problem's box.

    Two hidden ReLU layers of width ``hidden``; the output ``lower + (upper - lower) σ(z)`` is
    feasible by construction and never lands on a bound (where ZDT's ``sqrt(x1)`` has an
    infinite slope), as the sweep's interior steps never do.
    """

    def __init__(self, problem: Problem, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(problem.n_obj, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, problem.n_var),
        ).to(torch.float64)
        self.lower: torch.Tensor = problem.lower.clone()
        self.width: torch.Tensor = problem.upper - problem.lower

    def forward(self, preferences: torch.Tensor) -> torch.Tensor:
        return self.lower + self.width * torch.sigmoid(self.net(preferences))


def pareto_set_learning(
    problem: Problem,
    aggregator: AggregatorFactory,
    preferences: np.ndarray | Sequence[Sequence[float]] | int,
    *,
    steps: int = 1000,
    batch: int = 16,
    lr: float = 1e-2,
    betas: tuple[float, float] = (0.0, 0.9),
    schedule: Literal["cosine", "constant"] = "cosine",
    hidden: int = 64,
    concentration: float = 1.0,
    ideal: Literal["running"] | Sequence[float] | np.ndarray | None = "running",
    ref_point: Sequence[float] | np.ndarray | None = None,
    front: np.ndarray | None = None,
    seed: int = 0,
) -> SweepResult:
    """Train one preference-to-solution model, decode ``preferences`` and score them as a front.

    Same arguments and result as :func:`~mogradient.pareto.preference_sweep`, less the
    per-point ones (``starts``, ``optimizer``, ``bounds``), plus the model's.

    Args:
        problem: any :class:`~mogradient.pareto.Problem` (box-constrained, differentiable).
        aggregator: ``preference -> Aggregator`` of a **preference-aware** method (its class
            sets ``preference_aware``); called afresh for every drawn preference at every step
            (so a method's state does not carry over between preferences), e.g.
            ``lambda p: get_aggregator("epo", preference=p)``.
        preferences: the ``[P, n_obj]`` preferences to decode after training (non-negative
            rows, not all zero, normalised to sum to 1 before they reach the model), or an int
            for the Das–Dennis lattice, as in the sweep.
        steps: training steps; each evaluates ``batch`` points with their Jacobians.
        batch: preferences drawn per step (Dirichlet with every concentration equal to
            ``concentration``; 1 is uniform on the simplex).
        lr: Adam's initial learning rate for the model's parameters.
        betas: Adam's ``(β₁, β₂)``, each in ``[0, 1)``.
        schedule: ``"cosine"`` decays the learning rate to 0 over ``steps``; ``"constant"``.
        hidden: width of the two hidden layers.
        concentration: of the Dirichlet the training preferences are drawn from; below 1 puts
            more of them near the simplex's corners (the front's ends).
        ideal: as in the sweep: ``"running"`` (best value seen per objective over all points
            evaluated so far, less a small margin), a fixed vector, or ``None`` (raw values).
        ref_point: hypervolume reference point; ``None``: :func:`default_reference_point`.
        front: exact-front sample for IGD+; ``None``: ``problem.pareto_front(FRONT_POINTS)``.
        seed: seeds the model's initialisation and the drawn preferences.

    Returns:
        :class:`~mogradient.pareto.sweep.SweepResult` of the decoded points; ``n_evals`` counts
        ``steps * batch`` training evaluations and one per decoded point.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a mogradient.pareto.Problem, got {type(problem)}")
    prefs = _preference_matrix(preferences, problem.n_obj)
    for name, value in (("steps", steps), ("batch", batch), ("hidden", hidden)):
        _check_positive_int(name, value)
    check_positive_number("lr", lr)
    check_positive_number("concentration", concentration)
    check_betas(betas)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    fixed_ideal = _ideal_vector(ideal, problem.n_obj)
    front, ref = front_and_reference(problem, front, ref_point)
    _build_checked(aggregator, prefs[0] / prefs[0].sum())

    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PreferenceToSolution(problem, hidden)
    adam = torch.optim.Adam(model.parameters(), lr=float(lr), betas=betas)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=steps)
        if schedule == "cosine"
        else None
    )
    best = torch.full((problem.n_obj,), math.inf, dtype=torch.float64)
    worst = torch.full((problem.n_obj,), -math.inf, dtype=torch.float64)
    for step in range(steps):
        drawn = rng.dirichlet(np.full(problem.n_obj, float(concentration)), size=batch)
        drawn = np.maximum(drawn, np.finfo(np.float64).tiny)  # EPO refuses a zero entry
        drawn /= drawn.sum(axis=1, keepdims=True)
        x = model(torch.as_tensor(drawn))
        values, jacobians = values_and_jacobians(problem, x.detach())
        if isinstance(fixed_ideal, str):  # "running"
            best = torch.minimum(best, values.min(dim=0).values)
            worst = torch.maximum(worst, values.max(dim=0).values)
            spread = torch.maximum(worst - best, best.abs())
            losses = values - (best - IDEAL_MARGIN * spread - IDEAL_FLOOR)
        elif fixed_ideal is None:
            losses = values
        else:
            losses = values - fixed_ideal
        direction = torch.stack(
            [
                _build_checked(aggregator, p)(j, losses=v)
                for p, j, v in zip(drawn, jacobians, losses, strict=True)
            ]
        )
        if not torch.isfinite(direction).all():
            row = int((~torch.isfinite(direction)).any(dim=1).nonzero()[0])
            raise FloatingPointError(
                f"the aggregator returned a non-finite direction at step {step} for the drawn "
                f"preference {drawn[row].tolist()} (objectives {values[row].tolist()}); check "
                "that the method accepts these loss values, or pass ideal= to shift them"
            )
        adam.zero_grad()
        x.backward(direction.to(x.dtype))  # Σ_p (∂x(p)/∂θ)ᵀ d(p)
        adam.step()
        if scheduler is not None:
            scheduler.step()

    with torch.no_grad():
        final_x = model(torch.as_tensor(prefs / prefs.sum(axis=1, keepdims=True)))
        F = problem.evaluate(final_x).numpy()
    kept = F[is_non_dominated(F)]
    return SweepResult(
        preferences=prefs,
        x=final_x,
        F=F,
        n_evals=steps * batch + len(prefs),
        ref_point=ref,
        hypervolume=hypervolume(kept, ref),
        igd_plus=igd_plus(F, front),
        spacing=spacing(kept) if len(kept) >= 2 else math.nan,
    )


def _build_checked(factory: AggregatorFactory, preference: np.ndarray) -> Aggregator:
    """``factory(preference)``, checked to be an aggregator of a preference-aware method."""
    if not callable(factory):
        raise TypeError(
            "aggregator must be a callable preference -> Aggregator, e.g. "
            "lambda p: mogradient.get_aggregator('tchebycheff', preference=p)"
        )
    agg = factory(preference.copy())
    if not isinstance(agg, Aggregator):
        raise TypeError(
            f"the aggregator factory returned {type(agg).__name__}, not a mogradient "
            "Aggregator; return e.g. get_aggregator(name, preference=p)"
        )
    if not type(agg).preference_aware:
        raise TypeError(
            f"pareto_set_learning needs a preference-aware aggregator, got {agg!r}: without "
            "a preference input every preference gets the same update and the model cannot "
            "learn a front; use a method whose class sets preference_aware (linear, "
            "tchebycheff, stch, epo, upgrad, dualproj, config, aligned-mtl) with preference=p"
        )
    return agg
