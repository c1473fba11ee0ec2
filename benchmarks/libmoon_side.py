"""LibMOON's own Pareto set learning, run inside LibMOON's environment; writes JSON.

Run by :mod:`benchmarks.psl_vs_libmoon` as a subprocess with LibMOON's interpreter; it imports
only numpy, torch and LibMOON (0.2.1), never mogradient. For each problem and method it trains
LibMOON's ``SimplePSLModel`` (four hidden layers of 256, sigmoid into the box) with Adam at
LibMOON's learning rate, Dirichlet preference batches and LibMOON's scalarisation function
(``libmoon.util_global.constant.agg_dict``), as LibMOON's ``run_simple_psl.py`` does, for the
given number of evaluations; then decodes the given preferences and writes the decision
vectors (``--out``). ``--dump-vlmop`` writes LibMOON's VLMOP1/VLMOP2 values on fixed points
(the fixture ``tests/data/libmoon_vlmop.json``).

    /work/venvs/libmoon/bin/python -m benchmarks.libmoon_side --job job.json --out out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

#: LibMOON's defaults in ``run_simple_psl.py``: Adam's learning rate.
LIBMOON_LR = 1e-3


def run_psl(problem_name: str, agg: str, n_var: int, preferences: np.ndarray, job: dict) -> dict:
    """One LibMOON PSL run: ``job`` gives ``steps``, ``batch`` and ``seed``."""
    from libmoon.solver.psl.model import SimplePSLModel  # type: ignore[import-not-found]
    from libmoon.util_global.constant import (  # type: ignore[import-not-found]
        agg_dict,
        get_problem,
    )

    torch.manual_seed(job["seed"])
    rng = np.random.default_rng(job["seed"])
    problem = get_problem(problem_name, n_var)
    model = SimplePSLModel(problem, SimpleNamespace(n_var=n_var))
    optimizer = torch.optim.Adam(model.parameters(), lr=LIBMOON_LR)
    start = time.perf_counter()
    for _ in range(job["steps"]):
        prefs = torch.Tensor(rng.dirichlet(np.ones(problem.n_obj), job["batch"]))
        loss = torch.mean(agg_dict[agg](problem.evaluate(model(prefs)), prefs))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = model(torch.Tensor(preferences)).double()
    return {
        "x": x.numpy().tolist(),
        "seconds": time.perf_counter() - start,
        "evals": job["steps"] * job["batch"] + len(preferences),
    }


def dump_vlmop(path: Path) -> None:
    """LibMOON's VLMOP1/VLMOP2 (float64, torch evaluation) on seeded points and three points of
    the Pareto set."""
    from libmoon.problem.synthetic.vlmop import VLMOP1, VLMOP2  # type: ignore[import-not-found]

    rng = np.random.default_rng(25)
    x = rng.uniform(-1, 1, size=(6, 10))
    x[0], x[1], x[2] = 1 / np.sqrt(10), -1 / np.sqrt(10), 0.3 / np.sqrt(10)
    out: dict[str, object] = {
        "source": "libmoon 0.2.1, libmoon.problem.synthetic.vlmop (torch evaluation, float64)",
        "x": x.tolist(),
    }
    for cls in (VLMOP1, VLMOP2):
        p = cls()
        out[cls.__name__] = {
            "F": p.evaluate(torch.as_tensor(x)).numpy().tolist(),
            "lbound": p.lbound.tolist(),
            "ubound": p.ubound.tolist(),
            "n_var": p.n_var,
        }
    path.write_text(json.dumps(out, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, help="JSON: runs, preferences, steps, batch, seed")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dump-vlmop", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.dump_vlmop:
        dump_vlmop(args.dump_vlmop)
        return
    job = json.loads(args.job.read_text())
    import libmoon  # type: ignore[import-not-found]

    results = []
    for problem_name, agg, n_var in job["runs"]:
        prefs = np.asarray(job["preferences"][problem_name], dtype=np.float64)
        row = run_psl(problem_name, agg, n_var, prefs, job)
        results.append({"problem": problem_name, "method": agg, **row})
    version = getattr(libmoon, "__version__", "0.2.1")
    payload = {"libmoon": version, "torch": torch.__version__, "results": results}
    args.out.write_text(json.dumps(payload))


if __name__ == "__main__":
    main()
