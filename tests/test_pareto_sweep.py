"""The preference sweep: fronts recovered on known problems, box, evaluation count, bad inputs,
determinism; and a smoke run of the sweep benchmark."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

import mogradient
from benchmarks import pareto_sweep
from mogradient.aggregation.kinds import LossWeighting
from mogradient.pareto import (
    Problem,
    SweepResult,
    get_problem,
    hypervolume,
    preference_sweep,
    ray_preferences,
    simplex_lattice,
)
from mogradient.pareto.sweep import default_reference_point


def stch(preference: np.ndarray) -> mogradient.Aggregator:
    return mogradient.get_aggregator("stch", mu=0.01, preference=preference)


def test_tchebycheff_sweep_lands_on_the_dtlz2_circle_along_each_ray() -> None:
    problem = get_problem("dtlz2", n_obj=2)
    directions = simplex_lattice(2, 9)[1:-1]  # interior directions: a unique ray point each
    prefs = ray_preferences(directions)  # rays from the fixed ideal point 0 (the true one)
    result = preference_sweep(
        problem,
        lambda p: mogradient.get_aggregator("tchebycheff", preference=p),
        prefs,
        steps=200,
        lr=0.02,
        seed=1,
        ideal=[0.0, 0.0],
    )
    np.testing.assert_allclose(np.linalg.norm(result.F, axis=1), 1.0, atol=1e-3)  # the front
    aimed = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    np.testing.assert_allclose(result.F, aimed, atol=0.01)  # each point on its own ray
    assert result.hypervolume > 0.995 * hypervolume(aimed, result.ref_point)
    assert result.igd_plus < 0.1 and result.non_dominated.all()


def test_linear_on_the_convex_zdt1_front_gets_close_to_the_exact_hypervolume() -> None:
    problem = get_problem("zdt1", n_var=5)
    weights = np.maximum(simplex_lattice(2, 12), 1e-3)  # a zero weight leaves g unconstrained
    result = preference_sweep(
        problem, lambda p: mogradient.get_aggregator("linear", preference=p), weights, steps=150
    )
    f1, f2 = result.F.T
    np.testing.assert_allclose(f2, 1 - np.sqrt(f1), atol=2e-3)  # on the front f2 = 1 - √f1
    exact = hypervolume(problem.pareto_front(10_000), result.ref_point)
    # a weighted sum reaches f1 = (p2 / 2 p1)^2 only for p2 < 2 p1: 8 of the 12 weights spread
    assert result.hypervolume > 0.85 * exact
    assert len(np.unique(result.F.round(3), axis=0)) >= 8


def test_tchebycheff_on_zdt1_with_few_steps_is_near_the_front() -> None:
    problem = get_problem("zdt1", n_var=5)
    w = simplex_lattice(2, 10)
    result = preference_sweep(
        problem,
        lambda p: mogradient.get_aggregator("tchebycheff", preference=p),
        ray_preferences(w),
        steps=80,
    )
    f1, f2 = result.F.T
    assert (np.abs(f2 - (1 - np.sqrt(f1))) < 0.01).all()  # near the front
    assert result.igd_plus < 0.04  # 10 points against a 1000-point front sample
    exact = hypervolume(problem.pareto_front(10_000), result.ref_point)
    assert result.hypervolume > 0.9 * exact


@pytest.mark.parametrize("bounds", ["interior", "clip"])
def test_points_stay_in_the_box_even_with_huge_steps(bounds: str) -> None:
    problem = get_problem("fonseca_fleming")
    result = preference_sweep(problem, stch, 6, steps=15, lr=50.0, bounds=bounds)
    assert ((result.x >= problem.lower) & (result.x <= problem.upper)).all()


def test_interior_rule_approaches_a_bound_without_landing_on_it() -> None:
    problem = get_problem("zdt1", n_var=4)  # the Pareto set has x2..x4 = 0, on the bound
    prefs = ray_preferences(simplex_lattice(2, 4))  # every objective weighs: g is pushed to 1
    interior = preference_sweep(problem, stch, prefs, steps=40, lr=0.5, schedule="constant")
    clipped = preference_sweep(
        problem, stch, prefs, steps=40, lr=0.5, schedule="constant", bounds="clip"
    )
    assert (interior.x[:, 1:] > 0).all() and (interior.x[:, 1:] < 1e-6).all()
    assert (clipped.x[:, 1:] == 0).any()


class CountingProblem(Problem):
    """ZDT1 that counts the points it evaluates."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = get_problem("zdt1", n_var=3)
        super().__init__(n_var=3, n_obj=2, lower=0.0, upper=1.0)
        self.points = 0

    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        self.points += len(x)
        return self.inner.evaluate(x)

    def _pareto_front(self, n_points: int) -> np.ndarray:
        return self.inner.pareto_front(n_points)

    def _pareto_set(self, n_points: int) -> torch.Tensor:
        return self.inner.pareto_set(n_points)


def test_n_evals_counts_every_evaluated_point() -> None:
    problem = CountingProblem()
    result = preference_sweep(problem, stch, 5, steps=7)
    assert result.n_evals == 5 * (7 + 1) == problem.points
    assert result.F.shape == (5, 2) and result.x.shape == (5, 3)


def test_armijo_descends_every_objective_and_counts_its_trials() -> None:
    problem = CountingProblem()
    start = torch.rand(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mgda = lambda p: mogradient.get_aggregator("mgda")  # noqa: E731
    result = preference_sweep(problem, mgda, 6, starts=start, steps=20, optimizer="armijo")
    with torch.no_grad():
        before = problem.inner.evaluate(start).numpy()
    assert (result.F <= before + 1e-12).all()  # a common descent direction, accepted by Armijo
    assert (result.F < before - 1e-3).any(axis=1).all()  # and every point moved
    assert result.n_evals == problem.points  # (the check above used the uncounted inner ZDT1)
    assert result.n_evals > 6 * (20 + 1)  # trial points count as evaluations


def test_armijo_keeps_mgda_spread_where_adam_drifts_to_the_ends() -> None:
    problem = get_problem("dtlz2", n_obj=2)
    mgda = lambda p: mogradient.get_aggregator("mgda")  # noqa: E731
    line = preference_sweep(problem, mgda, 12, steps=60, optimizer="armijo")
    adam = preference_sweep(problem, mgda, 12, steps=60)
    assert line.hypervolume > adam.hypervolume
    assert len(np.unique(line.F.round(3), axis=0)) > len(np.unique(adam.F.round(3), axis=0))


def test_same_seed_same_result_other_seed_other_start() -> None:
    problem = get_problem("zdt2", n_var=4)
    a, b = (preference_sweep(problem, stch, 5, steps=10, seed=3) for _ in range(2))
    c = preference_sweep(problem, stch, 5, steps=10, seed=4)
    assert isinstance(a, SweepResult)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    assert a.hypervolume == b.hypervolume
    assert not torch.equal(a.x, c.x)


def test_given_starts_are_used_and_a_single_start_is_shared() -> None:
    problem = get_problem("dtlz2", n_obj=3)
    start = torch.full((1, problem.n_var), 0.5, dtype=torch.float64)
    result = preference_sweep(problem, stch, 3, steps=1, lr=1e-9)
    shared = preference_sweep(problem, stch, 3, starts=start, steps=1, lr=1e-9)
    assert not torch.allclose(result.x[0], result.x[1])
    torch.testing.assert_close(shared.x, start.expand(3, -1), atol=1e-8, rtol=0)


def test_an_int_gives_the_lattice_and_ray_preferences_aim_along_the_directions() -> None:
    result = preference_sweep(get_problem("zdt1", n_var=3), stch, 4, steps=1)
    np.testing.assert_allclose(result.preferences, simplex_lattice(2, 4))
    w = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    p = ray_preferences(w, floor=1e-3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    products = p[0] * w[0]  # p_i w_i equal: the Tchebycheff balance lies along w
    np.testing.assert_allclose(products, products[0])
    assert (p[1] > 0).all() and p[1, 0] < p[1, 1]


def test_a_fixed_ideal_point_shifts_the_losses_the_aggregator_sees() -> None:
    seen: list[np.ndarray] = []

    class Recorder(LossWeighting):
        def _weigh(self, losses: np.ndarray) -> np.ndarray:
            seen.append(losses)
            return np.full(len(losses), 0.5)

    problem = get_problem("zdt1", n_var=3)
    start = torch.tensor([[0.25, 0.0, 0.0]], dtype=torch.float64)  # objectives (0.25, 0.5)
    preference_sweep(problem, lambda p: Recorder(), 1, starts=start, steps=1, ideal=[-1.0, 0.0])
    np.testing.assert_allclose(seen[0], [1.25, 0.5])
    preference_sweep(problem, lambda p: Recorder(), 1, starts=start, steps=1, ideal=None)
    np.testing.assert_allclose(seen[1], [0.25, 0.5])
    preference_sweep(problem, lambda p: Recorder(), 1, starts=start, steps=1)
    assert (seen[2] > 0).all() and (seen[2] < 1e-3).all()  # running ideal: the point itself


def test_a_non_finite_direction_names_the_point_and_the_fix() -> None:
    class Broken(LossWeighting):
        def _weigh(self, losses: np.ndarray) -> np.ndarray:
            return np.full(len(losses), np.nan)

    with pytest.raises(FloatingPointError, match="point 0 .*pass ideal="):
        preference_sweep(get_problem("zdt1", n_var=3), lambda p: Broken(), 2, steps=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"preferences": [[0.5, 0.5, 0.0]]}, ValueError, r"shape \[P, 2\]"),
        ({"preferences": [[-1.0, 2.0]]}, ValueError, "non-negative"),
        ({"preferences": [[0.0, 0.0]]}, ValueError, "row 0 is all zero"),
        ({"preferences": 0}, ValueError, "at least 1"),
        ({"preferences": "uniform"}, TypeError, "array of numbers or an int"),
        ({"steps": 0}, ValueError, "steps must be an int >= 1"),
        ({"lr": -0.1}, ValueError, "lr must be a finite number > 0"),
        ({"lr": math.nan}, ValueError, "lr must be a finite number > 0"),
        ({"schedule": "linear"}, ValueError, "schedule must be"),
        ({"betas": (0.9, 1.0)}, ValueError, r"betas must be a pair of numbers in \[0, 1\)"),
        ({"betas": [0.0, 0.9]}, ValueError, "betas must be a pair"),
        ({"bounds": "reflect"}, ValueError, "bounds must be"),
        ({"optimizer": "sgd"}, ValueError, "optimizer must be 'adam' or 'armijo'"),
        ({"ideal": "best"}, ValueError, "ideal must be 'running'"),
        ({"ideal": [0.0]}, ValueError, "ideal must be 'running'"),
        ({"ref_point": [1.0, 1.0, 1.0]}, ValueError, "ref_point must be 2 finite numbers"),
        ({"front": np.zeros((5, 3))}, ValueError, r"front must have shape \[n, 2\]"),
        ({"starts": torch.full((3, 3), 2.0, dtype=torch.float64)}, ValueError, "inside the box"),
        ({"starts": torch.zeros(2, 3, dtype=torch.float64)}, ValueError, r"\[3, 3\]"),
        ({"starts": np.zeros((3, 3))}, TypeError, "torch.Tensor"),
        ({"aggregator": lambda p: "stch"}, TypeError, "returned str, not a mogradient"),
        ({"aggregator": "stch"}, TypeError, "callable preference -> Aggregator"),
        ({"problem": "zdt1"}, TypeError, "mogradient.pareto.Problem"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs: dict, error: type, match: str) -> None:
    args: dict = {
        "problem": get_problem("zdt1", n_var=3),
        "aggregator": stch,
        "preferences": simplex_lattice(2, 3),
        "steps": 2,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        preference_sweep(
            args.pop("problem"), args.pop("aggregator"), args.pop("preferences"), **args
        )


def test_ray_preferences_rejects_a_bad_floor_and_the_reference_point_is_past_the_nadir() -> None:
    with pytest.raises(ValueError, match="floor"):
        ray_preferences(np.eye(2), floor=0.0)
    np.testing.assert_allclose(default_reference_point(get_problem("dtlz2", n_obj=3)), 1.1)


def test_benchmark_smoke_run_writes_tables_csv_and_plots(tmp_path, capsys) -> None:
    pareto_sweep.main(
        ["--steps", "3", "--seeds", "2", "--out", str(tmp_path), "--problems", "zdt1",
         "dtlz2-3obj", "--methods", "stch", "upgrad", "mgda", "nsga2"]
    )  # fmt: skip
    with (tmp_path / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 2 * (3 * 2 + 1)  # mgda (a reference method) runs one seed
    assert all(0 <= float(r["hv_pct"]) <= 100 for r in runs)
    evals = {(r["problem"], r["method"]): int(r["evals"]) for r in runs}
    assert evals["zdt1", "stch"] == 100 * 4 == evals["zdt1", "nsga2"]
    assert evals["dtlz2-3obj", "stch"] == 300 * 4
    assert (tmp_path / "zdt1.png").stat().st_size > 0
    assert (tmp_path / "dtlz2-3obj.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| stch |" in printed and "100 evenly spread front points" in printed
    assert "| zdt1 |" in printed  # the targets table


def test_benchmark_quick_mode_runs_its_budget(tmp_path, capsys) -> None:
    out = tmp_path / "quick"
    pareto_sweep.main(["--quick", "--out", str(out), "--problems", "zdt1", "--methods", "epo"])
    with (out / "runs.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["evals"]) == 100 * (pareto_sweep.QUICK.steps + 1)
    assert "20 steps; seeds: 1" in capsys.readouterr().out
