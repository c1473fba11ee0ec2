"""Pareto set learning against a preference sweep, NSGA-II and LibMOON's PSL, in one run.

Every method gets the same problems (LibMOON's definitions, 10 variables), the same 20
preferences of the Das–Dennis lattice to decode (or 20 points to evolve), the same reference
point (the exact front's nadir plus 10% of its range) and about the same number of objective
evaluations (:data:`EVALS`):

* ``sweep <method>``: :func:`mogradient.pareto.preference_sweep`, 20 points × :data:`SWEEP_STEPS`;
* ``psl <method>``: :func:`mogradient.pareto.pareto_set_learning`, :data:`PSL_STEPS` steps of
  :data:`PSL_BATCH` drawn preferences, then 20 decoded points;
* ``nsga2``: pymoo's NSGA-II, population 20, the same evaluations;
* ``libmoon psl <agg>``: LibMOON 0.2.1's ``SimplePSLModel`` trained with its own scalarisation
  (``ls``: weighted sum, ``softtche``: smooth Tchebycheff, its default), same steps and batch,
  run by :mod:`benchmarks.libmoon_side` with LibMOON's interpreter (``--libmoon-python``).

Tchebycheff-type methods (tchebycheff, epo) are aimed along the lattice's directions with
:func:`~mogradient.pareto.ray_preferences`, as in :mod:`benchmarks.pareto_sweep`.

    python -m benchmarks.psl_vs_libmoon --out docs/results/psl   # docs/pareto-set-learning.md

Writes ``runs.csv`` and one ``<problem>.png`` per problem to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import mogradient
from benchmarks.nsga2_reference import run_nsga2
from benchmarks.pareto_plots import plot_final_points
from benchmarks.tables import read_csv, write_csv
from mogradient.pareto import (
    Problem,
    get_problem,
    hypervolume,
    igd_plus,
    non_dominated,
    pareto_set_learning,
    preference_sweep,
    ray_preferences,
    simplex_lattice,
    spacing,
)
from mogradient.pareto.sweep import default_reference_point

#: Our name -> (LibMOON's name, the problem with LibMOON's default of 10 variables).
PROBLEMS: dict[str, tuple[str, Callable[[], Problem]]] = {
    "zdt1": ("ZDT1", lambda: get_problem("zdt1", n_var=10)),
    "zdt2": ("ZDT2", lambda: get_problem("zdt2", n_var=10)),
    "vlmop2": ("VLMOP2", lambda: get_problem("vlmop2", n_var=10)),
}
POINTS = 20
SWEEP_STEPS = 200
PSL_BATCH = 8
PSL_STEPS = POINTS * SWEEP_STEPS // PSL_BATCH
#: Evaluations of every method (the sweep's: one per point and step, and the final scoring).
EVALS = POINTS * (SWEEP_STEPS + 1)
SWEEP_METHODS = ["tchebycheff", "epo"]
PSL_METHODS = ["linear", "tchebycheff", "epo"]
LIBMOON_METHODS = ["ls", "softtche"]
RAY_METHODS = {"tchebycheff", "epo"}
#: PSL's learning rate here (the default 1e-3 of LibMOON is too slow for this budget).
PSL_LR = 0.03
FLOOR = 1e-3
DEFAULT_LIBMOON_PYTHON = os.environ.get(
    "MOGRADIENT_LIBMOON_PYTHON", "/work/venvs/libmoon/bin/python"
)


def aimed(method: str, directions: np.ndarray) -> np.ndarray:
    """Preferences for lattice ``directions``: aimed along them with ray_preferences where the
    method stops on a ray, floored at :data:`FLOOR` otherwise."""
    if method in RAY_METHODS:
        return ray_preferences(directions, FLOOR)
    floored = np.maximum(directions / directions.sum(axis=1, keepdims=True), FLOOR)
    return floored / floored.sum(axis=1, keepdims=True)


def factory(method: str, aim: bool) -> Callable[[np.ndarray], mogradient.Aggregator]:
    """``preference -> Aggregator``; with ``aim`` the argument is a lattice direction, aimed
    first (PSL's model takes the direction, uniform on the simplex, as its input)."""

    def build(p: np.ndarray) -> mogradient.Aggregator:
        preference = aimed(method, p[None])[0] if aim else p
        return mogradient.get_aggregator(method, preference=preference.tolist())

    return build


def reference(problem: Problem) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Reference point, exact hypervolume (100,000-point front), the hypervolume of
    :data:`POINTS` evenly spread front points (the N-point ceiling) and a front sample."""
    ref = default_reference_point(problem)
    exact = hypervolume(problem.pareto_front(100_000), ref)
    even = hypervolume(problem.pareto_front(POINTS), ref)
    return ref, exact, even, problem.pareto_front(1000)


def score(name: str, method: str, F: np.ndarray, evals: int, seconds: float, env: str) -> dict:
    problem = PROBLEMS[name][1]()
    ref, exact, even, front = reference(problem)
    kept = non_dominated(F)
    return {
        "problem": name,
        "method": method,
        "hv_pct": 100 * hypervolume(kept, ref) / exact,
        "ceiling_pct": 100 * even / exact,
        "igd_plus": igd_plus(F, front),
        "spacing": spacing(kept) if len(kept) >= 2 else math.nan,
        "n_nondominated": len(kept),
        "evals": evals,
        "seconds": seconds,
        "environment": env,
    }


def run_ours(name: str, seed: int) -> list[tuple[dict, np.ndarray]]:
    """Sweeps, PSL runs and NSGA-II on one problem (this environment)."""
    problem = PROBLEMS[name][1]()
    lattice = simplex_lattice(2, POINTS)
    env = f"mogradient (torch {torch.__version__})"
    out = []
    for method in SWEEP_METHODS:
        start = time.perf_counter()
        res = preference_sweep(
            problem, factory(method, aim=False), aimed(method, lattice), steps=SWEEP_STEPS,
            seed=seed,
        )  # fmt: skip
        secs = time.perf_counter() - start
        out.append((score(name, f"sweep {method}", res.F, res.n_evals, secs, env), res.F))
    for method in PSL_METHODS:
        start = time.perf_counter()
        res = pareto_set_learning(
            problem, factory(method, aim=True), lattice, steps=PSL_STEPS, batch=PSL_BATCH,
            lr=PSL_LR, seed=seed,
        )  # fmt: skip
        secs = time.perf_counter() - start
        out.append((score(name, f"psl {method}", res.F, res.n_evals, secs, env), res.F))
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(POINTS, problem.n_var, generator=generator, dtype=torch.float64)
    start = time.perf_counter()
    F = run_nsga2(problem, problem.lower + u * (problem.upper - problem.lower), n_evals=EVALS,
                  seed=seed)  # fmt: skip
    secs = time.perf_counter() - start
    out.append((score(name, "nsga2", F, EVALS, secs, f"pymoo, {env}"), F))
    return out


def run_libmoon(names: list[str], python: str, seed: int) -> list[tuple[dict, np.ndarray]]:
    """LibMOON's PSL on every problem, in LibMOON's environment; decision vectors come back
    and are evaluated here (LibMOON's definitions, checked equal in the tests)."""
    lattice = simplex_lattice(2, POINTS).tolist()
    job = {
        "runs": [
            (PROBLEMS[n][0], agg, PROBLEMS[n][1]().n_var) for n in names for agg in LIBMOON_METHODS
        ],  # fmt: skip
        "preferences": {PROBLEMS[n][0]: lattice for n in names},
        "steps": PSL_STEPS,
        "batch": PSL_BATCH,
        "seed": seed,
    }
    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        subprocess.run(
            [python, "-m", "benchmarks.libmoon_side", "--job", str(job_path), "--out",
             str(out_path)],
            check=True, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        payload = json.loads(out_path.read_text())
    env = f"LibMOON {payload['libmoon']} (torch {payload['torch']}, own venv)"
    by_libmoon_name = {PROBLEMS[n][0]: n for n in names}
    out = []
    for r in payload["results"]:
        name = by_libmoon_name[r["problem"]]
        with torch.no_grad():
            F = PROBLEMS[name][1]().evaluate(torch.tensor(r["x"], dtype=torch.float64)).numpy()
        row = score(name, f"libmoon psl {r['method']}", F, r["evals"], r["seconds"], env)
        out.append((row, F))
    return out


def table(rows: list[dict]) -> str:
    """Markdown: one row per problem and method, then each problem's N-point ceiling."""
    lines = [
        "| problem | method | HV % of exact | IGD+ | spacing | non-dominated | evaluations "
        "| seconds | environment |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in dict.fromkeys(r["problem"] for r in rows):
        group = [r for r in rows if r["problem"] == name]
        for r in group:
            sp = "–" if math.isnan(float(r["spacing"])) else f"{float(r['spacing']):.4f}"
            lines.append(
                f"| {name} | {r['method']} | {float(r['hv_pct']):.2f} "
                f"| {float(r['igd_plus']):.4f} | {sp} | {int(r['n_nondominated'])} "
                f"| {int(r['evals']):,} | {float(r['seconds']):.1f} | {r['environment']} |"
            )
        lines.append(
            f"| {name} | {POINTS} evenly spread front points (ceiling) "
            f"| {float(group[0]['ceiling_pct']):.2f} | | | | | | |"
        )
    return "\n".join(lines)


def docs_table(results: Path, name: str) -> str:
    """The docs' table ``name`` (``runs``) from ``results/runs.csv``."""
    if name != "runs":
        raise ValueError(f"unknown PSL table {name!r}: use runs")
    return table(read_csv(results / "runs.csv"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/psl"))
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--libmoon-python",
        default=DEFAULT_LIBMOON_PYTHON,
        help="interpreter of LibMOON's environment ('' skips LibMOON)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = [r for name in args.problems for r in run_ours(name, args.seed)]
    if args.libmoon_python and Path(args.libmoon_python).exists():
        results += run_libmoon(args.problems, args.libmoon_python, args.seed)
    else:
        print(f"LibMOON skipped: no interpreter at {args.libmoon_python!r}", file=sys.stderr)
    order = {name: i for i, name in enumerate(args.problems)}
    results.sort(key=lambda item: order[item[0]["problem"]])
    rows = [row for row, _ in results]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "runs.csv")
    for name in args.problems:
        points = {row["method"]: F for row, F in results if row["problem"] == name}
        front = PROBLEMS[name][1]().pareto_front(1000)
        plot_final_points(name, front, points, args.out / f"{name}.png")
    print(table(read_csv(args.out / "runs.csv")))
    print(f"\nwrote {args.out}/runs.csv and one PNG per problem in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
