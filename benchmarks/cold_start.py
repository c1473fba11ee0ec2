"""The first call of every Gramian method in a fresh process, with an empty and a warm numba cache.

    python -m benchmarks.cold_start [--out DIR] [--repeats N] [--methods a,b] [--report CSV]

The Gramian methods come from the registry (every class of kind ``GramianWeighting``). Each
cell is one fresh ``python`` subprocess whose ``NUMBA_CACHE_DIR`` is a temporary directory:

* ``cold``: an empty directory, so every numba kernel the call needs is compiled;
* ``warm``: a directory filled beforehand by one process that called every method.

A subprocess imports ``mogradient`` (``import_s``), then times the first
``get_aggregator(name).weights(G)`` on a 4×4 float64 torch Gramian (``torch_s``, the first call,
with the compilation; ``torch_cpu_s``: the process's CPU time during it, which other jobs on a
shared machine disturb less than the wall time) and then on the same Gramian as a numpy array
(``numpy_s``). ``scope``
is ``one`` for a process that calls one method and ``all`` for one process that calls every
method in turn (then ``method`` is ``all`` and the times are sums). Each cell runs ``--repeats``
times and the minimum is kept (the machine is shared; the minimum is the least disturbed run).
The load average (1 min) before each cell is written with its row.

Writes ``cold_start.csv`` and ``cold_start.md`` to ``--out`` (default ``outputs/cold_start``);
``--report CSV`` renders the table of a CSV without measuring. The table in
``docs/cold-start.md`` is :func:`docs_table` of ``docs/results/cold_start``, rewritten with
the others by ``python -m benchmarks.docs_tables``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.tables import write_csv

FIELDS = ("cache", "scope", "method", "import_s", "torch_s", "torch_cpu_s", "numpy_s", "load_1min")

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import torch
import mogradient
import_s = time.perf_counter() - t0
gramian = np.array([[4.0, 1.0, -1.0, 0.5], [1.0, 3.0, 0.2, 0.1],
                    [-1.0, 0.2, 2.0, 0.3], [0.5, 0.1, 0.3, 1.0]])
rows = []
for name in sys.argv[1].split(","):
    agg = mogradient.get_aggregator(name)
    extra = {"losses": np.ones(4)} if agg.uses_loss_values else {}
    t, c = time.perf_counter(), time.process_time()
    agg.weights(torch.from_numpy(gramian.copy()), **extra)
    torch_s, torch_cpu_s = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    agg.weights(gramian.copy(), **extra)
    numpy_s = time.perf_counter() - t
    rows.append({"method": name, "torch_s": torch_s, "torch_cpu_s": torch_cpu_s,
                 "numpy_s": numpy_s})
print(json.dumps({"import_s": import_s, "rows": rows}))
"""


def gramian_methods() -> list[str]:
    """Canonical names of every registered ``GramianWeighting`` method, sorted."""
    import mogradient
    from mogradient.aggregators.base import GramianWeighting

    return [n for n, cls in mogradient.registered().items() if issubclass(cls, GramianWeighting)]


def run_child(methods: list[str], cache_dir: str) -> dict[str, float]:
    """One fresh process calling ``methods`` in turn with ``NUMBA_CACHE_DIR=cache_dir``:
    ``{import_s, torch_s, torch_cpu_s, numpy_s}`` (sums over the methods)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(methods)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the subprocess for {methods} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "import_s": result["import_s"],
        "torch_s": sum(r["torch_s"] for r in result["rows"]),
        "torch_cpu_s": sum(r["torch_cpu_s"] for r in result["rows"]),
        "numpy_s": sum(r["numpy_s"] for r in result["rows"]),
    }


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the smallest first-call time (its import and numpy times with it)."""
    return min(runs, key=lambda r: r["torch_s"])


def measure(methods: list[str], repeats: int) -> list[dict[str, object]]:
    """Every cell (cold/warm × one/all), ``repeats`` times each, minimum kept."""
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as warm_dir:
        for cache in ("cold", "warm"):
            cells = [(m, [m]) for m in methods] + [("all", methods)]
            for label, called in cells:
                load = round(os.getloadavg()[0], 2)
                runs = []
                for _ in range(repeats):
                    if cache == "cold":
                        with tempfile.TemporaryDirectory() as empty:
                            runs.append(run_child(called, empty))
                    else:
                        runs.append(run_child(called, warm_dir))
                best = _best(runs)
                rows.append(
                    {
                        "cache": cache,
                        "scope": "all" if label == "all" else "one",
                        "method": label,
                        **{k: f"{v:.2f}" for k, v in best.items()},
                        "load_1min": load,
                    }
                )
                print(rows[-1], flush=True)
            if cache == "cold":  # fill the warm cache once, untimed
                run_child(methods, warm_dir)
    return rows


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``cold_start.csv``."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown(rows: list[dict[str, str]]) -> str:
    """The results table: one line per method (first call with an empty and a warm cache, in a
    process of its own), then one line for every method called in one process."""
    cells = {(r["cache"], r["method"]): r for r in rows}
    methods = [r["method"] for r in rows if r["cache"] == "cold" and r["scope"] == "one"]
    loads = [float(r["load_1min"]) for r in rows]
    lines = [
        "| method | first call, empty cache: wall (s) | CPU (s) | first call, warm cache (s) "
        "| import, empty cache (s) | import, warm cache (s) |",
        "|---|---|---|---|---|---|",
    ]
    for method in [*methods, "all"]:
        cold, warm = cells[("cold", method)], cells[("warm", method)]
        name = "**all, in one process**" if method == "all" else f"`{method}`"
        lines.append(
            f"| {name} | {cold['torch_s']} | {cold['torch_cpu_s']} | {warm['torch_s']} | "
            f"{cold['import_s']} | {warm['import_s']} |"
        )
    lines.append("")
    lines.append(f"Load average (1 min) before each cell: {min(loads):g} to {max(loads):g}.")
    return "\n".join(lines) + "\n"


def docs_table(folder: Path, name: str) -> str:
    """The docs table ``NAME`` (``cold_start``) of a results folder, for
    :mod:`benchmarks.docs_tables`."""
    return markdown(read_rows(folder / f"{name}.csv")).rstrip("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/cold_start")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    parser.add_argument(
        "--report", default="", help="only render the table of this CSV (no measurement)"
    )
    args = parser.parse_args(argv)
    if args.report:
        table = markdown(read_rows(args.report))
    else:
        methods = args.methods.split(",") if args.methods else gramian_methods()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = [{k: str(v) for k, v in r.items()} for r in measure(methods, args.repeats)]
        write_csv(rows, out / "cold_start.csv", FIELDS)
        table = markdown(rows)
        (out / "cold_start.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
