"""Side-by-side timing and accuracy of the weight solvers (not a test).

Min-norm (MGDA) weights: our exact ``min_norm`` vs quadprog (Goldfarb–Idnani on the simplex QP
with a tiny ridge) vs Frank–Wolfe as in Sener & Koltun's ``MinNormSolver``; cold on independent
Gramians of two kinds, and warm on a slowly drifting sequence. CAGrad inner problem: our exact
``cagrad_weights`` vs scipy SLSQP on the original CAGrad code's formulation.

Every call is timed on its own (``perf_counter_ns``), medians are reported. The gap of a method
on one Gramian is ``(f − f_best) / max(|f_best|, 1e-12·max diag G)``, with ``f_best`` the
smallest objective any method reached on it (see docs/solvers.md).

Run: ``python -m benchmarks.solvers [--repeats 200] [--quick] [--out outputs/solvers]``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import quadprog
from scipy.optimize import minimize

from benchmarks.solver_plots import plot_timings
from mogradient.solvers import cagrad_weights, min_norm

GAP_FLOOR = 1e-12
QUADPROG_RIDGE = 1e-10
FW_MAX_ITER = 250
FW_STOP = 1e-5
CAGRAD_C = 0.4
CHUNK = 10


def random_gramian(n: int, rng: np.random.Generator) -> np.ndarray:
    """(a) ``G = A Aᵀ``, A of shape n×2n Gaussian with random row scales (log-normal)."""
    a = rng.normal(size=(n, 2 * n)) * np.exp(rng.normal(size=(n, 1)))
    return a @ a.T


def conflicting_jacobian(n: int, rng: np.random.Generator, rank: int = 3) -> np.ndarray:
    """(b) ``gᵢ = aᵢ(u + 2·vᵢ)``, vᵢ in a rank-3 subspace orthogonal to the unit vector u.

    Pairs conflict often (vᵢ·vⱼ < −1/4), yet every gradient keeps the shared component u, so the
    min-norm point is not zero (its norm is at least min aᵢ).
    """
    d = 2 * n + rank + 1
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    basis = rng.normal(size=(d, rank))
    basis -= np.outer(u, u @ basis)
    q, _ = np.linalg.qr(basis)
    scales = np.exp(0.5 * rng.normal(size=(n, 1)))
    return scales * (u + 2.0 * rng.normal(size=(n, rank)) @ q.T)


def conflicting_gramian(n: int, rng: np.random.Generator) -> np.ndarray:
    j = conflicting_jacobian(n, rng)
    return j @ j.T


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


def timed(solver: Callable[[np.ndarray], np.ndarray], g: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter_ns()
    out = solver(g)
    return out, (time.perf_counter_ns() - start) / 1e3


def run_cells(
    gramians: list[np.ndarray],
    solvers: dict[str, Callable],
    objective: Callable[[np.ndarray, np.ndarray], float],
) -> dict[str, dict]:
    """Time every solver on every Gramian and score its gap to the best objective found.

    Solvers take turns on blocks of ``CHUNK`` Gramians: each runs a block back to back (as in a
    training loop, its code stays hot) and slow drifts in machine load hit all of them alike.
    """
    times = {name: [] for name in solvers}
    outputs = {name: [] for name in solvers}
    for start in range(0, len(gramians), CHUNK):
        for name, solver in solvers.items():
            for g in gramians[start : start + CHUNK]:
                w, us = timed(solver, g)
                times[name].append(us)
                outputs[name].append(w)
    values = {
        name: [objective(g, w) for g, w in zip(gramians, outputs[name], strict=True)]
        for name in solvers
    }
    best = np.min([values[name] for name in solvers], axis=0)
    floor = GAP_FLOOR * np.array([np.max(np.diag(g)) for g in gramians])
    denom = np.maximum(np.abs(best), floor)
    return {
        name: {
            "median_us": float(np.median(times[name])),
            "median_gap": float(np.median((np.array(values[name]) - best) / denom)),
            "max_gap": float(np.max((np.array(values[name]) - best) / denom)),
        }
        for name in solvers
    }


def warm_up() -> None:
    """Compile (or load from cache) the numba kernels before any timing."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 40):
        g = random_gramian(n, rng)
        min_norm(g)
        min_norm(g, warm_start=np.full(n, 1.0 / n))
        cagrad_weights(g, CAGRAD_C)


def min_norm_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    solvers = {"ours": min_norm, "quadprog": quadprog_weights, "frank_wolfe": frank_wolfe_weights}
    rows = []
    for kind, make in (("random", random_gramian), ("conflicting", conflicting_gramian)):
        for n in sizes:
            cells = run_cells([make(n, rng) for _ in range(repeats)], solvers, min_norm_objective)
            rows += _rows("min_norm cold", kind, n, repeats, cells, "quadprog")
    return rows


def random_jacobian(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, 2 * n)) * np.exp(rng.normal(size=(n, 1)))


def warm_rows(sizes: list[int], steps: int, rng: np.random.Generator) -> list[dict]:
    """A training-loop sequence: J_t = J_{t−1} + 1% noise; warm start from the previous weights."""
    rows = []
    for kind, make in (("random", random_jacobian), ("conflicting", conflicting_jacobian)):
        for n in sizes:
            j = make(n, rng)
            noise = 0.01 * np.linalg.norm(j, axis=1, keepdims=True) / np.sqrt(j.shape[1])
            gramians = []
            for _ in range(steps + 1):
                j = j + noise * rng.normal(size=j.shape)
                gramians.append(j @ j.T)
            previous = {"w": min_norm(gramians[0])}

            def warm(g: np.ndarray, previous: dict = previous) -> np.ndarray:
                previous["w"] = min_norm(g, warm_start=previous["w"])
                return previous["w"]

            solvers = {"ours warm": warm, "ours cold": min_norm, "quadprog": quadprog_weights}
            cells = run_cells(gramians[1:], solvers, min_norm_objective)
            rows += _rows("min_norm drifting", kind, n, steps, cells, "quadprog")
    return rows


def cagrad_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    solvers = {
        "ours": lambda g: cagrad_weights(g, CAGRAD_C),
        "slsqp": lambda g: cagrad_slsqp(g, CAGRAD_C),
    }
    rows = []
    for kind, make in (("random", random_gramian), ("conflicting", conflicting_gramian)):
        for n in sizes:
            cells = run_cells([make(n, rng) for _ in range(repeats)], solvers, cagrad_objective)
            rows += _rows(f"cagrad c={CAGRAD_C}", kind, n, repeats, cells, "slsqp")
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
            f"speedup_vs_{reference}": round(ref / cell["median_us"], 2),
            "median_gap": f"{cell['median_gap']:.1e}",
            "max_gap": f"{cell['max_gap']:.1e}",
        }
        for name, cell in cells.items()
    ]


def print_table(rows: list[dict]) -> None:
    header = [
        "experiment",
        "gramians",
        "n",
        "method",
        "median µs",
        "× vs ref",
        "median gap",
        "max gap",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        speed = next(v for k, v in r.items() if k.startswith("speedup_vs_"))
        cols = [
            r["experiment"],
            r["gramians"],
            r["n"],
            r["method"],
            f"{r['median_us']:.1f}",
            f"{speed:.2f}",
            r["median_gap"],
            r["max_gap"],
        ]
        print("| " + " | ".join(str(c) for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="Gramians per cell (cold)")
    parser.add_argument("--quick", action="store_true", help="20 Gramians per cell, fewer sizes")
    parser.add_argument("--out", default="outputs/solvers", help="folder for the CSV and PNG")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repeats = 20 if args.quick else args.repeats
    sizes = [2, 10, 50] if args.quick else [2, 5, 10, 50, 100]
    rng = np.random.default_rng(args.seed)
    warm_up()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numpy {np.__version__}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}"
    )
    groups = {
        "min_norm": min_norm_rows(sizes, repeats, rng),
        "min_norm_warm": warm_rows([n for n in sizes if n >= 5], repeats, rng),
        "cagrad": cagrad_rows([n for n in sizes if n <= 50], repeats, rng),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in groups.items():
        with open(out / f"{name}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print_table(rows)
        print()
    plot_timings(groups, out / "timings.png")
    print(f"CSV and timings.png written to {out}/")


if __name__ == "__main__":
    main()
