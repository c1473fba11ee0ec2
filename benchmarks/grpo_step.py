"""Seconds and peak memory per GRPO step: our ``MOTrainer`` against TRL 1.16's ``GRPOTrainer``.

    python -m benchmarks.grpo_step [--quick] [--out DIR] [--data-dir DIR]

Every cell trains the same tiny GPT-2 (built once, saved, loaded with ``from_pretrained`` by
both sides) on the same prompts (short fixed strings, or IMDb prompts from ``--data-dir``) with
the same number of completions per prompt, and every completion has exactly
``--completion-length`` tokens: our trainer refuses ``min_new_tokens``, so the policy's EOS
logit is pinned very low instead (:func:`build_policy`) and both sides get the same plain
sampling kwargs; every scored completion's length is checked. Both sides run in float32
without gradient checkpointing, with dropout off, ``beta=0`` (no reference model),
``num_iterations=1``, ``epsilon=0.2``, ``loss_type="dapo"`` (TRL 1.16's default),
``scale_rewards="group"`` and one optimizer step per generation (TRL:
``gradient_accumulation_steps=1``; ours: ``mini_batch_size == batch_size``). The rewards are
two cheap TRL-style functions (``fn(completions, **kwargs) -> list[float]``: a word-count length
score and the VADER compound sentiment) weighted ``[1.0, 0.5]``, so the table measures the
trainers, not reward models.

Cells: ``trl`` (TRL's weighted sum of the rewards: the reference), ``linear`` (ours, the same
weighted sum through ``reward_weights``, Noon off), ``single`` (ours with one reward function
that returns the weighted sum: plain single-objective GRPO), ``pama`` and ``mgda`` (at
``gramian_level="features"``).

* time: all cells are built in one process and stepped one step at a time, in an order rotated
  every round, so that machine noise hits them alike (TRL's ``train()`` runs in a thread that a
  ``TrainerCallback`` holds after each step; its step is timed from ``on_step_begin`` to
  ``on_step_end``, ours around ``trainer.step()``: both generation, scoring and the update).
  After ``--warmup`` rounds, ``--steps`` rounds are timed; a ratio is the median over rounds of
  the cell's step over the reference's step in the same round.
* memory: each cell alone in its own subprocess: ``torch.cuda.max_memory_allocated`` on CUDA;
  on CPU the process's peak resident set (``ru_maxrss``, imports included; TRL imports more
  libraries) and its growth from before the first step to after the last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.grpo_cells import (
    COMPLETION_TOKENS,
    LOSS_TYPE,
    build_policy,
    check_lengths,
    cuda_available,
    load_prompts,
    make_cell,
)
from benchmarks.tables import read_csv, write_csv

#: Cells in table order; ``trl`` is the reference.
CELLS = ("trl", "linear", "single", "pama", "mgda")
#: cell -> (the cell it is compared with, the largest ratio that meets the target).
TARGETS: dict[str, tuple[str, float]] = {
    "linear": ("trl", 1.0),
    "pama": ("single", 1.05),
    "mgda": ("single", 1.3),
}


def _peak_memory_mb() -> float:
    """Peak memory so far: CUDA allocations, else the process's peak resident set."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_cell(cell: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one cell alone in this process over all its steps, and the growth of
    the peak from before its first step."""
    import torch

    torch.set_num_threads(settings["threads"])
    COMPLETION_TOKENS.clear()  # what earlier runs in this process scored is not this run's
    with tempfile.TemporaryDirectory(prefix="grpo-step-") as tmp:
        stepper = make_cell(cell, {**settings, "tmp": tmp})
        before = _peak_memory_mb()
        for _ in range(settings["warmup"] + settings["steps"]):
            stepper.step()
        stepper.close()
    check_lengths(settings["completion_length"])
    peak = _peak_memory_mb()
    return {"cell": cell, "peak_mb": peak, "step_extra_mb": peak - before}


def time_cells(
    cells: Sequence[str],
    settings: dict[str, Any],
    deadline: float | None = None,
    peaks: dict[str, float] | None = None,
) -> dict[str, list[float]]:
    """Every cell built in this process, then stepped one step at a time in a rotated order
    per round (warm-up rounds first, dropped): each cell's timed seconds, round by round.

    ``deadline`` (a ``time.perf_counter()`` value): no round starts that the previous round's
    length says would end after it (the timed rounds are then fewer). ``peaks``: filled with
    each cell's largest ``torch.cuda.max_memory_allocated`` over one of its steps, in MB, less
    what was allocated before that step (CUDA only)."""
    import torch

    torch.set_num_threads(settings["threads"])
    times: dict[str, list[float]] = {cell: [] for cell in cells}
    cuda = cuda_available()
    COMPLETION_TOKENS.clear()  # what earlier runs in this process scored is not this run's
    with tempfile.TemporaryDirectory(prefix="grpo-step-") as tmp:
        steppers = {cell: make_cell(cell, {**settings, "tmp": tmp}) for cell in cells}
        try:
            for r in range(settings["warmup"] + settings["steps"]):
                started = time.perf_counter()
                order = list(cells[r % len(cells) :]) + list(cells[: r % len(cells)])
                for cell in order:
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                        before = torch.cuda.memory_allocated()
                    seconds = steppers[cell].step()
                    if cuda and peaks is not None:
                        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
                        peaks[cell] = max(peaks.get(cell, 0.0), peak)
                    if r >= settings["warmup"]:
                        times[cell].append(seconds)
                took = time.perf_counter() - started
                if deadline is not None and time.perf_counter() + took > deadline:
                    break
        finally:
            for stepper in steppers.values():
                stepper.close()
    check_lengths(settings["completion_length"])
    return times


def _spawn_memory(cells: Sequence[str], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """:func:`memory_cell` of every cell, each in a fresh Python process (so its peak is its
    own); they run side by side, since memory does not depend on the machine's load."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(settings["threads"]))
    env["MKL_NUM_THREADS"] = env["OMP_NUM_THREADS"]
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    processes = {}
    for cell in cells:
        processes[cell] = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.grpo_step", "--cell", cell],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    results = {}
    for cell, process in processes.items():
        stdout, stderr = process.communicate(json.dumps(settings))
        lines = stdout.strip().splitlines()
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"cell {cell} failed (exit {process.returncode}):\n{stderr}")
        results[cell] = dict(json.loads(lines[-1]))
    return results


# ----- the driver ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Memory of every cell (one process each), then the interleaved timing; one row a cell."""
    if args.batch_size % args.num_generations:
        raise ValueError(
            f"--batch-size {args.batch_size} is not a multiple of --num-generations "
            f"{args.num_generations}: every prompt needs its full group of completions"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cells = list(args.cells)
    if "trl" not in cells:
        cells.insert(0, "trl")
    for cell in list(cells):
        if cell in TARGETS and TARGETS[cell][0] not in cells:
            cells.append(TARGETS[cell][0])
    with tempfile.TemporaryDirectory(prefix="grpo-step-policy-") as policy_dir:
        policy = build_policy(Path(policy_dir), args.n_layer, args.n_embd, args.vocab_size)
        n_prompts = args.batch_size // args.num_generations * (args.warmup + args.steps)
        settings = {
            "policy": str(policy),
            "prompts": load_prompts(args.data_dir, policy, max(n_prompts, 8)),
            "batch_size": args.batch_size,
            "num_generations": args.num_generations,
            "completion_length": args.completion_length,
            "threads": args.threads,
        }
        memory_steps = {"warmup": 1, "steps": args.memory_steps}
        print(f"memory: {len(cells)} cells, one process each ...", flush=True)
        memory = _spawn_memory(cells, {**settings, **memory_steps})
        print(f"timing: {len(cells)} cells interleaved step by step ...", flush=True)
        timing = time_cells(cells, {**settings, "warmup": args.warmup, "steps": args.steps})
    return summarize(timing, memory, args)


def summarize(
    timing: dict[str, list[float]], memory: dict[str, dict[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """One row per cell: median seconds, the paired ratios (median over rounds of the cell's
    step over the reference's step in the same round), peak memory and the target."""

    def ratio(cell: str, reference: str) -> float:
        return statistics.median(a / b for a, b in zip(timing[cell], timing[reference]))

    device = "cuda" if cuda_available() else "cpu"
    rows = []
    for cell, times in timing.items():
        target = TARGETS.get(cell)
        met = "" if target is None else ratio(cell, target[0]) <= target[1]
        rows.append(
            {
                "cell": cell,
                "side": "trl" if cell == "trl" else "ours",
                "device": device,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "ratio_vs_trl": ratio(cell, "trl"),
                "ratio_vs_single": ratio(cell, "single") if "single" in timing else "",
                "peak_mb": memory[cell]["peak_mb"],
                "step_extra_mb": memory[cell]["step_extra_mb"],
                "target": f"{cell}/{target[0]} <= {target[1]:g}" if target else "",
                "target_met": met,
                "timed_steps": len(times),
                "batch_size": args.batch_size,
                "num_generations": args.num_generations,
                "completion_length": args.completion_length,
                "loss_type": LOSS_TYPE,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, with a caption saying how memory was measured."""
    cuda = rows[0]["device"] == "cuda"
    memory = "peak MB (CUDA allocated)" if cuda else "peak RSS MB | steps' extra RSS MB"
    lines = [
        f"| cell | s/step (median) | vs TRL | vs single | {memory} | target | met |",
        "|---" * (7 if cuda else 8) + "|",
    ]
    for r in rows:
        # rows read back from the CSV carry None for empty cells and "True"/"False" as text
        single = "" if r["ratio_vs_single"] in ("", None) else f"{r['ratio_vs_single']:.3f}x"
        mem = f"{r['peak_mb']:.0f}" if cuda else f"{r['peak_mb']:.0f} | {r['step_extra_mb']:.0f}"
        met = {"True": "yes", "False": "NO"}.get(str(r["target_met"]), "")
        lines.append(
            f"| {r['cell']} | {r['median_s']:.3f} | {r['ratio_vs_trl']:.3f}x | {single} | {mem} "
            f"| {r['target'] or ''} | {met} |"
        )
    r0 = rows[0]
    caption = (
        f"\n\nB={r0['batch_size']} completions per step ({r0['num_generations']} per prompt), "
        f"{r0['completion_length']} tokens each, loss_type={r0['loss_type']}, "
        f"{r0['timed_steps']} timed steps per cell on {r0['device']}, the cells interleaved step "
        "by step; a ratio is the median over rounds of the two cells' steps in that round. "
        "Memory (each cell alone in its own process): "
        + (
            "torch.cuda.max_memory_allocated."
            if cuda
            else "ru_maxrss (the whole process, imports included; TRL imports more), and "
            "its growth from before the first step to after the last."
        )
    )
    return "\n".join(lines) + caption


def docs_table(results: Path, name: str) -> str:
    """The docs' table ``grpo_step`` (or another CSV's stem in ``results``), as printed."""
    path = results / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"no GRPO-step results {path}: NAME is a CSV's stem")
    return table(read_csv(path))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar charts of seconds per step and peak memory per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r["cell"] for r in rows]
    colors = ["tab:gray" if r["side"] == "trl" else "tab:blue" for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    ax_t.bar(cells, [r["median_s"] for r in rows], color=colors)
    for i, r in enumerate(rows):
        ax_t.annotate(f"{r['ratio_vs_trl']:.2f}x", (i, r["median_s"]), ha="center", va="bottom")
    ax_t.set_ylabel("seconds per step (median)")
    ax_t.set_title("GRPO step time (paired ratio vs TRL)")
    key = "peak_mb" if rows[0]["device"] == "cuda" else "step_extra_mb"
    ax_m.bar(cells, [r[key] for r in rows], color=colors)
    ax_m.set_ylabel("peak CUDA MB" if key == "peak_mb" else "peak RSS growth over the steps (MB)")
    ax_m.set_title("memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", default="docs/results/grpo_step")
    parser.add_argument("--quick", action="store_true", help="3 timed steps of a tiny batch")
    parser.add_argument("--data-dir", help="IMDb directory (train.jsonl.gz) for the prompts")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--steps", type=int, default=60, help="timed steps (rounds) per cell")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument(
        "--memory-steps", type=int, default=3, help="steps after one warm-up in the memory runs"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="completions per step")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per cell")
    parser.add_argument("--cell", choices=CELLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.memory_steps = 3, 1, 1
        args.batch_size, args.num_generations, args.completion_length = 8, 4, 8
        args.vocab_size = 500
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.cell:  # a subprocess of the driver: settings on stdin, result on stdout
        print(json.dumps(memory_cell(args.cell, json.load(sys.stdin))))
        return []
    rows = run(args)
    print()
    print(table(rows))
    out = Path(args.out)
    stem = "grpo_step_quick" if args.quick else "grpo_step"
    write_csv(rows, out / f"{stem}.csv")
    plot(rows, out / f"{stem}.png")
    print(f"wrote {out / stem}.csv and .png")
    return rows


if __name__ == "__main__":
    main()
