"""Synthetic Pareto benchmark: every aggregator on every test problem, against NSGA-II.

For each registered aggregator (aliases skipped), problem and seed, a population of starting
points descends with projected gradient steps (:mod:`benchmarks.pareto_descent`). Linear
scalarisation gets one preference vector per point, spread over the simplex; the other methods
rely on the spread of the starting points. Every method, NSGA-II included, gets the same budget
of ``population * steps`` evaluations and starts from the same points. The final non-dominated
set is scored by hypervolume (higher is better) and IGD to the exact front (lower is better).

    python -m benchmarks.synthetic --quick          # < 2 minutes on 2 cores
    python -m benchmarks.synthetic                  # the run in docs/benchmarks-synthetic.md

Writes ``runs.csv`` (one row per run), ``summary.csv`` (mean and std over seeds), and one
``<problem>.png`` per problem to ``--out`` (default ``outputs/synthetic``), and prints the tables.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import mogradient
from benchmarks.nsga2_reference import run_nsga2
from benchmarks.pareto_descent import descend
from benchmarks.pareto_plots import plot_final_points
from benchmarks.tables import read_csv, write_csv
from mogradient import Aggregator
from mogradient.pareto import Problem, get_problem, hypervolume, igd, non_dominated, simplex_lattice

#: Benchmark problems by display name.
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "zdt1": lambda: get_problem("zdt1"),
    "zdt2": lambda: get_problem("zdt2"),
    "zdt3": lambda: get_problem("zdt3"),
    "dtlz2-2obj": lambda: get_problem("dtlz2", n_obj=2),
    "dtlz2-3obj": lambda: get_problem("dtlz2", n_obj=3),
    "fonseca_fleming": lambda: get_problem("fonseca_fleming"),
    "cagrad_toy": lambda: get_problem("cagrad_toy"),
}
#: Hyper-parameters other than the defaults (CAGrad's paper value).
AGGREGATOR_KWARGS: dict[str, dict[str, object]] = {"cagrad": {"c": 0.4}}
NSGA2 = "nsga2 (no gradients)"
FRONT_POINTS = 500


@dataclass(frozen=True)
class Budget:
    """Points per run, steps per point (NSGA-II: ``population * steps`` evaluations), seeds."""

    population: int
    steps: int
    seeds: int
    lr: float


QUICK = Budget(population=12, steps=60, seeds=3, lr=0.3)
FULL = Budget(population=20, steps=300, seeds=5, lr=0.3)


def gradient_methods() -> list[str]:
    """Registered aggregator names, keeping the first name (sorted) of each class."""
    seen: set[type] = set()
    names = []
    for name in mogradient.available_aggregators():
        cls = type(mogradient.get_aggregator(name))
        if cls not in seen:
            seen.add(cls)
            names.append(name)
    return names


def preference_vectors(n_points: int, n_obj: int) -> np.ndarray:
    """``n_points`` weight vectors spread over the simplex (an evenly thinned lattice)."""
    lattice = simplex_lattice(n_obj, n_points)
    return lattice[np.linspace(0, len(lattice) - 1, n_points).round().astype(int)]


def make_aggregators(method: str, n_points: int, n_obj: int, seed: int) -> list[Aggregator]:
    """One aggregator per point (each keeps its own state and random stream).

    Preference-aware methods (their class's ``preference_aware``) get one point of the simplex
    each; seeded methods (``seeded``) a distinct random stream per point and seed.
    """
    cls = type(mogradient.get_aggregator(method))
    preferences = preference_vectors(n_points, n_obj)
    aggregators = []
    for p in range(n_points):
        kwargs = dict(AGGREGATOR_KWARGS.get(method, {}))
        if cls.preference_aware:
            kwargs["preference"] = preferences[p].tolist()
        if cls.seeded:
            kwargs["seed"] = seed * n_points + p
        aggregators.append(mogradient.get_aggregator(method, **kwargs))
    return aggregators


def starting_points(problem: Problem, n_points: int, seed: int) -> torch.Tensor:
    """Points drawn uniformly in the problem's box (the same for every method)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n_points, problem.n_var, generator=generator, dtype=torch.float64)
    return problem.lower + u * (problem.upper - problem.lower)


def reference_point(front: np.ndarray) -> np.ndarray:
    """The front's nadir moved out by 10% of the front's range in every objective."""
    return front.max(axis=0) + 0.1 * (front.max(axis=0) - front.min(axis=0))


def final_objectives(method: str, problem: Problem, budget: Budget, seed: int) -> np.ndarray:
    """Objectives ``[population, n_obj]`` of ``method``'s final population for one seed."""
    x0 = starting_points(problem, budget.population, seed)
    if method == NSGA2:
        return run_nsga2(problem, x0, n_evals=budget.population * budget.steps, seed=seed)
    aggregators = make_aggregators(method, budget.population, problem.n_obj, seed)
    x = descend(problem, aggregators, x0, steps=budget.steps, lr=budget.lr)
    with torch.no_grad():
        return problem.evaluate(x).numpy()


def run(budget: Budget, problems: list[str], methods: list[str], out: Path) -> list[dict]:
    """Run every method × problem × seed; write CSVs and plots under ``out``; return the rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    jobs = [(p, m, s) for p in problems for m in methods for s in range(budget.seeds)]
    fronts = {name: PROBLEMS[name]().pareto_front(FRONT_POINTS) for name in problems}
    seed0: dict[str, dict[str, np.ndarray]] = {name: {} for name in problems}
    for name, method, seed in tqdm(jobs, desc="synthetic", unit="run"):
        problem, front = PROBLEMS[name](), fronts[name]
        start = time.perf_counter()
        try:
            F = final_objectives(method, problem, budget, seed)
        except ValueError as error:  # e.g. a method that takes logs of losses meets a zero
            tqdm.write(f"skipped {method} on {name} (seed {seed}): {error}")
            continue
        kept = non_dominated(F)
        rows.append(
            {
                "problem": name,
                "method": method,
                "seed": seed,
                "hypervolume": hypervolume(kept, reference_point(front)),
                "igd": igd(kept, front),
                "n_distinct": distinct_points(kept),
                "seconds": time.perf_counter() - start,
            }
        )
        if seed == 0:
            seed0[name][method] = F
    write_csv(rows, out / "runs.csv")
    write_csv(summarise(rows), out / "summary.csv")
    for name in problems:
        plot_final_points(name, fronts[name], seed0[name], out / f"{name}.png")
    return rows


def distinct_points(F: np.ndarray) -> int:
    """Number of points that differ by more than 1e-6 in some objective (collapse detector)."""
    return len(np.unique(np.round(F, 6), axis=0))


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per problem and method."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["problem"], row["method"]), []).append(row)
    return [
        {
            "problem": problem,
            "method": method,
            "seeds": len(group),
            "hv_mean": float(np.mean([r["hypervolume"] for r in group])),
            "hv_std": float(np.std([r["hypervolume"] for r in group])),
            "igd_mean": float(np.mean([r["igd"] for r in group])),
            "igd_std": float(np.std([r["igd"] for r in group])),
            "distinct_mean": float(np.mean([r["n_distinct"] for r in group])),
            "distinct_std": float(np.std([r["n_distinct"] for r in group])),
        }
        for (problem, method), group in groups.items()
    ]


def markdown_table(summary: list[dict], metric: str, problems: list[str], digits: int = 3) -> str:
    """Methods as rows, problems as columns, cells ``mean ± std``."""
    cells = {(r["method"], r["problem"]): r for r in summary}
    methods = list(dict.fromkeys(r["method"] for r in summary))
    lines = [
        "| method | " + " | ".join(problems) + " |",
        "|---|" + "---:|" * len(problems),
    ]
    for method in methods:
        formatted = [
            f"{v[metric + '_mean']:.{digits}f} ± {v[metric + '_std']:.{digits}f}"
            if (v := cells.get((method, p))) is not None
            else "refused"  # the method refused this problem's values (logged while running)
            for p in problems
        ]
        lines.append(f"| {method} | " + " | ".join(formatted) + " |")
    return "\n".join(lines)


def front_hypervolumes(problems: list[str]) -> str:
    """The hypervolume of each exact front sample: the best a set can score (row for the table)."""
    values = []
    for name in problems:
        front = PROBLEMS[name]().pareto_front(FRONT_POINTS)
        values.append(f"{hypervolume(front, reference_point(front)):.3f}")
    return "| exact front | " + " | ".join(values) + " |"


def docs_table(results: Path, name: str) -> str:
    """Table ``name`` of the docs from ``results/summary.csv``: ``hv`` (with the exact-front
    row), ``igd``, ``distinct``, or ``methods`` (what runs today, from the registry, against
    what the committed results hold)."""
    summary = read_csv(results / "summary.csv")
    problems = list(dict.fromkeys(r["problem"] for r in summary))
    if name == "methods":
        today = [*gradient_methods(), NSGA2]
        held = list(dict.fromkeys(r["method"] for r in summary))
        return (
            f"Today it runs {len(today)} methods: {', '.join(f'`{m}`' for m in today)}. "
            f"The committed results hold {len(held)}: {', '.join(f'`{m}`' for m in held)}."
        )
    if name not in ("hv", "igd", "distinct"):
        raise ValueError(f"unknown synthetic table {name!r}: use hv, igd, distinct or methods")
    table = markdown_table(summary, name, problems, digits=1 if name == "distinct" else 3)
    return table + ("\n" + front_hypervolumes(problems) if name == "hv" else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budget, < 2 minutes")
    parser.add_argument("--out", type=Path, default=Path("outputs/synthetic"))
    parser.add_argument("--population", type=int, help="points per run")
    parser.add_argument("--steps", type=int, help="steps; NSGA-II gets population*steps evals")
    parser.add_argument("--seeds", type=int, help="seeds per method and problem")
    parser.add_argument("--lr", type=float, help="step size of the projected gradient steps")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", help="aggregator names (default: all) and 'nsga2'")
    args = parser.parse_args(argv)

    base = QUICK if args.quick else FULL
    budget = Budget(
        population=args.population or base.population,
        steps=args.steps or base.steps,
        seeds=args.seeds or base.seeds,
        lr=args.lr or base.lr,
    )
    methods = args.methods or [*gradient_methods(), "nsga2"]
    methods = [NSGA2 if m == "nsga2" else m for m in methods]
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give
    start = time.perf_counter()
    rows = run(budget, args.problems, methods, args.out)
    summary = summarise(rows)
    print(
        f"\n{budget.population} points x {budget.steps} steps (= evaluations per point), "
        f"{budget.seeds} seeds, lr {budget.lr}; mean ± std over seeds\n"
    )
    print("Hypervolume of the final non-dominated set (higher is better):\n")
    print(markdown_table(summary, "hv", args.problems))
    print(front_hypervolumes(args.problems))
    print("\nIGD to the exact front (lower is better):\n")
    print(markdown_table(summary, "igd", args.problems))
    print(f"\nDistinct points in the final non-dominated set (of {budget.population}):\n")
    print(markdown_table(summary, "distinct", args.problems, digits=1))
    print(
        f"\nwrote {args.out}/runs.csv, summary.csv and one PNG per problem "
        f"in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
