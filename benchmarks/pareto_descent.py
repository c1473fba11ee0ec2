"""Projected multi-objective gradient descent of a population, one aggregator per point.

Each point ``x_p`` of the population takes ``steps`` steps ``x_p <- clip(x_p - lr * agg_p(J_p))``
where ``J_p`` ``[n_obj, n_var]`` holds the gradients of the objectives at ``x_p`` and ``clip``
projects back into the problem's box. One step costs one batched evaluation of the objectives
and their gradients for the whole population, so ``steps * population`` evaluations in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mogradient import Aggregator
from mogradient.pareto import Problem


def population_jacobian(problem: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objectives ``[P, n_obj]`` and per-point Jacobians ``[P, n_obj, n_var]`` of ``x [P, n_var]``.

    The problems are evaluated row by row, so the gradient of the column sum of objective ``i``
    is, row by row, the gradient of objective ``i`` at each point: one backward per objective.
    """
    x = x.detach().requires_grad_(True)
    values = problem.evaluate(x)
    rows = [
        torch.autograd.grad(values[:, i].sum(), x, retain_graph=i < problem.n_obj - 1)[0]
        for i in range(problem.n_obj)
    ]
    return values.detach(), torch.stack(rows, dim=1)


def descend(
    problem: Problem,
    aggregators: Sequence[Aggregator],
    x0: torch.Tensor,
    *,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Final population after ``steps`` projected steps; ``aggregators[p]`` steers point ``p``."""
    if len(aggregators) != len(x0):
        raise ValueError(f"need one aggregator per point: {len(aggregators)} for {len(x0)}")
    x = problem.project(x0.detach().to(torch.float64))
    for _ in range(steps):
        values, jacobians = population_jacobian(problem, x)
        direction = torch.stack(
            [
                agg(j, losses=v)  # loss weightings decide from the objective values
                for agg, j, v in zip(aggregators, jacobians, values, strict=True)
            ]
        )
        x = problem.project(x - lr * direction)
    return x
