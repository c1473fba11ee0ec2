"""Gradient-free reference: pymoo's NSGA-II on one of our torch problems, same evaluation budget."""

from __future__ import annotations

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize

from mogradient.pareto import Problem


class _AsPymooProblem(PymooProblem):
    """Evaluates a :class:`mogradient.pareto.Problem` on numpy batches, without gradients."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(
            n_var=problem.n_var,
            n_obj=problem.n_obj,
            xl=problem.lower.numpy(),
            xu=problem.upper.numpy(),
            vtype=float,
        )
        self.problem = problem

    def _evaluate(self, x: np.ndarray, out: dict, *args: object, **kwargs: object) -> None:
        with torch.no_grad():
            out["F"] = self.problem.evaluate(torch.as_tensor(x, dtype=torch.float64)).numpy()


def run_nsga2(problem: Problem, x0: torch.Tensor, *, n_evals: int, seed: int) -> np.ndarray:
    """Objectives ``[P, n_obj]`` of NSGA-II's final population.

    The population size is ``len(x0)`` and the first generation is ``x0`` itself, so NSGA-II
    starts where the gradient methods start and stops after ``n_evals`` evaluations.
    """
    algorithm = NSGA2(pop_size=len(x0), sampling=x0.detach().numpy().astype(np.float64))
    result = minimize(
        _AsPymooProblem(problem), algorithm, ("n_eval", n_evals), seed=seed, verbose=False
    )
    return np.asarray(result.pop.get("F"), dtype=np.float64)
