"""The public ``weights()`` of every Gramian method TorchJD 0.18 also has, with torch inputs,
hot and cold, against TorchJD's weighting in the same process (not a test).

* hot: each side runs a block of ``CHUNK`` Gramians back to back (its code and data stay in
  the caches, as in a micro-benchmark loop);
* cold (interleaved): ours and TorchJD's on the same Gramian, one call each in turn, so that
  every call of ours follows TorchJD's (in a training step every call is cold: a forward and a
  backward ran in between).

Inputs: ``G = J Jᵀ`` of a ``n × 2000`` standard Gaussian ``J``, as a float64 CPU torch tensor
(both sides get the same tensor and return a torch tensor). Every call is timed on its own
(``perf_counter_ns``), medians are reported; ``× TorchJD`` is TorchJD's median over ours.
Settings: the defaults of both sides, CAGrad ``c = 0.4`` on both, FairGrad ``α = 1`` on both
(ours without its norm cap, which TorchJD lacks), GradVac ``β = 0.5`` on both.

Run: ``python -m benchmarks.solvers_public [--quick] [--out outputs/solvers]`` (also part of
``python -m benchmarks.solvers``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.tables import write_csv

CHUNK = 10
D = 2000
SIZES = (2, 5, 10)
#: The goal of the cold ratio (issue: ≥ 10× TorchJD for every shared Gramian method).
GOAL = 10.0

Weigh = Callable[[torch.Tensor], torch.Tensor]


def methods() -> dict[str, tuple[Weigh, Weigh]]:
    """name -> (ours ``agg.weights``, TorchJD's weighting), for the Gramian methods both have."""
    import torchjd.aggregation as tjd

    from mogradient.aggregation.registry import get_aggregator

    pairs: dict[str, tuple[object, Weigh]] = {
        "upgrad": (get_aggregator("upgrad"), tjd.UPGradWeighting()),
        "dualproj": (get_aggregator("dualproj"), tjd.DualProjWeighting()),
        "mgda": (get_aggregator("mgda"), tjd.MGDAWeighting()),
        "cagrad": (get_aggregator("cagrad", c=0.4), tjd.CAGradWeighting(c=0.4)),
        "imtl-g": (get_aggregator("imtl-g"), tjd.IMTLGWeighting()),
        "aligned-mtl": (get_aggregator("aligned-mtl"), tjd.AlignedMTLWeighting()),
        "pcgrad": (get_aggregator("pcgrad"), tjd.PCGradWeighting()),
        "fairgrad": (
            get_aggregator("fairgrad", alpha=1.0, max_norm=None),
            tjd.FairGradWeighting(alpha=1.0),
        ),
        "gradvac": (get_aggregator("gradvac", beta=0.5), tjd.GradVacWeighting(beta=0.5)),
    }
    return {name: (ours.weights, theirs) for name, (ours, theirs) in pairs.items()}  # type: ignore[attr-defined]


def gramians(n: int, count: int, rng: np.random.Generator) -> list[torch.Tensor]:
    out = []
    for _ in range(count):
        j = rng.normal(size=(n, D))
        out.append(torch.as_tensor(j @ j.T))
    return out


def _time(fn: Weigh, g: torch.Tensor) -> float:
    start = time.perf_counter_ns()
    fn(g)
    return (time.perf_counter_ns() - start) / 1e3


def hot(ours: Weigh, theirs: Weigh, gs: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """µs per call, each side running blocks of ``CHUNK`` Gramians back to back in turn."""
    a: list[float] = []
    b: list[float] = []
    for start in range(0, len(gs), CHUNK):
        a += [_time(ours, g) for g in gs[start : start + CHUNK]]
        b += [_time(theirs, g) for g in gs[start : start + CHUNK]]
    return a, b


def cold(ours: Weigh, theirs: Weigh, gs: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """µs per call, ours and TorchJD's alternating call by call on the same Gramian."""
    a: list[float] = []
    b: list[float] = []
    for g in gs:
        a.append(_time(ours, g))
        b.append(_time(theirs, g))
    return a, b


def public_rows(
    sizes: tuple[int, ...],
    repeats: int,
    rng: np.random.Generator,
    names: list[str] | None = None,
) -> list[dict]:
    """One row per method (all, or ``names``) and n: hot and cold medians of both sides and
    the ratios."""
    torch.set_num_threads(1)
    rows = []
    for name, (ours, theirs) in methods().items():
        if names and name not in names:
            continue
        for n in sizes:
            gs = gramians(n, repeats, rng)
            for g in gs[:3]:  # compile / load caches, first-call imports
                ours(g)
                theirs(g)
            ours_hot, tjd_hot = hot(ours, theirs, gs)
            ours_cold, tjd_cold = cold(ours, theirs, gs)
            med = statistics.median
            rows.append(
                {
                    "method": name,
                    "n": n,
                    "repeats": repeats,
                    "ours_hot_us": round(med(ours_hot), 2),
                    "torchjd_hot_us": round(med(tjd_hot), 2),
                    "hot_ratio": round(med(tjd_hot) / med(ours_hot), 2),
                    "ours_cold_us": round(med(ours_cold), 2),
                    "torchjd_cold_us": round(med(tjd_cold), 2),
                    "cold_ratio": round(med(tjd_cold) / med(ours_cold), 2),
                }
            )
    return rows


def format_public(rows: list[dict]) -> str:
    """The rows as a Markdown table, the cold ratio marked where it misses :data:`GOAL`."""
    lines = [
        "| method | n | ours hot µs | TorchJD hot µs | × hot | ours cold µs | TorchJD cold µs "
        "| × cold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        miss = "" if r["cold_ratio"] >= GOAL else f" (< {GOAL:g})"
        lines.append(
            f"| {r['method']} | {r['n']} | {r['ours_hot_us']:.1f} | {r['torchjd_hot_us']:.1f} "
            f"| {r['hot_ratio']:.1f} | {r['ours_cold_us']:.1f} | {r['torchjd_cold_us']:.1f} "
            f"| {r['cold_ratio']:.1f}{miss} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="Gramians per cell")
    parser.add_argument("--quick", action="store_true", help="40 Gramians per cell")
    parser.add_argument("--methods", nargs="+", help="a subset of the methods")
    parser.add_argument("--out", default="outputs/solvers", help="folder for public.csv")
    args = parser.parse_args()
    repeats = 40 if args.quick else args.repeats
    rows = public_rows(SIZES, repeats, np.random.default_rng(0), args.methods)
    print(format_public(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "public.csv")
    print(f"wrote {out / 'public.csv'}")


if __name__ == "__main__":
    main()
