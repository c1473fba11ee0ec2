"""One training step (forward + aggregation backward, MGDA) against one plain backward of Σ Lᵢ.

    python -m benchmarks.backward_step [--quick] [--out DIR]
    python -m benchmarks.backward_step --paths [--quick]   # loop vs layers (backward_paths.py)

Columns: mogradient parameter mode with the loop Jacobian (``batched=False``) and the
vectorised one (``batched=True``), TorchJD 0.18 autojac (``autojac.backward`` +
``jac_to_grad(MGDA())``) and autogram (``autogram.Engine(model, batch_dim=None)`` → Gramian →
``MGDAWeighting`` → one weighted backward), and mogradient ``features=`` (MGDA-UB on the last
shared representation). One torch thread.

* time: median over the timed steps of (forward + aggregation backward), divided by the median
  of (forward + plain backward of Σ Lᵢ) measured in the same process;
* memory: peak extra resident memory, ``ru_maxrss`` after the method's steps minus
  ``ru_maxrss`` after the plain steps (one subprocess per cell, plain steps first), in MB:
  what the method needs beyond a plain training step (allocations torch makes do not show in
  ``tracemalloc``, so the process's peak RSS is used). One step of the method on a tiny model
  runs before the plain steps, so its one-time costs (library imports, the numba solvers'
  compilation: about 60–90 MB for mogradient, which the previous runs counted) are in the
  baseline;
* cosine: of the method's update with the exact update (a float64 copy of the model, float64
  Jacobian by one backward per objective, MGDA on the float64 Gramian). ``features=`` solves a
  different problem (the MGDA-UB bound), so its cosine measures that approximation.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.backward_models import MODELS, build_model
from benchmarks.tables import read_csv, write_csv

if TYPE_CHECKING:
    import torch

METHODS = ("mg_loop", "mg_batched", "mg_layers", "tjd_autojac", "tjd_autogram", "mg_features")
KS = (2, 4, 8)


def _method_step(method, model, forward, params, engine) -> None:  # noqa: ANN001
    """One aggregation step of ``method``: forward, MGDA weights, the update in ``.grad``."""
    import torch

    import mogradient

    if method == "mg_layers":  # the Gramian layer by layer, then one weighted backward
        from mogradient.gramian.recorder import GramianRecorder

        with GramianRecorder(model, params=params) as recorder:
            losses, _ = forward(model)
        w = _mgda_weights(recorder.gramian(losses))
        torch.autograd.backward(sum(float(wi) * li for wi, li in zip(w, losses)))
        return
    losses, h = forward(model)
    if method == "mg_loop":
        mogradient.backward(losses, params, aggregator="mgda", batched=False)
    elif method == "mg_batched":
        mogradient.backward(losses, params, aggregator="mgda", batched=True)
    elif method == "mg_features":
        mogradient.backward(losses, params, features=h, aggregator="mgda")
    elif method == "tjd_autojac":
        from torchjd.aggregation import MGDA
        from torchjd.autojac import backward, jac_to_grad

        backward(losses, inputs=params)
        jac_to_grad(params, MGDA())
    elif method == "tjd_autogram":
        from torchjd.aggregation import MGDAWeighting

        stacked = torch.stack(losses)
        gram = engine.compute_gramian(stacked)
        stacked.backward(MGDAWeighting()(gram))
    else:
        raise ValueError(method)


def _preload(method: str, k: int) -> None:
    """One step of ``method`` on a 4 -> k linear model before the plain steps, so that its
    libraries' imports and the numba solvers' compilation (one-time costs, tens of MB) are in
    the baseline and the memory column is what the step itself needs."""
    import torch

    tiny = torch.nn.Linear(4, k)
    x = torch.randn(8, 4)

    def forward(m):  # noqa: ANN001, ANN202
        h = m(x)
        return list((h**2).mean(0)), h

    engine = None
    if method == "tjd_autogram":
        from torchjd.autogram import Engine

        engine = Engine(tiny, batch_dim=None)
    _method_step(method, tiny, forward, list(tiny.parameters()), engine)


def _cell(model_name: str, k: int, method: str, steps: int, warmup: int) -> dict:
    import torch

    torch.set_num_threads(1)

    model, forward, to64 = build_model(model_name, k)
    params = [p for p in model.parameters() if p.requires_grad]

    def zero() -> None:
        for p in params:
            p.grad = None

    def plain() -> None:
        losses, _ = forward(model)
        torch.stack(losses).sum().backward()

    def step() -> None:
        _method_step(method, model, forward, params, engine)

    def timed(fn) -> list[float]:  # noqa: ANN001
        out = []
        for i in range(warmup + steps):
            zero()
            t = time.perf_counter()
            fn()
            dt = time.perf_counter() - t
            if i >= warmup:
                out.append(dt)
        return out

    _preload(method, k)
    plain_t = timed(plain)
    engine = None
    if method == "tjd_autogram":  # hooks installed after the plain steps
        from torchjd.autogram import Engine

        engine = Engine(model, batch_dim=None)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        method_t = timed(step)
    except Exception as error:  # noqa: BLE001
        return {"model": model_name, "k": k, "method": method, "error": repr(error)[:200]}
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    update = torch.cat([_flat_grad(p) for p in params]).double()
    # exact reference
    ref_model = copy.deepcopy(model)
    ref_model, f64 = to64(ref_model)
    ref_params = [p for p in ref_model.parameters() if p.requires_grad]
    from mogradient.aggregators import gramian_of
    from mogradient.autograd import jacobian

    jac = jacobian(f64(ref_model), ref_params, batched=False)
    w = _mgda_weights(gramian_of(jac, precision="float64"))
    exact = w @ jac
    cosine = float(update @ exact / (update.norm() * exact.norm()))
    return {
        "model": model_name,
        "k": k,
        "method": method,
        "plain_ms": statistics.median(plain_t) * 1e3,
        "step_ms": statistics.median(method_t) * 1e3,
        "ratio": statistics.median(method_t) / statistics.median(plain_t),
        "extra_mb": (rss1 - rss0) / 1024,
        "cosine": cosine,
        "n_params": sum(p.numel() for p in params),
    }


def _mgda_weights(gramian: torch.Tensor) -> torch.Tensor:
    """MGDA's weights from the registry (as a user would get them) for ``gramian``."""
    import mogradient

    mgda = mogradient.get_aggregator("mgda")
    assert isinstance(mgda, mogradient.GramianWeighting)  # MGDA weighs from the Gramian
    return mgda.weights(gramian)


def _flat_grad(p: torch.Tensor) -> torch.Tensor:
    """``p.grad`` as one row: every trained parameter has one after a method's step."""
    assert p.grad is not None, "the method's step left a trained parameter without .grad"
    return p.grad.reshape(-1)


def main() -> None:
    if "--paths" in sys.argv[1:]:  # the parameter-path rule's evidence: that module's command
        import runpy  # (run, not imported: benchmarks.backward_paths imports this module)

        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--paths")]
        runpy.run_module("benchmarks.backward_paths", run_name="__main__", alter_sys=True)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="docs/results/backward_step")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument(
        "--plot-from", type=Path, help="redraw the PNG beside this CSV from it, run nothing"
    )
    args = parser.parse_args()
    if args.plot_from:
        _plot(read_csv(args.plot_from), args.plot_from.with_suffix(".png"))
        return
    steps, warmup = (3, 2) if args.quick else (10, 3)
    if args.cell:
        model_name, k, method = args.cell.split(",")
        print(json.dumps(_cell(model_name, int(k), method, steps, warmup)))
        return
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for model_name in args.models.split(","):
        for k in KS:
            for method in METHODS:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.backward_step",
                    "--cell",
                    f"{model_name},{k},{method}",
                ] + (["--quick"] if args.quick else [])
                res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                try:
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    row = {
                        "model": model_name,
                        "k": k,
                        "method": method,
                        "error": res.stderr.strip().splitlines()[-1][:200] if res.stderr else "?",
                    }
                rows.append(row)
                print(_fmt(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = [
        "model",
        "k",
        "method",
        "plain_ms",
        "step_ms",
        "ratio",
        "extra_mb",
        "cosine",
        "n_params",
        "error",
    ]
    write_csv(rows, out / ("backward_step_quick.csv" if args.quick else "backward_step.csv"), keys)
    print()
    print(table(rows))
    _plot(rows, out / ("backward_step_quick.png" if args.quick else "backward_step.png"))


def _fmt(row: dict) -> str:
    if "error" in row:
        return f"{row['model']:12s} k={row['k']} {row['method']:13s} ERROR {row['error']}"
    return (
        f"{row['model']:12s} k={row['k']} {row['method']:13s} ratio {row['ratio']:.2f} "
        f"extra {row['extra_mb']:.0f} MB cos {row['cosine']:.6f}"
    )


def table(rows: list[dict]) -> str:
    head = "| model | k | " + " | ".join(METHODS) + " |"
    lines = [head, "|" + "---|" * (2 + len(METHODS))]
    for model_name in dict.fromkeys(r["model"] for r in rows):
        for k in KS:
            cells = []
            for method in METHODS:
                r = next(
                    (
                        r
                        for r in rows
                        if r["model"] == model_name and r["k"] == k and r["method"] == method
                    ),
                    None,
                )
                if r is None or r.get("error"):
                    cells.append("n/a")
                else:
                    cells.append(f"{r['ratio']:.2f}× / +{r['extra_mb']:.0f} MB / {r['cosine']:.6f}")
            lines.append(f"| {model_name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig = figure(rows)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def figure(rows: list[dict]) -> Any:
    """Step time / plain backward against k, one panel per model. Each method keeps one colour
    and marker in every panel (its place in ``METHODS``; its lines carry the method as
    ``gid``), and the one legend lists every method, naming the models where it has no result
    (an error)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.6), squeeze=False)
    colour = {m: f"C{i}" for i, m in enumerate(METHODS)}
    marker = {m: "osD^vP"[i % 6] for i, m in enumerate(METHODS)}
    missing: dict[str, list[str]] = {m: [] for m in METHODS}
    for ax, model_name in zip(axes[0], models):
        for method in METHODS:
            pts = [
                (r["k"], r["ratio"])
                for r in rows
                if r["model"] == model_name and r["method"] == method and not r.get("error")
            ]
            if pts:
                ks, ratios = zip(*pts)
                ax.plot(ks, ratios, color=colour[method], marker=marker[method], gid=method)
            else:
                missing[method].append(model_name)
        ax.set_title(model_name)
        ax.set_xlabel("k objectives")
        ax.set_ylabel("step time / plain backward")
        ax.set_xticks(list(KS))
        ax.grid(alpha=0.3)
    handles = [
        Line2D(
            [], [], color=colour[m], marker=marker[m],
            label=m + (f" (n/a: {', '.join(missing[m])})" if missing[m] else ""),
        )
        for m in METHODS
    ]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def docs_table(results: Path, name: str) -> str:
    """The docs' table ``full`` (``backward_step.csv``) or ``quick``
    (``backward_step_quick.csv``), as :func:`table` prints it."""
    if name not in ("full", "quick"):
        raise ValueError(f"unknown backward_step table {name!r}: use full or quick")
    return table(
        read_csv(results / ("backward_step.csv" if name == "full" else "backward_step_quick.csv"))
    )


if __name__ == "__main__":
    main()
