"""Preference sweep: a front from one preference-aware descent per point of a preference lattice.

A single run of a multi-objective method ends at *one* Pareto-stationary point; a front needs
many runs that aim at different parts of it. :func:`preference_sweep` gives each point of a
population its own preference vector (one aggregator per point, built by a factory
``preference -> Aggregator``) and moves every point with Adam kept in the box: the
aggregated direction is fed to :class:`torch.optim.Adam` as the gradient of the decision
variables, the step size decays along a cosine schedule, and each step is cut so that no
coordinate crosses more than half its distance to a bound (or, with ``bounds="clip"``, is
projected onto the box). Adam's per-coordinate normalisation is what makes one step size work
across problems whose gradients differ by orders of magnitude (Fonseca–Fleming's are about
1e-13 at the far corners of its box, ZDT's are of order 1); without momentum (``betas=(0,
0.9)``) a point does not overshoot its target onto the boundary; the decay lets non-smooth
scalarisations (Tchebycheff) settle instead of zig-zagging around their kink. Why each choice:
``docs/pareto.md``.

The final population is scored like any front: hypervolume against a stated reference point,
IGD+ against a sample of the exact front, and spacing of its non-dominated points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from mogradient.aggregation.kinds import Aggregator
from mogradient.pareto.lattice import simplex_lattice
from mogradient.pareto.metrics import hypervolume, igd_plus, is_non_dominated, spacing
from mogradient.pareto.problems.base import Problem

#: Builds the aggregator that steers one point from that point's preference ``[n_obj]``.
AggregatorFactory = Callable[[np.ndarray], Aggregator]

#: Default size of the exact-front sample used for IGD+ and the default reference point.
FRONT_POINTS = 1000

#: Adam's epsilon: far below any gradient the problems produce (Fonseca–Fleming's are about
#: 1e-13 at the far corners of its box), so every coordinate moves by about the step size
#: instead of being frozen by torch's default 1e-8.
ADAM_EPS = 1e-30

#: Added to the margin so that the shifted losses stay positive even when every value seen
#: so far is the same (one point, first step).
IDEAL_FLOOR = 1e-12

#: With ``bounds="interior"`` one step covers at most this fraction of a coordinate's distance
#: to the bound it moves towards: points approach a bound geometrically (halving the distance
#: per step) instead of being clipped onto it. Clipping parks points where the test problems'
#: gradients vanish (ZDT's ``sqrt(x1)`` at ``x1 = 0``, DTLZ2's poles at ``x1 = 0, 1``), and
#: they never leave.
FRACTION_TO_BOUND = 0.5

#: Sufficient-decrease constant of the Armijo line search (the textbook 1e-4).
ARMIJO_C = 1e-4

#: Halvings of the line search's first trial before a point gives up for this step.
ARMIJO_BACKTRACKS = 8

#: The running ideal point sits this fraction of the observed objective range (or of the best
#: value's magnitude, if larger) below the best value seen, so the shifted losses handed to the
#: aggregators stay strictly positive (EPO refuses a zero loss) without moving the ideal far
#: from the truth.
IDEAL_MARGIN = 1e-3


@dataclass(frozen=True)
class SweepResult:
    """The final population of a sweep and the scores of its non-dominated points.

    Attributes:
        preferences: ``[P, n_obj]``, the preference each point was steered by (row ``p`` went
            to the factory for point ``p``).
        x: ``[P, n_var]`` float64, final decision vectors (inside the box).
        F: ``[P, n_obj]`` float64, their objective values.
        n_evals: evaluations used: one per point per step (objectives and their Jacobian at
            one point), one per point to score the final population, and, with the line
            search, one per trial point (objectives only).
        ref_point: ``[n_obj]``, the reference point of :attr:`hypervolume`.
        hypervolume: exact hypervolume of the non-dominated final points.
        igd_plus: IGD+ of the final points to the exact-front sample (lower is better).
        spacing: Schott's spacing of the non-dominated final points; NaN when fewer than two.
    """

    preferences: np.ndarray
    x: torch.Tensor
    F: np.ndarray
    n_evals: int
    ref_point: np.ndarray
    hypervolume: float
    igd_plus: float
    spacing: float

    @property
    def non_dominated(self) -> np.ndarray:
        """Boolean mask ``[P]``: the final points no other final point dominates."""
        return is_non_dominated(self.F)


def default_reference_point(problem: Problem, front_points: int = FRONT_POINTS) -> np.ndarray:
    """The exact front's nadir moved out by 10% of the front's range in every objective.

    Slightly worse than every Pareto-optimal point, so each point of the front adds volume,
    including its extremes; the synthetic benchmarks use the same rule.
    """
    front = problem.pareto_front(front_points)
    low, high = front.min(axis=0), front.max(axis=0)
    return high + 0.1 * (high - low)


def ray_preferences(directions: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Preferences that send Tchebycheff-type methods along the given directions.

    Tchebycheff, STCH and EPO stop where ``p_i (f_i - z_i)`` is the same for every objective,
    i.e. on the ray from the ideal point ``z`` with direction ``1 / p``. To aim a point along
    the direction ``w`` (e.g. a point of :func:`~mogradient.pareto.simplex_lattice`) pass
    ``p ∝ 1 / max(w, floor)``. The floor keeps every entry finite and positive, so a point aimed
    at an extreme of the front still presses (weakly) on every objective and is not left on a
    weakly dominated edge.
    """
    w = _preference_matrix(directions, None)
    if not 0 < floor < 1:
        raise ValueError(f"floor must lie in (0, 1), got {floor!r}")
    p = 1.0 / np.maximum(w / w.sum(axis=1, keepdims=True), floor)
    return p / p.sum(axis=1, keepdims=True)


def preference_sweep(
    problem: Problem,
    aggregator: AggregatorFactory,
    preferences: np.ndarray | Sequence[Sequence[float]] | int,
    *,
    starts: torch.Tensor | None = None,
    steps: int = 150,
    optimizer: Literal["adam", "armijo"] = "adam",
    lr: float = 0.05,
    betas: tuple[float, float] = (0.0, 0.9),
    schedule: Literal["cosine", "constant"] = "cosine",
    bounds: Literal["interior", "clip"] = "interior",
    ideal: Literal["running"] | Sequence[float] | np.ndarray | None = "running",
    ref_point: Sequence[float] | np.ndarray | None = None,
    front: np.ndarray | None = None,
    seed: int = 0,
) -> SweepResult:
    """Descend from every preference at once and score the final population as a front.

    Args:
        problem: any :class:`~mogradient.pareto.Problem` (box-constrained, differentiable).
        aggregator: ``preference -> Aggregator``; called once per row of ``preferences`` (each
            point keeps its own aggregator and state), e.g.
            ``lambda p: get_aggregator("stch", mu=0.01, preference=p)``.
        preferences: ``[P, n_obj]`` non-negative rows, not all zero; or an int ``n`` for the
            Das–Dennis lattice :func:`~mogradient.pareto.simplex_lattice` ``(n_obj, n)`` (exactly
            ``n`` rows with two objectives, the smallest full lattice with at least ``n`` with
            more).
        starts: ``[P, n_var]`` starting points inside the box (or ``[1, n_var]``, shared by all
            points); ``None``: drawn uniformly in the box from ``seed``.
        steps: steps per point (each costs one evaluation with gradients).
        optimizer: ``"adam"``: the direction is Adam's gradient, for methods that steer to a
            target (scalarisations, EPO). ``"armijo"``: a backtracking line search along the
            direction itself, for methods whose direction is a common descent direction that
            vanishes at *any* Pareto-stationary point (MGDA, UPGrad, DualProj, ...): Adam's
            per-coordinate scaling bends such a direction, and points then drift along the
            front to its ends. The first trial moves the largest coordinate by the step size;
            each of up to :data:`ARMIJO_BACKTRACKS` halvings costs one more (forward-only)
            evaluation of the point; a point with no accepted trial stays where it is.
        lr: the initial step size, in the units of the decision variables (Adam's step size,
            or the line search's first trial).
        betas: Adam's ``(β₁, β₂)``, each in ``[0, 1)``. The default has no momentum: with it,
            points aimed near the edge of a front overshoot onto the box's boundary.
        schedule: ``"cosine"`` decays the step size to 0 over ``steps``; ``"constant"`` keeps it.
        bounds: ``"interior"``: a step covers at most :data:`FRACTION_TO_BOUND` of each
            coordinate's distance to a bound, so points approach bounds without landing on them;
            ``"clip"``: the plain projection ``problem.project`` after each step.
        ideal: the point the loss values are measured from before they reach the aggregators,
            which see ``F - ideal`` (Tchebycheff, STCH and EPO read loss values; the others
            ignore them). ``"running"``: the best value of each objective seen so far over the
            whole population, less :data:`IDEAL_MARGIN` times the observed range (the usual
            MOEA/D estimate: no knowledge of the front needed). A vector: a fixed ideal point.
            ``None``: the raw objective values.
        ref_point: hypervolume reference point; ``None``: :func:`default_reference_point`.
        front: exact-front sample for IGD+; ``None``: ``problem.pareto_front(FRONT_POINTS)``.
        seed: seeds the random starting points (the only randomness of the sweep itself; seeded
            aggregators take their seed from the factory).

    Returns:
        :class:`SweepResult` with the final points, the evaluations used and the scores.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a mogradient.pareto.Problem, got {type(problem)}")
    prefs = _preference_matrix(preferences, problem.n_obj)
    n_points = len(prefs)
    _check_positive_int("steps", steps)
    check_positive_number("lr", lr)
    check_betas(betas)
    if optimizer not in ("adam", "armijo"):
        raise ValueError(f"optimizer must be 'adam' or 'armijo', got {optimizer!r}")
    if bounds not in ("interior", "clip"):
        raise ValueError(f"bounds must be 'interior' or 'clip', got {bounds!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    fixed_ideal = _ideal_vector(ideal, problem.n_obj)
    front, ref = front_and_reference(problem, front, ref_point)
    x0 = _starting_points(problem, starts, n_points, seed)
    aggregators = _build_aggregators(aggregator, prefs)

    x = x0.clone().requires_grad_(True)
    adam = torch.optim.Adam([x], lr=float(lr), betas=betas, eps=ADAM_EPS)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=steps)
        if schedule == "cosine"
        else None
    )
    n_evals = n_points * (steps + 1)  # one per point and step, and the final scoring
    best = torch.full((problem.n_obj,), math.inf, dtype=torch.float64)
    worst = torch.full((problem.n_obj,), -math.inf, dtype=torch.float64)
    for step in range(steps):
        values, jacobians = values_and_jacobians(problem, x.detach())
        if isinstance(fixed_ideal, str):  # "running"
            best = torch.minimum(best, values.min(dim=0).values)
            worst = torch.maximum(worst, values.max(dim=0).values)
            spread = torch.maximum(worst - best, best.abs())  # > 0 unless every value is 0
            losses = values - (best - IDEAL_MARGIN * spread - IDEAL_FLOOR)
        elif fixed_ideal is None:
            losses = values
        else:
            losses = values - fixed_ideal
        direction = torch.stack(
            [agg(j, losses=v) for agg, j, v in zip(aggregators, jacobians, losses, strict=True)]
        )
        if not torch.isfinite(direction).all():
            row = int((~torch.isfinite(direction)).any(dim=1).nonzero()[0])
            raise FloatingPointError(
                f"{aggregators[row]!r} returned a non-finite direction at step {step} for point "
                f"{row} (preference {prefs[row].tolist()}, objectives {values[row].tolist()}); "
                "check that the method accepts these loss values, or pass ideal= to shift them"
            )
        before = x.detach().clone()
        if optimizer == "armijo":
            decay = 0.5 * (1 + math.cos(math.pi * step / steps)) if schedule == "cosine" else 1.0
            after, trials = _armijo_step(
                problem, before, values, jacobians, direction.to(x.dtype), lr * decay, bounds
            )
            n_evals += trials
        else:
            x.grad = direction.to(x.dtype)
            adam.step()
            if scheduler is not None:
                scheduler.step()
            after = _keep_in_box(problem, before, x.detach(), bounds)
        with torch.no_grad():
            x.copy_(after)

    final_x = x.detach().clone()
    with torch.no_grad():
        F = problem.evaluate(final_x).numpy()
    kept = F[is_non_dominated(F)]
    return SweepResult(
        preferences=prefs,
        x=final_x,
        F=F,
        n_evals=n_evals,
        ref_point=ref,
        hypervolume=hypervolume(kept, ref),
        igd_plus=igd_plus(F, front),
        spacing=spacing(kept) if len(kept) >= 2 else math.nan,
    )


def _keep_in_box(
    problem: Problem, before: torch.Tensor, after: torch.Tensor, bounds: str
) -> torch.Tensor:
    """The step ``before -> after`` made feasible: clipped onto the box (``"clip"``), or cut so
    that no coordinate covers more than :data:`FRACTION_TO_BOUND` of its distance to a bound
    (``"interior"``; a coordinate already on a bound may stay there or move inwards)."""
    if bounds == "clip":
        return problem.project(after)
    lower = problem.lower.to(before) + (1 - FRACTION_TO_BOUND) * (before - problem.lower.to(before))
    upper = problem.upper.to(before) - (1 - FRACTION_TO_BOUND) * (problem.upper.to(before) - before)
    return torch.minimum(torch.maximum(after, lower), upper)


def _armijo_step(
    problem: Problem,
    x: torch.Tensor,
    values: torch.Tensor,
    jacobians: torch.Tensor,
    direction: torch.Tensor,
    step_size: float,
    bounds: str,
) -> tuple[torch.Tensor, int]:
    """One backtracking step per point along ``-direction``; returns the points and the number
    of trial evaluations.

    A trial ``x⁺`` (kept in the box) is accepted when every objective satisfies Armijo's
    condition ``f_i(x⁺) <= f_i(x) - ARMIJO_C * g_i · (x - x⁺)``; the first trial moves the
    largest coordinate by ``step_size``, later ones halve the step. Only the points still
    searching are evaluated.
    """
    scale = direction.abs().amax(dim=1).clamp(min=torch.finfo(x.dtype).tiny)
    t = step_size / scale
    result = x.clone()
    pending = torch.arange(len(x))
    trials = 0
    for _ in range(ARMIJO_BACKTRACKS + 1):
        start = x[pending]
        trial = _keep_in_box(problem, start, start - t[pending, None] * direction[pending], bounds)
        with torch.no_grad():
            f = problem.evaluate(trial)
        trials += len(pending)
        predicted = torch.einsum("kmn,kn->km", jacobians[pending], start - trial)
        accepted = (f <= values[pending] - ARMIJO_C * predicted).all(dim=1)
        result[pending[accepted]] = trial[accepted]
        pending = pending[~accepted]
        if len(pending) == 0:
            break
        t[pending] = t[pending] / 2
    return result, trials


def values_and_jacobians(problem: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objectives ``[P, n_obj]`` and per-point Jacobians ``[P, n_obj, n_var]`` of ``x``.

    The problems evaluate row by row, so the gradient of the column sum of objective ``i`` is,
    row by row, the gradient of objective ``i`` at each point: one backward per objective for
    the whole population.
    """
    x = x.detach().to(torch.float64).requires_grad_(True)
    values = problem.evaluate(x)
    rows = [
        torch.autograd.grad(values[:, i].sum(), x, retain_graph=i < problem.n_obj - 1)[0]
        for i in range(problem.n_obj)
    ]
    return values.detach(), torch.stack(rows, dim=1)


def _preference_matrix(preferences: object, n_obj: int | None) -> np.ndarray:
    """``preferences`` as a float64 matrix of valid rows (or the lattice for an int)."""
    if isinstance(preferences, (int, np.integer)) and not isinstance(preferences, bool):
        if n_obj is None:
            raise TypeError("pass the directions as a [P, n_obj] array, not a count")
        if preferences < 1:
            raise ValueError(f"the number of preferences must be at least 1, got {preferences}")
        return simplex_lattice(n_obj, int(preferences))
    try:
        p = np.asarray(preferences, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"preferences must be a [P, n_obj] array of numbers or an int, got {preferences!r}"
        ) from error
    if p.ndim != 2 or len(p) == 0 or (n_obj is not None and p.shape[1] != n_obj):
        expected = "n_obj" if n_obj is None else str(n_obj)
        raise ValueError(
            f"preferences must have shape [P, {expected}] with P >= 1 (one row per point), "
            f"got {p.shape}"
        )
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("preferences must be finite and non-negative")
    zero = np.flatnonzero(p.sum(axis=1) <= 0)
    if len(zero):
        raise ValueError(f"preference row {int(zero[0])} is all zero; give some objective weight")
    return p


def check_positive_number(name: str, value: object) -> None:
    """``value`` must be a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_betas(betas: object) -> None:
    """Adam's ``betas``: a pair of numbers in ``[0, 1)``."""
    if (
        not isinstance(betas, tuple)
        or len(betas) != 2
        or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
    ):
        raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def front_and_reference(
    problem: Problem, front: object, ref_point: object
) -> tuple[np.ndarray, np.ndarray]:
    """The exact-front sample IGD+ is measured against and the hypervolume reference point:
    the given ones, checked, or the problem's (``FRONT_POINTS`` points, the default point)."""
    front = problem.pareto_front(FRONT_POINTS) if front is None else np.asarray(front, float)
    if front.ndim != 2 or front.shape[1] != problem.n_obj:
        raise ValueError(
            f"front must have shape [n, {problem.n_obj}] (a sample of the exact front), "
            f"got {front.shape}"
        )
    ref = default_reference_point(problem) if ref_point is None else np.asarray(ref_point, float)
    if ref.shape != (problem.n_obj,) or not np.isfinite(ref).all():
        raise ValueError(
            f"ref_point must be {problem.n_obj} finite numbers (one per objective), "
            f"got {ref_point!r}"
        )
    return front, ref


def _ideal_vector(
    ideal: Literal["running"] | Sequence[float] | np.ndarray | None, n_obj: int
) -> Literal["running"] | torch.Tensor | None:
    if ideal is None:
        return None
    if isinstance(ideal, str):
        if ideal != "running":
            raise ValueError(f"ideal must be 'running', None or {n_obj} numbers, got {ideal!r}")
        return "running"
    z = torch.as_tensor(np.asarray(ideal, dtype=np.float64))
    if z.shape != (n_obj,) or not torch.isfinite(z).all():
        raise ValueError(f"ideal must be 'running', None or {n_obj} finite numbers, got {ideal!r}")
    return z


def _starting_points(
    problem: Problem, starts: torch.Tensor | None, n_points: int, seed: int
) -> torch.Tensor:
    """``[P, n_var]`` float64 starting points: given (checked to lie in the box) or uniform."""
    lower, upper = problem.bounds
    if starts is None:
        generator = torch.Generator().manual_seed(int(seed))
        u = torch.rand(n_points, problem.n_var, generator=generator, dtype=torch.float64)
        return lower + u * (upper - lower)
    if not isinstance(starts, torch.Tensor) or not starts.is_floating_point():
        raise TypeError("starts must be a floating-point torch.Tensor [P, n_var] or None")
    x = starts.detach().to("cpu", torch.float64)
    if x.ndim != 2 or x.shape[1] != problem.n_var or len(x) not in (1, n_points):
        raise ValueError(
            f"starts must have shape [{n_points}, {problem.n_var}] (one per preference) or "
            f"[1, {problem.n_var}] (shared), got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all() or ((x < lower) | (x > upper)).any():
        raise ValueError(
            f"starts must be finite and inside the box [{float(lower.min())}, "
            f"{float(upper.max())}]; clip them with problem.project(starts)"
        )
    return x.expand(n_points, -1).clone()


def _build_aggregators(factory: AggregatorFactory, prefs: np.ndarray) -> list[Aggregator]:
    """One aggregator per preference row, each checked to be an :class:`Aggregator`."""
    if not callable(factory):
        raise TypeError(
            "aggregator must be a callable preference -> Aggregator, e.g. "
            "lambda p: mogradient.get_aggregator('tchebycheff', preference=p)"
        )
    aggregators = []
    for row in prefs:
        agg = factory(row.copy())
        if not isinstance(agg, Aggregator):
            raise TypeError(
                f"the aggregator factory returned {type(agg).__name__}, not a "
                "mogradient Aggregator; return e.g. get_aggregator(name, preference=p)"
            )
        aggregators.append(agg)
    return aggregators
