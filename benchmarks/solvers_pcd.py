"""Timing and accuracy of PCD's weights: ours vs TorchJD 0.18's ``PCDWeighting`` (not a test).

Both weightings are stateful (a moving average of the squared norms), so each gets its own
instance and the same sequence of Gramians, in the same process; the two take turns on blocks
of ``CHUNK`` Gramians and every call is timed on its own (``perf_counter_ns``), medians
reported. Families: ``gaussian`` (``J = randn(n, 2000)``, independent secondaries) and
``low-rank`` (rank 3: more secondaries than dimensions from n = 5, the degenerate dual that
the lifted form decides). The gap is ``‖(w − w_ref)ᵀJ‖ / ‖w_refᵀJ‖``, the directions'
difference (the multipliers need not be unique on low-rank inputs). TorchJD's time includes
its float64 tensor in and out.

Run: ``python -m benchmarks.solvers_pcd [--quick] [--out outputs/solvers/pcd.csv]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.tables import write_csv
from mogradient.aggregators.pcd import PCD

CHUNK = 10
D = 2000
TAU = 0.2
BETA = 0.9
#: TorchJD's default (ours defaults to 0): both solve the same problem
EPS = 1e-8


def jacobians(kind: str, n: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` Jacobians ``[n, D]`` of the family, with log-normal row scales."""
    out = []
    for _ in range(count):
        scales = np.exp(rng.normal(size=(n, 1)))
        if kind == "gaussian":
            j = rng.normal(size=(n, D))
        else:
            j = rng.normal(size=(n, 3)) @ rng.normal(size=(3, D))
        out.append(j * scales)
    return out


def _time(f: object, x: object) -> tuple[np.ndarray, float]:
    start = time.perf_counter_ns()
    out = f(x)  # type: ignore[operator]
    return out, (time.perf_counter_ns() - start) / 1e3


def pcd_rows(sizes: list[int], repeats: int, rng: np.random.Generator) -> list[dict]:
    """One row per (family, n, method) in the format of ``benchmarks.solvers``' tables."""
    from torchjd.aggregation import PCDWeighting

    warm_up()
    rows = []
    for kind in ("gaussian", "low-rank"):
        for n in sizes:
            js = jacobians(kind, n, repeats, rng)
            gs = [j @ j.T for j in js]
            ours = PCD(tau=TAU, beta=BETA, eps=EPS)
            theirs = PCDWeighting(tau=TAU, beta=BETA, eps=EPS)
            solvers = {
                "ours": lambda g, f=ours: f.weights(g),
                "torchjd": lambda g, f=theirs: f(torch.as_tensor(g)).numpy(),
            }
            times: dict[str, list[float]] = {k: [] for k in solvers}
            outs: dict[str, list[np.ndarray]] = {k: [] for k in solvers}
            for start in range(0, repeats, CHUNK):
                for name, f in solvers.items():
                    for g in gs[start : start + CHUNK]:
                        w, us = _time(f, g)
                        times[name].append(us)
                        outs[name].append(w)
            gaps = {
                name: [
                    float(np.linalg.norm((w - r) @ j)) / max(float(np.linalg.norm(r @ j)), 1e-300)
                    for w, r, j in zip(outs[name], outs["torchjd"], js, strict=True)
                ]
                for name in solvers
            }
            ref = float(np.median(times["torchjd"]))
            for name in solvers:
                med = float(np.median(times[name]))
                rows.append(
                    {
                        "experiment": "pcd weights",
                        "gramians": kind,
                        "n": n,
                        "method": name,
                        "repeats": repeats,
                        "median_us": round(med, 2),
                        "speedup": round(ref / med, 2),
                        "reference": "torchjd",
                        "median_gap": f"{np.median(gaps[name]):.1e}",
                        "max_gap": f"{np.max(gaps[name]):.1e}",
                    }
                )
    return rows


def warm_up() -> None:
    """Compile (or load from cache) the kernels before any timing."""
    rng = np.random.default_rng(1)
    for kind in ("gaussian", "low-rank"):
        for j in jacobians(kind, 6, 3, rng):
            PCD(tau=TAU).weights(j @ j.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 Gramians per cell")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default="outputs/solvers/pcd.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = pcd_rows(
        [2, 3, 5, 10, 20], 20 if args.quick else args.repeats, np.random.default_rng(args.seed)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out)
    for r in rows:
        if r["method"] == "ours":
            print(
                f"{r['gramians']:>9} n={r['n']:<3} ours {r['median_us']:8.1f} µs  "
                f"{r['speedup']:7.2f}× TorchJD  max gap {r['max_gap']}"
            )
    print(f"CSV written to {out} (the docs' table: python -m benchmarks.docs_tables)")


if __name__ == "__main__":
    main()
