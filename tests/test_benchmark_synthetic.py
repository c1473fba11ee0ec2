"""Smoke test of the synthetic benchmark on a tiny budget, and checks of its building blocks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import mogradient
from benchmarks import synthetic
from benchmarks.pareto_descent import descend, population_jacobian
from mogradient.pareto import get_problem


def test_quick_run_writes_tables_csv_and_plots(tmp_path, capsys) -> None:
    synthetic.main(
        ["--population", "4", "--steps", "3", "--seeds", "2", "--out", str(tmp_path),
         "--problems", "zdt1", "dtlz2-3obj", "--methods", "linear", "mgda", "nsga2"]
    )  # fmt: skip
    with (tmp_path / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 2 * 3 * 2
    assert {r["method"] for r in runs} == {"linear", "mgda", synthetic.NSGA2}
    assert all(float(r["hypervolume"]) >= 0 and np.isfinite(float(r["igd"])) for r in runs)
    with (tmp_path / "summary.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * 3
    assert (tmp_path / "zdt1.png").stat().st_size > 0
    assert (tmp_path / "dtlz2-3obj.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| mgda |" in printed and "| exact front |" in printed


def test_gradient_methods_skip_aliases() -> None:
    methods = synthetic.gradient_methods()
    assert "linear" in methods and "morlhf" not in methods
    classes = [type(mogradient.get_aggregator(m)) for m in methods]
    assert len(set(classes)) == len(classes)


@pytest.mark.parametrize(("n_points", "n_obj"), [(5, 2), (12, 3), (7, 3)])
def test_preference_vectors_are_distinct_and_on_the_simplex(n_points: int, n_obj: int) -> None:
    w = synthetic.preference_vectors(n_points, n_obj)
    assert w.shape == (n_points, n_obj)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w >= 0).all() and len(np.unique(w, axis=0)) == n_points
    assert np.eye(n_obj)[0] in w and np.eye(n_obj)[-1] in w  # both extremes are covered


def test_population_jacobian_matches_per_point_autograd() -> None:
    problem = get_problem("dtlz2", n_obj=3)
    x = synthetic.starting_points(problem, 3, seed=0)
    values, jacobians = population_jacobian(problem, x)
    for p in range(3):
        expected = torch.autograd.functional.jacobian(lambda v: problem.evaluate(v[None])[0], x[p])
        torch.testing.assert_close(jacobians[p], expected)
        torch.testing.assert_close(values[p], problem.evaluate(x[p : p + 1])[0])


def test_mgda_steps_never_increase_an_objective_and_stay_in_the_box() -> None:
    problem = get_problem("fonseca_fleming")
    x0 = synthetic.starting_points(problem, 6, seed=1) * 0.2  # away from the flat region
    aggregators = [mogradient.get_aggregator("mgda") for _ in range(6)]
    before = problem.evaluate(x0)
    x = descend(problem, aggregators, x0, steps=20, lr=0.05)
    after = problem.evaluate(x)
    assert (after <= before + 1e-12).all() and (after < before - 1e-3).any()
    far = descend(
        problem, aggregators, torch.full((6, 3), 3.9, dtype=torch.float64), steps=5, lr=50
    )
    assert ((far >= problem.lower) & (far <= problem.upper)).all()
