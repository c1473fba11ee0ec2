"""The parameter-level paths of ``mogradient.backward`` side by side: the rule's evidence.

    python -m benchmarks.backward_step --paths [--quick] [--out DIR]

For each model shape and k, the two ways of taking the parameters' Gramian for MGDA:

* ``loop``: the k×d Jacobian by one backward per objective, ``JJᵀ``, ``.grad = wᵀJ``
  (``mogradient.backward(losses, params)``);
* ``layers``: the forward under a :class:`~mogradient.gramian.recorder.GramianRecorder`, the
  Gramian layer by layer in one vectorised backward, then one backward of Σ wᵢ Lᵢ.

Time: one process per (model, k), one torch thread; each round runs a plain step (forward +
backward of Σ Lᵢ) and each path once, in an order rotated every round (paired, interleaved
rounds: a slow spell of the shared machine hits every path of a round alike); ``ratio`` is the
median over the rounds of (path's step / loop's step in the same round), ``vs_plain`` the same
against the plain step. Memory: one process per (model, k, path) as in
:mod:`benchmarks.backward_step` (``ru_maxrss`` after the path's steps minus after the plain
steps, a step of the path on a tiny model first so that one-time costs are in the baseline).
``jacobian_mb``: the k×d Jacobian's bytes (float32), the rule's input (``mogradient.gramian.path``).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.tables import read_csv, write_csv

#: Model shapes: the three of :mod:`benchmarks.backward_step` and a GPT-2 with 40× the
#: parameters (4 layers of 256, vocabulary 8,000), where the Jacobian weighs more.
SHAPES: dict[str, tuple[str, dict[str, int]]] = {
    "mlp": ("mlp", {"width": 512, "batch": 256}),
    "transformer": (
        "transformer",
        {"width": 128, "heads": 4, "ff": 256, "seq": 32, "batch": 32},
    ),
    "gpt2": (
        "gpt2",
        {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab": 512, "seq": 64, "batch": 8},
    ),
    "gpt2_5m": (
        "gpt2",
        {"n_layer": 4, "n_embd": 256, "n_head": 4, "vocab": 8000, "seq": 64, "batch": 4},
    ),
}
PATHS = ("loop", "layers")
KS = (2, 4, 8)
FIELDS = (
    "model",
    "k",
    "n_params",
    "jacobian_mb",
    "path",
    "step_ms",
    "ratio",
    "vs_plain",
    "extra_mb",
    "rounds",
)


def build_model(shape_name: str, k: int) -> tuple[Any, Any, list[Any]]:
    import torch

    from benchmarks.backward_models import BUILDERS

    kind, shape = SHAPES[shape_name]
    torch.manual_seed(0)
    model, forward, _ = BUILDERS[kind](k, shape, torch.device("cpu"))
    return model, forward, [p for p in model.parameters() if p.requires_grad]


def _step(path: str, model: Any, forward: Any, params: list[Any]) -> None:
    """One MGDA step of ``path`` (``plain``: one backward of Σ Lᵢ)."""
    import torch

    from benchmarks.backward_step import _method_step

    if path == "plain":
        losses, _ = forward(model)
        torch.stack(losses).sum().backward()
        return
    _method_step({"loop": "mg_loop", "layers": "mg_layers"}[path], model, forward, params, None)


def time_cell(shape_name: str, k: int, rounds: int, warmup: int) -> list[dict[str, Any]]:
    """Paired interleaved rounds of the plain step and every path; one row per path."""
    import torch

    torch.set_num_threads(1)
    model, forward, params = build_model(shape_name, k)
    order = ("plain", *PATHS)
    times: dict[str, list[float]] = {p: [] for p in order}
    for r in range(warmup + rounds):
        shift = r % len(order)
        for path in order[shift:] + order[:shift]:
            for p in params:
                p.grad = None
            t = time.perf_counter()
            _step(path, model, forward, params)
            dt = time.perf_counter() - t
            if r >= warmup:
                times[path].append(dt)
    d = sum(p.numel() for p in params)
    rows = []
    for path in PATHS:
        pairs = zip(times[path], times["loop"], times["plain"])
        ratios = [(a / b, a / c) for a, b, c in pairs]
        rows.append(
            {
                "model": shape_name,
                "k": k,
                "n_params": d,
                "jacobian_mb": k * d * 4 / 2**20,
                "path": path,
                "step_ms": statistics.median(times[path]) * 1e3,
                "ratio": statistics.median(r[0] for r in ratios),
                "vs_plain": statistics.median(r[1] for r in ratios),
                "rounds": rounds,
            }
        )
    return rows


def memory_cell(shape_name: str, k: int, path: str, steps: int) -> float:
    """Peak extra RSS (MB) of ``steps`` steps of ``path`` over as many plain steps."""
    import torch

    from benchmarks.backward_step import _preload

    torch.set_num_threads(1)
    _preload({"loop": "mg_loop", "layers": "mg_layers"}[path], k)
    model, forward, params = build_model(shape_name, k)
    for _ in range(steps):
        for p in params:
            p.grad = None
        _step("plain", model, forward, params)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(steps):
        for p in params:
            p.grad = None
        _step(path, model, forward, params)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024


def _run(args: list[str]) -> Any:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "benchmarks.backward_paths", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(out: Path, quick: bool, models: list[str]) -> None:
    """Every cell in its own processes; the CSV is rewritten after each (model, k)."""
    rounds, warmup, steps = (3, 1, 2) if quick else (5, 1, 3)
    rows: list[dict[str, Any]] = []
    name = "backward_paths_quick.csv" if quick else "backward_paths.csv"
    out.mkdir(parents=True, exist_ok=True)
    for shape_name in models:
        for k in KS:
            cell = _run(["--time", f"{shape_name},{k},{rounds},{warmup}"])
            for row in cell:
                row["extra_mb"] = _run(["--memory", f"{shape_name},{k},{row['path']},{steps}"])
                rows.append(row)
                print(_fmt(row), flush=True)
            write_csv(rows, out / name, FIELDS)
    print()
    print(table(rows))


def _fmt(row: dict[str, Any]) -> str:
    return (
        f"{row['model']:12s} k={row['k']} {row['path']:7s} {row['step_ms']:9.1f} ms "
        f"ratio {row['ratio']:.2f} vs plain {row['vs_plain']:.2f} extra {row['extra_mb']:.0f} MB"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """One line per (model, k): the Jacobian's size, then each path's time ratio to the loop
    (paired median), to a plain step, and its peak extra memory; the faster path in bold."""
    head = (
        "| model | d | k | k×d Jacobian | layers / loop time "
        "| loop: × plain, extra | layers: × plain, extra |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    keyed = {(r["model"], r["k"], r["path"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        for k in KS:
            loop, layers = keyed.get((model, k, "loop")), keyed.get((model, k, "layers"))
            if loop is None or layers is None:
                continue
            ratio = f"{layers['ratio']:.2f}×"
            ratio = f"**{ratio}**" if layers["ratio"] < 1 else ratio
            lines.append(
                f"| {model} | {loop['n_params']:,} | {k} | {loop['jacobian_mb']:.1f} MB | {ratio} "
                f"| {loop['vs_plain']:.2f}×, +{loop['extra_mb']:.0f} MB "
                f"| {layers['vs_plain']:.2f}×, +{layers['extra_mb']:.0f} MB |"
            )
    return "\n".join(lines)


#: Cells whose Jacobian is smaller say little about its share of the memory: the RSS delta of a
#: few MB is then mostly the allocator's rounding.
MIN_JACOBIAN_MB = 10.0


def loop_memory_factor(rows: list[dict[str, Any]]) -> float:
    """The loop's largest peak extra memory per byte of its k×d Jacobian over the measured cells
    whose Jacobian is at least :data:`MIN_JACOBIAN_MB`: what
    :data:`mogradient.gramian.path.LOOP_MEMORY_FACTOR` must cover."""
    ratios = [
        r["extra_mb"] / r["jacobian_mb"]
        for r in rows
        if r["path"] == "loop" and r["jacobian_mb"] >= MIN_JACOBIAN_MB
    ]
    if not ratios:
        raise ValueError(f"no loop cell with a Jacobian of at least {MIN_JACOBIAN_MB} MB")
    return max(ratios)


def docs_table(results: Path, name: str) -> str:
    """The docs' table ``full`` (``backward_paths.csv``) or ``quick``."""
    if name not in ("full", "quick"):
        raise ValueError(f"unknown backward_paths table {name!r}: use full or quick")
    csv = "backward_paths.csv" if name == "full" else "backward_paths_quick.csv"
    return table(read_csv(results / csv))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs/results/backward_paths")
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--time", help=argparse.SUPPRESS)
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time:
        shape_name, k, rounds, warmup = args.time.split(",")
        print(json.dumps(time_cell(shape_name, int(k), int(rounds), int(warmup))))
        return
    if args.memory:
        shape_name, k, path, steps = args.memory.split(",")
        print(json.dumps(memory_cell(shape_name, int(k), path, int(steps))))
        return
    run(Path(args.out), args.quick, args.models.split(","))


if __name__ == "__main__":
    main()
