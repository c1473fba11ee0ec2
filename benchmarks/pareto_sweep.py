"""Pareto fronts from a preference sweep, against NSGA-II and the exact front's hypervolume.

Every preference-aware aggregator runs :func:`mogradient.pareto.preference_sweep`: one point
per preference of a Das–Dennis lattice (100 points for two objectives, 300 for three), each
moved by projected Adam with the same settings on every problem. Methods without a preference
input run the same sweep for reference (their spread can only come from the starting points).
NSGA-II (pymoo) gets the same population, starts from the same points and gets the same number
of evaluations. Scores: hypervolume as a percentage of the exact front's, IGD+, spacing.

    python -m benchmarks.pareto_sweep --quick     # smoke run, < 1 minute
    python -m benchmarks.pareto_sweep --out docs/results/sweep --jobs 2   # docs/benchmarks-sweep.md

``--optimizer armijo`` runs every gradient method with the line search instead of Adam.

Writes ``runs.csv`` (one row per run), ``summary.csv`` (mean and std over seeds) and one
``<problem>.png`` per problem (final points of seed 0) to ``--out``, and prints the tables.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import mogradient
from benchmarks.nsga2_reference import run_nsga2
from benchmarks.pareto_plots import plot_final_points
from benchmarks.synthetic import PROBLEMS as SYNTHETIC_PROBLEMS
from benchmarks.tables import read_csv, write_csv
from mogradient.pareto import (
    Problem,
    hypervolume,
    igd_plus,
    non_dominated,
    simplex_lattice,
    spacing,
)
from mogradient.pareto.sweep import (
    FRONT_POINTS,
    default_reference_point,
    preference_sweep,
    ray_preferences,
)

#: Benchmark problems by display name (definitions identical to pymoo's ZDT and DTLZ2): the
#: synthetic benchmark's, without the CAGrad toy (issue 14's list).
PROBLEMS: dict[str, Callable[[], Problem]] = {
    name: make for name, make in SYNTHETIC_PROBLEMS.items() if name != "cagrad_toy"
}
#: Final points per run: the issue's cap (100 for two objectives, 300 for three).
POINTS = {2: 100, 3: 300}
#: Preference-aware methods (they take ``preference=``), every one registered.
PREFERENCE_METHODS = ["linear", "tchebycheff", "stch", "epo", "upgrad", "aligned-mtl", "config",
                      "dualproj", "softmin", "pbi", "cosmos", "sdmgrad"]  # fmt: skip
#: Methods whose point lands where ``p_i (f_i - z_i)`` is equal: aimed with ray_preferences.
RAY_METHODS = {"tchebycheff", "stch", "epo"}
#: Methods without a preference input, run once for reference (as in benchmarks/synthetic.py).
REFERENCE_METHODS = ["mgda", "mean", "pcgrad"]
#: Hyper-parameters other than the defaults. STCH's mu is in the units of the objectives,
#: which are of order 1 here: 0.01 (the paper's range is 0.01-1); the default 0.1 blurs the
#: Tchebycheff ray.
AGGREGATOR_KWARGS: dict[str, dict[str, object]] = {"stch": {"mu": 0.01}}
#: The floor of every preference entry (no objective is ever ignored completely).
FLOOR = 1e-3
NSGA2 = "nsga2"
NSGA2_LONG = "nsga2 (4x evals)"


@dataclass(frozen=True)
class Budget:
    """Optimiser settings shared by every gradient method and problem, and the seeds."""

    steps: int
    lr: float
    seeds: int
    reference_seeds: int
    optimizer: Literal["adam", "armijo"] = "adam"


QUICK = Budget(steps=20, lr=0.05, seeds=1, reference_seeds=1)
FULL = Budget(steps=150, lr=0.05, seeds=5, reference_seeds=1)


def preferences_for(method: str, n_obj: int) -> np.ndarray:
    """The preference rows a method gets: the lattice, aimed along rays for Tchebycheff-type
    methods, floored at :data:`FLOOR` for the others."""
    lattice = simplex_lattice(n_obj, POINTS[n_obj])
    if method in RAY_METHODS:
        return ray_preferences(lattice, FLOOR)
    floored = np.maximum(lattice, FLOOR)
    return floored / floored.sum(axis=1, keepdims=True)


def factory(method: str, seed: int) -> Callable[[np.ndarray], mogradient.Aggregator]:
    """``preference -> Aggregator`` for ``method`` (methods without preference ignore it)."""
    kwargs = dict(AGGREGATOR_KWARGS.get(method, {}))
    counter = iter(range(10**9))

    def build(preference: np.ndarray) -> mogradient.Aggregator:
        extra: dict[str, object] = {}
        if method in PREFERENCE_METHODS:
            extra["preference"] = preference.tolist()
        if method == "pcgrad":  # a distinct random stream per point and seed
            extra["seed"] = seed * 1000 + next(counter)
        return mogradient.get_aggregator(method, **kwargs, **extra)

    return build


@dataclass(frozen=True)
class Ceiling:
    """What a set can score on a problem: the exact front's hypervolume and an even spread's."""

    ref_point: np.ndarray
    exact_hv: float
    even_hv: float
    front: np.ndarray


def ceiling(name: str) -> Ceiling:
    """Reference point, exact hypervolume and the hypervolume of an evenly spread set.

    DTLZ2's exact hypervolume is analytic (the box minus the positive orthant of the unit
    ball); the others integrate a 100,000-point front sample (relative error below 1e-5).
    """
    problem = PROBLEMS[name]()
    ref = default_reference_point(problem)
    if problem.name == "dtlz2":
        m = problem.n_obj
        ball = math.pi ** (m / 2) / math.gamma(m / 2 + 1) / 2**m
        exact = float(np.prod(ref)) - ball
    else:
        exact = hypervolume(problem.pareto_front(100_000), ref)
    even = hypervolume(problem.pareto_front(POINTS[problem.n_obj]), ref)
    return Ceiling(ref, exact, even, problem.pareto_front(FRONT_POINTS))


def starting_points(problem: Problem, n_points: int, seed: int) -> torch.Tensor:
    """Uniform points in the box, the same for every method of a seed (NSGA-II included)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n_points, problem.n_var, generator=generator, dtype=torch.float64)
    return problem.lower + u * (problem.upper - problem.lower)


def run_one(job: tuple[str, str, int, Budget]) -> tuple[dict, np.ndarray]:
    """One method on one problem for one seed: its score row and final objectives."""
    name, method, seed, budget = job
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give
    problem = PROBLEMS[name]()
    top = ceiling(name)
    n_points = POINTS[problem.n_obj]
    x0 = starting_points(problem, n_points, seed)
    sweep_evals = n_points * (budget.steps + 1)
    start = time.perf_counter()
    if method in (NSGA2, NSGA2_LONG):
        n_evals = sweep_evals * (4 if method == NSGA2_LONG else 1)
        F = run_nsga2(problem, x0, n_evals=n_evals, seed=seed)
    else:
        result = preference_sweep(
            problem,
            factory(method, seed),
            preferences_for(method, problem.n_obj),
            starts=x0,
            steps=budget.steps,
            optimizer=budget.optimizer,
            lr=budget.lr,
            ref_point=top.ref_point,
            front=top.front,
        )
        F, n_evals = result.F, result.n_evals
    seconds = time.perf_counter() - start
    kept = non_dominated(F)
    row = {
        "problem": name,
        "method": method,
        "seed": seed,
        "hv_pct": 100 * hypervolume(kept, top.ref_point) / top.exact_hv,
        "igd_plus": igd_plus(F, top.front),
        "spacing": spacing(kept) if len(kept) >= 2 else math.nan,
        "n_nondominated": len(kept),
        "evals": n_evals,
        "seconds": seconds,
    }
    return row, F


def run(
    budget: Budget, problems: list[str], methods: list[str], out: Path, jobs: int
) -> list[dict]:
    """Every method × problem × seed (reference methods: fewer seeds); CSVs and plots."""
    out.mkdir(parents=True, exist_ok=True)
    work = [
        (p, m, s, budget)
        for p in problems
        for m in methods
        for s in range(budget.reference_seeds if m in REFERENCE_METHODS else budget.seeds)
    ]
    if jobs == 1:
        results = [run_one(job) for job in work]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(run_one, work, chunksize=1))
    rows = [row for row, _ in results]
    write_csv(rows, out / "runs.csv")
    write_csv(summarise(rows), out / "summary.csv")
    for name in problems:
        seed0 = {
            row["method"]: F for row, F in results if row["problem"] == name and not row["seed"]
        }
        plot_final_points(name, ceiling(name).front, seed0, out / f"{name}.png")
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per problem and method."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["problem"], row["method"]), []).append(row)
    summary = []
    for (problem, method), group in groups.items():
        entry: dict[str, object] = {"problem": problem, "method": method, "seeds": len(group)}
        for key in ("hv_pct", "igd_plus", "spacing", "n_nondominated", "evals", "seconds"):
            values = np.array([r[key] for r in group], dtype=float)
            entry[f"{key}_mean"] = float(np.mean(values))
            entry[f"{key}_std"] = float(np.std(values))
        summary.append(entry)
    return summary


def problem_table(summary: list[dict], name: str) -> str:
    """Markdown table for one problem: one row per method, then the ceilings."""
    top = ceiling(name)
    lines = [
        "| method | HV % of exact | IGD+ | spacing | non-dominated | evaluations | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in summary if r["problem"] == name):
        seeds = "" if r["seeds"] > 1 else " (1 seed)"
        lines.append(
            f"| {r['method']}{seeds} | {r['hv_pct_mean']:.2f} ± {r['hv_pct_std']:.2f} "
            f"| {r['igd_plus_mean']:.4f} ± {r['igd_plus_std']:.4f} "
            f"| {_spacing_cell(r)} "
            f"| {r['n_nondominated_mean']:.1f} | {r['evals_mean']:,.0f} "
            f"| {r['seconds_mean']:.1f} |"
        )
    n = POINTS[PROBLEMS[name]().n_obj]
    lines.append(f"| {n} evenly spread front points | {100 * top.even_hv / top.exact_hv:.2f} "
                 "| | | | | |")  # fmt: skip
    ref = ", ".join(f"{v:.3f}" for v in top.ref_point)
    return "\n".join(lines) + f"\n\nExact hypervolume {top.exact_hv:.4f}, reference point ({ref})."


def _spacing_cell(r: dict) -> str:
    """Spacing ``mean ± std``, or a dash where some seed kept fewer than two points."""
    if math.isnan(r["spacing_mean"]):
        return "– (< 2 points)"
    return f"{r['spacing_mean']:.4f} ± {r['spacing_std']:.4f}"


def targets(summary: list[dict], problems: list[str]) -> str:
    """Per problem: the best gradient method against the issue's two targets."""
    lines = [
        "| problem | best gradient method | HV % | gap to 99% | NSGA-II HV % (equal evals) "
        "| beats NSGA-II |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name in problems:
        rows = [r for r in summary if r["problem"] == name]
        gradient = [r for r in rows if not r["method"].startswith(NSGA2)]
        nsga = [r for r in rows if r["method"] == NSGA2]
        if not gradient:
            continue
        best = max(gradient, key=lambda r: r["hv_pct_mean"])
        gap = best["hv_pct_mean"] - 99.0
        nsga_hv = nsga[0]["hv_pct_mean"] if nsga else math.nan
        verdict = "yes" if best["hv_pct_mean"] >= nsga_hv else "no" if nsga else "n/a"
        lines.append(
            f"| {name} | {best['method']} | {best['hv_pct_mean']:.2f} | {gap:+.2f} "
            f"| {nsga_hv:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def ceilings(summary: list[dict], problems: list[str]) -> str:
    """Per problem: what an evenly spread set of the sweep's size scores (% of the exact
    hypervolume), and the best gradient method as a % of that ceiling."""
    lines = [
        "| problem | ceiling: 100 / 300 evenly spread points "
        "| best gradient method, % of that ceiling |",
        "|---|---:|---:|",
    ]
    for name in problems:
        gradient = [
            r for r in summary if r["problem"] == name and not r["method"].startswith(NSGA2)
        ]
        if not gradient:
            continue
        best = max(gradient, key=lambda r: r["hv_pct_mean"])
        top = ceiling(name)
        even = 100 * top.even_hv / top.exact_hv
        lines.append(
            f"| {name} | {even:.2f} | {best['method']} {100 * best['hv_pct_mean'] / even:.2f} |"
        )
    return "\n".join(lines)


def line_search_table(adam_runs: list[dict], armijo: list[dict], problems: list[str]) -> str:
    """Seed 0's hypervolume (% of exact) with Adam → with the line search, and the line
    search's evaluations as a multiple of Adam's, per method (rows) and problem (columns)."""
    adam = {(r["problem"], r["method"]): r for r in adam_runs if r["seed"] == 0}
    lines = ["| method | " + " | ".join(problems) + " |", "|---|" + "---:|" * len(problems)]
    for method in dict.fromkeys(r["method"] for r in armijo):
        cells = []
        for name in problems:
            a = adam[(name, method)]
            b = next(r for r in armijo if r["problem"] == name and r["method"] == method)
            ratio = b["evals_mean"] / a["evals"]
            cells.append(f"{a['hv_pct']:.1f} → {b['hv_pct_mean']:.1f} ({ratio:.1f}×)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def docs_table(results: Path, name: str) -> str:
    """The docs' table ``name`` from ``results/summary.csv``: ``targets``, ``ceilings``, one
    problem's table (its name), or ``line_search`` (with ``armijo/summary.csv`` and the Adam
    sweep's ``runs.csv``)."""
    summary = read_csv(results / "summary.csv")
    problems = list(dict.fromkeys(r["problem"] for r in summary))
    if name == "targets":
        return targets(summary, problems)
    if name == "ceilings":
        return ceilings(summary, problems)
    if name == "line_search":
        armijo = read_csv(results / "armijo" / "summary.csv")
        return line_search_table(read_csv(results / "runs.csv"), armijo, problems)
    if name in problems:
        return problem_table(summary, name)
    raise ValueError(
        f"unknown sweep table {name!r}: use targets, ceilings, line_search or one of {problems}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 20 steps, 1 seed, < 1 minute"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/sweep"))
    parser.add_argument("--steps", type=int, help="Adam steps per point")
    parser.add_argument("--lr", type=float, help="initial step size")
    parser.add_argument(
        "--optimizer",
        choices=["adam", "armijo"],
        default="adam",
        help="for every gradient method: Adam (default) or the Armijo line search",
    )
    parser.add_argument("--seeds", type=int, help="seeds per method and problem")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument(
        "--methods",
        nargs="+",
        help="aggregator names, 'nsga2' and 'nsga2-long' (default: all preference-aware "
        "methods, the reference methods, nsga2 and nsga2-long)",
    )
    args = parser.parse_args(argv)

    base = QUICK if args.quick else FULL
    budget = Budget(
        steps=args.steps or base.steps,
        lr=args.lr or base.lr,
        seeds=args.seeds or base.seeds,
        reference_seeds=min(base.reference_seeds, args.seeds or base.seeds),
        optimizer=args.optimizer,
    )
    methods = args.methods or [*PREFERENCE_METHODS, *REFERENCE_METHODS, NSGA2, "nsga2-long"]
    methods = [NSGA2_LONG if m == "nsga2-long" else m for m in methods]
    start = time.perf_counter()
    rows = run(budget, args.problems, methods, args.out, args.jobs)
    summary = summarise(rows)
    print(
        f"\n{budget.optimizer}, lr {budget.lr} (cosine decay), {budget.steps} steps; "
        f"seeds: {budget.seeds} (reference methods {budget.reference_seeds}); mean ± std\n"
    )
    for name in args.problems:
        print(f"### {name}\n\n{problem_table(summary, name)}\n")
    print("### Targets (HV within 1% of the exact front's; at least NSGA-II's)\n")
    print(targets(summary, args.problems))
    print(
        f"\nwrote {args.out}/runs.csv, summary.csv and one PNG per problem "
        f"in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
