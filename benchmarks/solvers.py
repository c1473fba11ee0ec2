"""Side-by-side timing and accuracy of the weight solvers (not a test).

* Min-norm (MGDA) weights: our exact ``min_norm`` vs quadprog (Goldfarb–Idnani on the simplex QP
  with a tiny ridge) vs Frank–Wolfe as in Sener & Koltun's ``MinNormSolver``, cold on independent
  Gramians of three families (Gaussian with a full-support optimum, conflicting low-rank, nearly
  collinear), on a sweep of every n from 2 to 100 against quadprog, and warm on a slowly
  drifting sequence.
* CAGrad inner problem: our exact ``cagrad_weights`` vs scipy SLSQP on the original CAGrad
  code's formulation.
* UPGrad and DualProj weights: ours vs TorchJD 0.18's ``UPGradWeighting`` /
  ``DualProjWeighting`` (its default quadprog projector), both on the same problem.
* PCD weights: ours vs TorchJD 0.18's ``PCDWeighting`` (:mod:`benchmarks.solvers_pcd`).
* The public ``weights()`` of the aggregators vs the raw compiled solve: the µs that validation
  and the Python layer add.
* The public ``weights()`` with torch inputs, hot and cold (interleaved call by call with
  TorchJD's), against TorchJD 0.18 for every Gramian method both have
  (:mod:`benchmarks.solvers_public`).

Every call is timed on its own (``perf_counter_ns``), medians are reported. The gap of a method
on one Gramian is ``(f − f_best) / max(|f_best|, 1e-12·max diag G)``, with ``f_best`` the
smallest objective any method reached on it (see docs/solvers.md).

Run: ``python -m benchmarks.solvers [--repeats 200] [--quick] [--out outputs/solvers]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import quadprog
import torch
from scipy.optimize import minimize

from benchmarks.solver_plots import plot_sweep, plot_timings
from benchmarks.solvers_bargaining import bargaining_rows, format_bargaining
from benchmarks.solvers_pcd import pcd_rows
from benchmarks.solvers_public import SIZES as PUBLIC_SIZES
from benchmarks.solvers_public import format_public, public_rows
from benchmarks.tables import read_csv, write_csv
from mogradient.aggregators.cagrad import CAGrad
from mogradient.aggregators.dualproj import DualProj
from mogradient.aggregators.mgda import MGDA
from mogradient.aggregators.upgrad import UPGrad
from mogradient.solvers import cagrad_weights, dualproj_weights, min_norm, upgrad_weights
from mogradient.solvers.cagrad import _update_kernel
from mogradient.solvers.dual_cone import _dualproj_kernel, _upgrad_kernel
from mogradient.solvers.min_norm import _NO_WARM_START, _min_norm_kernel

GAP_FLOOR = 1e-12
QUADPROG_RIDGE = 1e-10
FW_MAX_ITER = 250
FW_STOP = 1e-5
CAGRAD_C = 0.4
CHUNK = 10
GAUSSIAN_D = 2000
#: TorchJD's QuadprogProjector defaults: the Gramian is divided by its trace (when that is at
#: least norm_eps) and reg_eps·I is added.
TORCHJD_NORM_EPS = 1e-4
TORCHJD_REG_EPS = 1e-4

#: One input of a solver cell: a Gramian, or a tuple of the forms the solvers take it in.
X = TypeVar("X")


def gaussian_jacobian(n: int, rng: np.random.Generator) -> np.ndarray:
    """(a) ``J = randn(n, 2000)``: nearly orthogonal gradients, the min-norm optimum has full
    support (every weight positive), the case a vertex-first active set is slowest on."""
    return rng.normal(size=(n, GAUSSIAN_D))


def conflicting_jacobian(n: int, rng: np.random.Generator, rank: int = 3) -> np.ndarray:
    """(b) ``gᵢ = aᵢ(u + 2·vᵢ)``, vᵢ in a rank-3 subspace orthogonal to the unit vector u.

    Pairs conflict often (vᵢ·vⱼ < −1/4), yet every gradient keeps the shared component u, so the
    min-norm point is not zero (its norm is at least min aᵢ). G has rank 4.
    """
    d = 2 * n + rank + 1
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    basis = rng.normal(size=(d, rank))
    basis -= np.outer(u, u @ basis)
    q, _ = np.linalg.qr(basis)
    scales = np.exp(0.5 * rng.normal(size=(n, 1)))
    return scales * (u + 2.0 * rng.normal(size=(n, rank)) @ q.T)


def collinear_jacobian(n: int, rng: np.random.Generator) -> np.ndarray:
    """(c) ``gᵢ = aᵢ(u + 0.01·νᵢ)``, u and νᵢ unit vectors, ``aᵢ = exp(0.1·N(0, 1))``: nearly
    collinear gradients, G close to rank one and badly conditioned."""
    d = 2 * n + 10
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    nu = rng.normal(size=(n, d))
    nu /= np.linalg.norm(nu, axis=1, keepdims=True)
    return np.exp(0.1 * rng.normal(size=(n, 1))) * (u + 0.01 * nu)


FAMILIES: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "gaussian": gaussian_jacobian,
    "conflicting": conflicting_jacobian,
    "collinear": collinear_jacobian,
}


def gramians(kind: str, n: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for _ in range(count):
        j = FAMILIES[kind](n, rng)
        out.append(j @ j.T)
    return out


def quadprog_weights(g: np.ndarray) -> np.ndarray:
    """min ½cᵀ(G + εI)c s.t. 1ᵀc = 1, c ≥ 0, the usual quadprog set-up (ε relative to diag)."""
    n = g.shape[0]
    ridge = QUADPROG_RIDGE * np.max(np.diag(g))
    constraints = np.hstack([np.ones((n, 1)), np.eye(n)])
    bounds = np.zeros(n + 1)
    bounds[0] = 1.0
    return quadprog.solve_qp(g + ridge * np.eye(n), np.zeros(n), constraints, bounds, 1)[0]


def _line_2d(v1v1: float, v1v2: float, v2v2: float) -> tuple[float, float]:
    """Sener & Koltun's ``_min_norm_element_from2``: min over γ of ‖γv₁ + (1−γ)v₂‖²."""
    if v1v2 >= v1v1:
        return 0.999, v1v1
    if v1v2 >= v2v2:
        return 0.001, v2v2
    gamma = -(v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2)
    return gamma, v2v2 + gamma * (v1v2 - v2v2)


def frank_wolfe_weights(g: np.ndarray) -> np.ndarray:
    """Sener & Koltun's ``MinNormSolver.find_min_norm_element_FW`` on a Gramian.

    Best pair as the start (their pairwise loop, vectorised here), then Frank–Wolfe with exact
    line search, at most 250 iterations, stop when the weights move less than 1e-5 (L1).
    """
    n = g.shape[0]
    i, j = np.triu_indices(n, 1)
    gii, gij, gjj = g[i, i], g[i, j], g[j, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(
            gij >= gii, 0.999, np.where(gij >= gjj, 0.001, -(gij - gjj) / (gii + gjj - 2 * gij))
        )
    cost = np.where(gij >= gii, gii, np.where(gij >= gjj, gjj, gjj + gamma * (gij - gjj)))
    best = int(np.argmin(cost))
    sol = np.zeros(n)
    sol[i[best]] = gamma[best]
    sol[j[best]] = 1.0 - gamma[best]
    if n < 3:
        return sol
    for _ in range(FW_MAX_ITER):
        gsol = g @ sol
        t = int(np.argmin(gsol))
        nc, _ = _line_2d(float(sol @ gsol), float(gsol[t]), float(g[t, t]))
        new = nc * sol
        new[t] += 1.0 - nc
        if np.sum(np.abs(new - sol)) < FW_STOP:
            return sol
        sol = new
    return sol


def cagrad_slsqp(g: np.ndarray, c: float) -> np.ndarray:
    """The original CAGrad inner solve: SLSQP on ``x·b + sqrt(xᵀGx·φ)`` over the simplex."""
    n = g.shape[0]
    b = g.sum(axis=1) / n
    phi = c * c * b.sum() / n
    res = minimize(
        lambda x: x @ b + np.sqrt(max(x @ g @ x, 0.0) * phi),
        np.full(n, 1.0 / n),
        bounds=[(0.0, 1.0)] * n,
        constraints=({"type": "eq", "fun": lambda x: 1.0 - x.sum()},),
    )
    return res.x


def min_norm_objective(g: np.ndarray, c: np.ndarray) -> float:
    c = np.clip(c, 0.0, None)
    c = c / c.sum()
    return float(c @ g @ c)


def cagrad_objective(g: np.ndarray, w: np.ndarray, c: float = CAGRAD_C) -> float:
    w = np.clip(w, 0.0, None)
    w = w / w.sum()
    n = g.shape[0]
    b = g.sum(axis=1) / n
    return float(w @ b + c * np.sqrt(b.sum() / n) * np.sqrt(max(w @ g @ w, 0.0)))


def timed(solver: Callable[[X], object], x: X) -> tuple[object, float]:
    start = time.perf_counter_ns()
    out = solver(x)
    return out, (time.perf_counter_ns() - start) / 1e3


def run_cells(
    inputs: Sequence[X],
    solvers: Mapping[str, Callable[[X], object]],
    score: Callable[[int, dict[str, list]], dict[str, np.ndarray]],
) -> dict[str, dict]:
    """Time every solver on every input and score its outputs.

    Solvers take turns on blocks of ``CHUNK`` inputs: each runs a block back to back (as in a
    training loop, its code stays hot) and slow drifts in machine load hit all of them alike.
    ``score(count, outputs)`` returns one gap per input and solver.
    """
    times: dict[str, list[float]] = {name: [] for name in solvers}
    outputs: dict[str, list] = {name: [] for name in solvers}
    for start in range(0, len(inputs), CHUNK):
        for name, solver in solvers.items():
            for x in inputs[start : start + CHUNK]:
                w, us = timed(solver, x)
                times[name].append(us)
                outputs[name].append(w)
    gaps = score(len(inputs), outputs)
    return {
        name: {
            "median_us": float(np.median(times[name])),
            "median_gap": float(np.median(gaps[name])),
            "max_gap": float(np.max(gaps[name])),
        }
        for name in solvers
    }


def objective_gaps(
    gs: list[np.ndarray], objective: Callable[[np.ndarray, np.ndarray], float]
) -> Callable[[int, dict[str, list]], dict[str, np.ndarray]]:
    """Gap to the best objective any solver reached, relative (floored at 1e-12·max diag G)."""

    def score(count: int, outputs: dict[str, list]) -> dict[str, np.ndarray]:
        values = {
            name: np.array([objective(g, w) for g, w in zip(gs, out, strict=True)])
            for name, out in outputs.items()
        }
        best = np.min(list(values.values()), axis=0)
        floor = GAP_FLOOR * np.array([np.max(np.diag(g)) for g in gs])
        denom = np.maximum(np.abs(best), floor)
        return {name: (v - best) / denom for name, v in values.items()}

    return score


def warm_up() -> None:
    """Compile (or load from cache) the numba kernels before any timing."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 40):
        j = gaussian_jacobian(n, rng)
        g = j @ j.T
        min_norm(g)
        min_norm(g, warm_start=np.full(n, 1.0 / n))
        cagrad_weights(g, CAGRAD_C)
        upgrad_weights(g)
        dualproj_weights(g)
        for agg in (MGDA(), UPGrad(), DualProj(), CAGrad(CAGRAD_C)):
            agg.weights(g)
            agg.weights(torch.as_tensor(g))


def min_norm_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    solvers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "ours": min_norm,
        "quadprog": quadprog_weights,
        "frank_wolfe": frank_wolfe_weights,
    }
    rows = []
    for kind in FAMILIES:
        for n in sizes:
            gs = gramians(kind, n, repeats, rng)
            cells = run_cells(gs, solvers, objective_gaps(gs, min_norm_objective))
            rows += _rows("min_norm cold", kind, n, repeats, cells, "quadprog")
    return rows


def sweep_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    """Every n: ours vs quadprog only (the target is ≥ 2× at every n, at a gap ≤ 1e-9)."""
    solvers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "ours": min_norm,
        "quadprog": quadprog_weights,
    }
    rows = []
    for kind in FAMILIES:
        for n in sizes:
            gs = gramians(kind, n, repeats, rng)
            cells = run_cells(gs, solvers, objective_gaps(gs, min_norm_objective))
            rows += _rows("min_norm sweep", kind, n, repeats, cells, "quadprog")
    return rows


def warm_rows(sizes: list[int], steps: int, rng: np.random.Generator) -> list[dict]:
    """A training-loop sequence: J_t = J_{t−1} + 1% noise; warm start from the previous weights."""
    rows = []
    for kind in ("gaussian", "conflicting"):
        for n in sizes:
            j = FAMILIES[kind](n, rng)
            noise = 0.01 * np.linalg.norm(j, axis=1, keepdims=True) / np.sqrt(j.shape[1])
            gs = []
            for _ in range(steps + 1):
                j = j + noise * rng.normal(size=j.shape)
                gs.append(j @ j.T)
            previous = {"w": min_norm(gs[0])}

            def warm(g: np.ndarray, previous: dict = previous) -> np.ndarray:
                previous["w"] = min_norm(g, warm_start=previous["w"])
                return previous["w"]

            solvers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
                "ours warm": warm,
                "ours cold": min_norm,
                "quadprog": quadprog_weights,
            }
            cells = run_cells(gs[1:], solvers, objective_gaps(gs[1:], min_norm_objective))
            rows += _rows("min_norm drifting", kind, n, steps, cells, "quadprog")
    return rows


def cagrad_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    solvers = {
        "ours": lambda g: cagrad_weights(g, CAGRAD_C),
        "slsqp": lambda g: cagrad_slsqp(g, CAGRAD_C),
    }
    rows = []
    for kind in FAMILIES:
        for n in sizes:
            gs = gramians(kind, n, repeats, rng)
            cells = run_cells(gs, solvers, objective_gaps(gs, cagrad_objective))
            rows += _rows(f"cagrad c={CAGRAD_C}", kind, n, repeats, cells, "slsqp")
    return rows


def torchjd_problem(g: np.ndarray) -> np.ndarray:
    """The Gramian TorchJD's default projector solves on: ``G / tr G + 1e-4·I``."""
    trace = float(np.trace(g))
    base = g / trace if trace >= TORCHJD_NORM_EPS else np.zeros_like(g)
    return base + TORCHJD_REG_EPS * np.eye(g.shape[0])


def dual_cone_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    """UPGrad and DualProj weights: ours vs TorchJD's default weighting, on the same problem.

    TorchJD adds ``1e-4·I`` to the trace-normalised Gramian; ours is given that regularised
    Gramian too, so both solve one problem and the gap (max |Δw| relative to max |w|) measures
    agreement, not the ridge. Timing includes TorchJD's float64 tensor in and out.
    """
    from torchjd.aggregation import DualProjWeighting, UPGradWeighting

    rows = []
    for name, ours, theirs in (
        ("upgrad", upgrad_weights, UPGradWeighting()),
        ("dualproj", dualproj_weights, DualProjWeighting()),
    ):
        for kind in ("gaussian", "conflicting"):
            for n in sizes:
                gs = gramians(kind, n, repeats, rng)
                inputs = [(torchjd_problem(g), torch.as_tensor(g)) for g in gs]
                solvers = {
                    "ours": lambda x, f=ours: f(x[0]),
                    "torchjd": lambda x, f=theirs: f(x[1]).numpy(),
                }

                def score(count: int, outputs: dict[str, list]) -> dict[str, np.ndarray]:
                    ref = np.array(outputs["torchjd"])
                    scale = np.maximum(np.abs(ref).max(axis=1), 1.0)
                    return {
                        k: np.abs(np.array(v) - ref).max(axis=1) / scale for k, v in outputs.items()
                    }

                cells = run_cells(inputs, solvers, score)
                rows += _rows(f"{name} weights", kind, n, repeats, cells, "torchjd")
    return rows


def overhead_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    """``agg.weights(G)`` (numpy and torch input) vs the raw compiled solve without validation.

    The difference is what validation, the tolerance bookkeeping and the Python layer cost.
    """
    rows = []
    tol = 1e-8
    cases: list[tuple[str, object, Callable[[np.ndarray], object]]] = [
        ("mgda", MGDA(), lambda g: _min_norm_kernel(g, _NO_WARM_START, False, tol, False)),
        ("upgrad", UPGrad(), lambda g: _upgrad_kernel(g, np.full(len(g), 1 / len(g)), tol, False)),
        (
            "dualproj",
            DualProj(),
            lambda g: _dualproj_kernel(g, np.full(len(g), 1 / len(g)), tol, False),
        ),
        ("cagrad", CAGrad(CAGRAD_C), lambda g: _update_kernel(g, CAGRAD_C, tol, False)),
    ]
    for name, agg, raw in cases:
        for n in sizes:
            gs = gramians("gaussian", n, repeats, rng)
            inputs = [(g, torch.as_tensor(g)) for g in gs]
            solvers = {
                "raw solve": lambda x, raw=raw: raw(x[0]),
                "weights(numpy)": lambda x, agg=agg: agg.weights(x[0]),
                "weights(torch)": lambda x, agg=agg: agg.weights(x[1]),
            }

            def score(count: int, outputs: dict[str, list]) -> dict[str, np.ndarray]:
                ref = np.array([o[0] for o in outputs["raw solve"]])
                return {
                    "raw solve": np.zeros(count),
                    "weights(numpy)": np.abs(np.array(outputs["weights(numpy)"]) - ref).max(1),
                    "weights(torch)": np.abs(
                        np.array([w.numpy() for w in outputs["weights(torch)"]]) - ref
                    ).max(1),
                }

            cells = run_cells(inputs, solvers, score)
            raw_us = cells["raw solve"]["median_us"]
            for row in _rows("weights() overhead", name, n, repeats, cells, "raw solve"):
                row["overhead_us"] = round(row["median_us"] - raw_us, 2)
                rows.append(row)
    return rows


def _rows(
    experiment: str, kind: str, n: int, repeats: int, cells: dict[str, dict], reference: str
) -> list[dict]:
    ref = cells[reference]["median_us"]
    return [
        {
            "experiment": experiment,
            "gramians": kind,
            "n": n,
            "method": name,
            "repeats": repeats,
            "median_us": round(cell["median_us"], 2),
            "speedup": round(ref / cell["median_us"], 2),
            "reference": reference,
            "median_gap": f"{cell['median_gap']:.1e}",
            "max_gap": f"{cell['max_gap']:.1e}",
        }
        for name, cell in cells.items()
    ]


def format_table(rows: list[dict]) -> str:
    """One experiment's rows as a Markdown table (what ``main`` prints and the docs show)."""
    extra = "overhead_us" in rows[0]
    header = ["experiment", "gramians", "n", "method", "median µs", "× vs ref"]
    header += ["overhead µs"] if extra else []
    header += ["median gap", "max gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cols = [r["experiment"], r["gramians"], r["n"], r["method"], f"{r['median_us']:.1f}"]
        cols += [f"{r['speedup']:.2f}"]
        cols += [f"{r['overhead_us']:.1f}"] if extra else []
        cols += [f"{float(r['median_gap']):.1e}", f"{float(r['max_gap']):.1e}"]
        lines.append("| " + " | ".join(str(c) for c in cols) + " |")
    return "\n".join(lines)


def format_sweep_summary(rows: list[dict]) -> str:
    """The slowest n of each family (ours vs quadprog) and the worst gap over the sweep."""
    lines = [
        "| gramians | n swept | min × vs quadprog (at n) | median × | max gap (ours) |",
        "|---|---|---|---|---|",
    ]
    for kind in dict.fromkeys(r["gramians"] for r in rows):
        ours = [r for r in rows if r["gramians"] == kind and r["method"] == "ours"]
        worst = min(ours, key=lambda r: r["speedup"])
        sizes = [r["n"] for r in ours]
        lines.append(
            f"| {kind} | {min(sizes)}–{max(sizes)} ({len(sizes)}) | {worst['speedup']:.2f} "
            f"(n = {worst['n']}) | {np.median([r['speedup'] for r in ours]):.2f} | "
            f"{max(float(r['max_gap']) for r in ours):.1e} |"
        )
    return "\n".join(lines)


def docs_table(results: Path, name: str) -> str:
    """The docs' table of ``results/NAME.csv`` (``min_norm``, ``min_norm_sweep``, ``cagrad``,
    ...), formatted as ``main`` prints it."""
    path = results / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"no solver results {path}: NAME is one of the CSVs' names")
    rows = read_csv(path)
    if name == "min_norm_sweep":
        return format_sweep_summary(rows)
    if name == "bargaining":
        return format_bargaining(rows)
    if name == "public":
        return format_public(rows)
    return format_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="Gramians per cell (cold)")
    parser.add_argument(
        "--quick", action="store_true", help="20 Gramians per cell, fewer sizes, sparse sweep"
    )
    parser.add_argument("--out", default="outputs/solvers", help="folder for the CSV and PNG")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repeats = 20 if args.quick else args.repeats
    sizes = [2, 10, 50, 100] if args.quick else [2, 3, 5, 10, 20, 30, 50, 75, 100]
    sweep = list(range(2, 101, 7)) + [100] if args.quick else list(range(2, 101))
    sweep_repeats = 10 if args.quick else 30
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    warm_up()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numpy {np.__version__}, torch {torch.__version__}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"
    )
    groups = {
        "min_norm": min_norm_rows(sizes, repeats, rng),
        "min_norm_sweep": sweep_rows(sweep, sweep_repeats, rng),
        "min_norm_warm": warm_rows([n for n in sizes if n >= 5], repeats, rng),
        # SLSQP takes seconds per call from n = 50 on: smaller n and at most 50 Gramians a cell
        "cagrad": cagrad_rows([n for n in sizes if n <= 30], min(repeats, 50), rng),
        "dual_cone": dual_cone_rows([n for n in sizes if n <= 50], repeats, rng),
        "overhead": overhead_rows([n for n in sizes if n in (2, 10, 50, 100)], repeats, rng),
        "pcd": pcd_rows([n for n in sizes if n <= 20], repeats, rng),  # vs TorchJD's PCD
        "bargaining": bargaining_rows(args.quick),  # Nash-MTL, FairGrad, EPO vs cvxpy/TorchJD
        "public": public_rows(PUBLIC_SIZES, min(repeats, 100), rng),  # hot and cold vs TorchJD
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in groups.items():
        write_csv(rows, out / f"{name}.csv")
        if name == "min_norm_sweep":
            print(format_sweep_summary(rows))
        elif name == "bargaining":
            print(format_bargaining(rows))
        elif name == "public":
            print(format_public(rows))
        else:
            print(format_table(rows))
        print()
    plot_timings(
        {k: v for k, v in groups.items() if k not in ("min_norm_sweep", "bargaining", "public")},
        out / "timings.png",
    )
    plot_sweep(groups["min_norm_sweep"], out / "sweep.png")
    print(
        f"CSV, timings.png and sweep.png written to {out}/ ({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
