"""Timing and accuracy of the bargaining-type weight solvers (not a test).

* Nash-MTL (``αᵢ(Gα)ᵢ = 1``): our exact Newton solve (:func:`nash_mtl_weights`) vs the original
  cvxpy formulation (Navon et al.'s sequence of up to 20 convex problems solved by ECOS, from
  α = 1, with the original stop tests; re-written here, not imported) and vs TorchJD 0.18's
  ``NashMTL`` weighting (the same formulation, warm-started from its previous call).
* FairGrad (``(Gw)ᵢ = wᵢ^(−1/α)``): our solve (:func:`fairgrad_weights`) vs TorchJD 0.18's
  ``FairGradWeighting`` (``scipy.optimize.least_squares`` from the uniform vector).
* EPO: our dense simplex method (:func:`epo_weights`) vs the original LP in cvxpy (HiGHS; the
  reference code uses GLPK, which is not installed here), on the balance and descent steps. The
  cvxpy problem is built on each call (the reference builds it once with cvxpy Parameters), so
  its time is an upper bound; EPO's optimum need not be unique, so the values are compared.

Inputs: ``G = J Jᵀ`` with ``J`` an ``m × 2000`` standard Gaussian matrix (EPO: random positive
losses and preference). Every call is timed on its own (``perf_counter_ns``); the table gives
medians. ``max |Δw|`` is the largest weight difference relative to the largest weight, and
``residual`` the scale-free residual of each method's answer (Nash/FairGrad:
``max |(Gw)ᵢ − wᵢ^(−1/α)| / (wᵢ^(−1/α) + Σⱼ|Gᵢⱼ|wⱼ)``; EPO: the relative gap of the LP's
optimal value).

Run: ``python -m benchmarks.solvers_bargaining [--quick] [--out outputs/solvers_bargaining.csv]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from benchmarks.tables import write_csv
from mogradient.solvers.epo import BALANCE, epo_adjustments, epo_weights
from mogradient.solvers.fairgrad import fairgrad_weights
from mogradient.solvers.nash_mtl import nash_mtl_weights

D = 2000
SIZES = (2, 3, 5, 10, 20, 50)
QUICK_SIZES = (2, 5, 10)
FAIRGRAD_ALPHAS = (0.5, 2.0)

T = TypeVar("T")


def gaussian_gramian(m: int, rng: np.random.Generator) -> np.ndarray:
    j = rng.normal(size=(m, D))
    return j @ j.T


def residual(g: np.ndarray, w: np.ndarray, alpha: float = 1.0) -> float:
    target = np.abs(w) ** (-1.0 / alpha)
    return float(np.max(np.abs(g @ w - target) / (target + np.abs(g) @ np.abs(w))))


def timed(fn: Callable[..., T], repeats: int) -> tuple[T, float]:
    """The last result and the median time in µs over ``repeats`` calls of ``fn()``.

    ``fn`` is typed ``Callable[..., T]``, not ``Callable[[], T]``: the callers' lambdas bind
    their inputs as default arguments, which mypy cannot match to a callable without
    parameters (python/mypy#12557).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        out = fn()
        times.append((time.perf_counter_ns() - start) / 1e3)
    return out, statistics.median(times)


class CvxpyNash:
    """The original Nash-MTL formulation, built once per m as in the reference code."""

    def __init__(self, m: int, niter: int = 20) -> None:
        import cvxpy as cp

        self.cp = cp
        self.niter = niter
        self.solver = cp.ECOS if "ECOS" in cp.installed_solvers() else cp.CLARABEL
        self.alpha = cp.Variable(m, nonneg=True)
        self.previous = cp.Parameter(m, value=np.ones(m))
        self.gram = cp.Parameter((m, m), value=np.eye(m))
        self.nu = cp.Parameter(1, value=np.ones(1))
        g_prev = self.gram @ self.previous
        tangent = 1 / self.previous + (1 / g_prev) @ self.gram
        g_alpha = self.gram @ self.alpha
        constraints = [-cp.log(self.alpha[i] * self.nu) - cp.log(g_alpha[i]) <= 0 for i in range(m)]
        objective = cp.sum(g_alpha) + tangent @ (self.alpha - self.previous) / self.nu
        self.problem = cp.Problem(cp.Minimize(objective), constraints)

    def __call__(self, g: np.ndarray) -> np.ndarray:
        nu = float(np.linalg.norm(g))
        gn = g / nu
        self.gram.value = gn
        self.nu.value = np.array([nu])
        current = np.ones(g.shape[0])
        for _ in range(self.niter):
            self.alpha.value = current
            self.previous.value = current
            try:
                self.problem.solve(solver=self.solver, warm_start=True)
            except self.cp.SolverError:
                self.alpha.value = current
            new = self.alpha.value
            if (
                new is None
                or np.linalg.norm(gn @ current - 1 / (current + 1e-10)) < 1e-3
                or np.linalg.norm(new - current) < 1e-6
            ):
                break
            current = new
        return current


def cvxpy_epo_value(g: np.ndarray, losses: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """The original EPO LP in cvxpy (HiGHS): (optimal value, seconds)."""
    import cvxpy as cp

    m = g.shape[0]
    a, mu = epo_adjustments(losses, r)
    ca = g @ a
    rl = r * losses
    alpha = cp.Variable(m)
    simplex = [alpha >= 0, cp.sum(alpha) == 1]
    start = time.perf_counter_ns()
    if mu > 1e-4:
        rhs = ca.copy() if np.any(ca > 0) else np.zeros(m)
        if np.any(ca > 0):
            rhs[ca > 0] = -np.inf
            rhs[rl == rl.max()] = 0.0
        rows = np.isfinite(rhs)
        problem = cp.Problem(cp.Maximize(alpha @ ca), [*simplex, g[rows] @ alpha >= rhs[rows]])
    else:
        constraints = [*simplex, g @ alpha >= 0, alpha @ ca >= min(ca.max(), 0.0)]
        problem = cp.Problem(cp.Maximize(cp.sum(g @ alpha)), constraints)
    problem.solve(solver=cp.HIGHS)
    elapsed = (time.perf_counter_ns() - start) / 1e3
    value = float(problem.value) if problem.status == "optimal" else float("nan")
    return value, elapsed


def _row(method: str, m: int, reference: str, ours: list, theirs: list) -> dict:
    """ours/theirs: (time µs, max rel |Δw|, our residual, their residual) per input."""
    ours_us = statistics.median(x[0] for x in ours)
    ref_us = statistics.median(x[0] for x in theirs)
    return {
        "method": method,
        "m": m,
        "reference": reference,
        "ours_us": round(ours_us, 2),
        "reference_us": round(ref_us, 1),
        "ratio": round(ref_us / ours_us, 1),
        "max_rel_dw": float(max(x[1] for x in theirs)),
        "ours_residual": float(max(x[2] for x in ours)),
        "reference_residual": float(max(x[3] for x in theirs)),
    }


def bargaining_rows(quick: bool) -> list[dict]:
    """One row per (method, m, reference): median µs, ratio, max |Δw| and residuals."""
    sizes = QUICK_SIZES if quick else SIZES
    n_inputs = 2 if quick else 5
    our_repeats = 20 if quick else 200
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    nash_mtl_weights(np.eye(2))  # compile outside the timings
    fairgrad_weights(np.eye(2), 2.0)
    epo_weights(np.eye(2), np.ones(2), np.full(2, 0.5))
    try:
        import ecos  # noqa: F401
        from torchjd.aggregation import FairGradWeighting
        from torchjd.aggregation import NashMTL as TorchJDNashMTL

        have_torchjd_nash = True
    except ImportError:
        from torchjd.aggregation import FairGradWeighting

        have_torchjd_nash = False
    import torch

    for m in sizes:
        grams = [gaussian_gramian(m, rng) for _ in range(n_inputs)]
        # -- Nash-MTL ------------------------------------------------------------------
        ours, vs_cvxpy, vs_torchjd = [], [], []
        original = CvxpyNash(m)
        torchjd = TorchJDNashMTL(n_tasks=m, max_norm=0.0).weighting if have_torchjd_nash else None
        for g in grams:
            w, us = timed(lambda g=g: nash_mtl_weights(g), our_repeats)
            ours.append((us, 0.0, residual(g, w), 0.0))
            scale = float(np.max(w))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref, ref_us = timed(lambda g=g, f=original: f(g), 1)
                vs_cvxpy.append((ref_us, np.max(np.abs(ref - w)) / scale, 0.0, residual(g, ref)))
                if torchjd is not None:
                    jac = torch.tensor(np.linalg.cholesky(g))  # a J with J Jᵀ = G
                    tj, tj_us = timed(lambda jac=jac, f=torchjd: f(jac).numpy(), 1)
                    tj = tj.astype(np.float64)
                    vs_torchjd.append((tj_us, np.max(np.abs(tj - w)) / scale, 0.0, residual(g, tj)))
        rows.append(_row("nash-mtl", m, "cvxpy original (ECOS)", ours, vs_cvxpy))
        if vs_torchjd:
            rows.append(_row("nash-mtl", m, "TorchJD 0.18 NashMTL", ours, vs_torchjd))
        # -- FairGrad ------------------------------------------------------------------
        for alpha in FAIRGRAD_ALPHAS:
            ours, theirs = [], []
            weighting = FairGradWeighting(alpha=alpha)
            for g in grams:
                w, us = timed(lambda g=g, a=alpha: fairgrad_weights(g, a), our_repeats)
                ours.append((us, 0.0, residual(g, w, alpha), 0.0))
                gt = torch.tensor(g)
                tj, tj_us = timed(lambda gt=gt, f=weighting: f(gt).numpy(), 3)
                dw = np.max(np.abs(tj - w)) / np.max(w)
                theirs.append((tj_us, dw, 0.0, residual(g, tj, alpha)))
            rows.append(
                _row(f"fairgrad(alpha={alpha})", m, "TorchJD 0.18 FairGradWeighting", ours, theirs)
            )
        # -- EPO -----------------------------------------------------------------------
        for label, near_ray in (("balance", False), ("descent", True)):
            ours, theirs = [], []
            for g in grams:
                r = rng.dirichlet(np.ones(m))
                losses = (1 / r) if near_ray else rng.uniform(0.1, 2.0, m)
                (w, mode, _), us = timed(
                    lambda g=g, lo=losses, r=r: epo_weights(g, lo, r), our_repeats
                )
                a, _ = epo_adjustments(losses, r)
                ca = g @ a
                value, ref_us = cvxpy_epo_value(g, losses, r)
                mine = float(w @ ca) if mode == BALANCE else float(np.sum(g @ w))
                gap = abs(mine - value) / max(abs(value), 1e-12 * np.abs(g).max())
                ours.append((us, 0.0, gap if np.isfinite(value) else 0.0, 0.0))
                theirs.append((ref_us, float("nan"), 0.0, 0.0))
            row = _row(f"epo ({label})", m, "cvxpy original LP (HiGHS)", ours, theirs)
            row["max_rel_dw"] = float("nan")  # LP optima need not be unique: compare values
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--out", type=Path, default=Path("outputs/solvers_bargaining.csv"))
    args = parser.parse_args()
    rows = bargaining_rows(args.quick)
    print(format_bargaining(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out)
    print(f"wrote {args.out}")


def format_bargaining(rows: list[dict]) -> str:
    """The rows of :func:`bargaining_rows` as a Markdown table."""
    lines = [
        "| method | m | reference | ours µs | ref µs | ratio | max\\|Δw\\| "
        "| our resid | ref resid |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['m']} | {r['reference']} | {r['ours_us']:.1f} | "
            f"{r['reference_us']:,.0f} | {r['ratio']:,.0f}× | {r['max_rel_dw']:.1e} | "
            f"{r['ours_residual']:.1e} | {r['reference_residual']:.1e} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
