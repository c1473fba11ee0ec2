"""The prepared device check: one short run on a GPU (or, with ``--smoke``, the same code at
tiny sizes on the CPU, in seconds) that writes a CSV and a Markdown table.

    python -m benchmarks.device_check [--smoke] --out DIR [--sections rl backward correctness]
        [--budget SECONDS] [--wheels FOLDER]

Sections (see docs/gpu.md):

* ``rl``: one GRPO step, ours (linear, PAMA, MGDA-UB on the features, UPGrad on the parameters
  by the layer path, and PPO with a value head per objective) against TRL's ``GRPOTrainer``
  with the same settings, in paired rounds (:mod:`benchmarks.grpo_step`): GPT-2 at its 124M
  shape (12 × 768, vocabulary 50257, random init, a tokenizer trained here), bf16 autocast,
  8 prompts × 8 completions × 128 tokens;
* ``backward``: the parameter-level step (loop, layer path, features) against TorchJD's
  autojac and autogram for the MLP, the transformer and GPT-2 124M at k = 2, 4, 8: median time
  over a plain backward and peak CUDA memory (:mod:`benchmarks.backward_step`);
* ``correctness``: bf16 step-0 KL exactly 0 (full and LoRA), the fp16 loss scaler giving the
  unscaled gradients, LoRA training its adapters only (:mod:`benchmarks.device_correctness`).

Time budget: the sections share ``--budget`` seconds (default 420, so that the whole run,
imports and model building included, stays under 8 minutes) in the proportions of
``SHARES``; what one section leaves unspent goes to the next. A section stops where the next
unit of work (a round, a model/k group, a check) would overrun and says so in a ``cut short``
row. Packages the machine lacks (TRL, TorchJD) are installed from ``--wheels`` (see
``benchmarks/fetch_device_wheels.sh``) when that folder exists, else their cells are
``skipped`` rows that name the missing import.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.tables import read_csv, write_csv

SECTIONS = ("rl", "backward", "correctness")
#: Each section's share of the budget (of what is left when it starts, over the sections left).
SHARES = {"rl": 0.45, "backward": 0.35, "correctness": 0.20}
COLUMNS = (
    "section", "name", "k", "device", "seconds", "ratio", "reference", "peak_mb", "result", "note",
)  # fmt: skip
#: The carried distributions, one ``name==version`` a line (each imports by its own name).
WHEELS_LIST = Path(__file__).with_name("device_wheels.txt")


class Budget:
    """``total`` seconds from now shared by the sections: :meth:`deadline` gives a section
    its share of what is left, over the shares of the sections still to run."""

    def __init__(self, total: float, sections: list[str]) -> None:
        self.end = time.perf_counter() + total
        self.left = list(sections)

    def deadline(self, section: str) -> float:
        now = time.perf_counter()
        weight = SHARES[section] / sum(SHARES[s] for s in self.left)
        self.left.remove(section)
        return now + max(self.end - now, 0.0) * weight


def wheel_requirements(path: Path = WHEELS_LIST) -> list[str]:
    """The pinned requirements (``name==version``) of the wheels the check may carry."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def install_missing(folder: Path) -> list[dict[str, Any]]:
    """Install the listed distributions that do not import from ``folder`` (no index, no
    dependencies: the list is complete); one ``setup`` row per distribution installed or
    still missing."""
    from benchmarks.device_sections import missing, row

    rows = []
    absent = []
    for requirement in wheel_requirements():
        name = requirement.split("==")[0]
        if missing(name) is not None:
            absent.append(requirement)
    if absent and folder.is_dir():
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps"]
        done = subprocess.run(
            [*command, "--find-links", str(folder), *absent], capture_output=True, text=True
        )
        importlib.invalidate_caches()
        result = "installed" if done.returncode == 0 else "error"
        note = f"from {folder}" if done.returncode == 0 else done.stderr.strip()[-160:]
        rows += [row("setup", r, result=result, note=note) for r in absent]
    else:
        rows += [row("setup", r, result="missing", note=f"no {folder}") for r in absent]
    return rows


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every asked section within the budget; the rows of the table, written to ``--out``
    after each section (a run stopped from outside keeps what it measured). A section that
    raises is one ``error`` row; the next section still runs."""
    import torch

    from benchmarks import grpo_cells
    from benchmarks.device_sections import DEVICE, SMOKE, backward_rows, rl_rows, row

    sizes = SMOKE if args.smoke else DEVICE
    rows = [] if args.smoke else install_missing(Path(args.wheels))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows.append(
        row("setup", "machine", device=device, note=f"torch {torch.__version__}, {args.mode}")
    )
    budget = Budget(args.budget, list(args.sections))
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        policy = tmp  # the RL policy, built only where a section needs it
        if {"rl", "correctness"} & set(args.sections):
            grpo_cells.build_policy(
                Path(tmp),
                sizes.n_layer,
                sizes.n_embd,
                sizes.tokenizer_vocab,
                n_head=sizes.n_head,
                n_positions=sizes.n_positions,
                model_vocab=sizes.model_vocab,
            )
        runners: dict[str, Callable[[float], list[dict[str, Any]]]] = {
            "rl": lambda deadline: rl_rows(policy, sizes, deadline),
            "backward": lambda deadline: backward_rows(sizes, deadline),
            "correctness": lambda deadline: _correctness(policy, sizes, deadline),
        }
        for section in args.sections:
            started = time.perf_counter()
            print(f"{section} ...", flush=True)
            try:
                rows += runners[section](budget.deadline(section))
            except Exception as error:  # noqa: BLE001 - one section failing must not end the run
                rows.append(row(section, "(error)", result="error", note=repr(error)[:160]))
            print(f"{section}: {time.perf_counter() - started:.0f} s", flush=True)
            write(rows, Path(args.out))
    return rows


def write(rows: list[dict[str, Any]], out: Path) -> str:
    """``device_check.csv`` and ``device_check.md`` (the table of the CSV) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "device_check.csv", COLUMNS)
    text = table(read_csv(out / "device_check.csv"))
    (out / "device_check.md").write_text(text + "\n")
    return text


def _correctness(policy: str, sizes: Any, deadline: float) -> list[dict[str, Any]]:
    from benchmarks.device_correctness import correctness_rows

    return correctness_rows(policy, sizes, deadline)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as one Markdown table, in the order run (empty cells stay empty)."""
    head = ["section", "name", "k", "device", "s", "ratio", "vs", "peak MB", "result", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(r.get(c)) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def docs_table(results: Path, name: str) -> str:
    """The docs' table of ``results/NAME.csv`` (``device_check``), as the check writes it."""
    path = results / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"no device-check results {path}: NAME is the CSV's stem")
    return table(read_csv(path))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for device_check.csv and .md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (seconds)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--budget", type=float, help="seconds for all sections (default 420)")
    parser.add_argument("--wheels", default=".device_wheels", help="folder of carried wheels")
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 120.0 if args.smoke else 420.0
    args.mode = "smoke (tiny sizes)" if args.smoke else "device sizes"
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.perf_counter()
    if args.smoke:
        import torch

        torch.set_num_threads(1)
    rows = run(args)
    text = write(rows, Path(args.out))
    print(text)
    print(f"wrote {args.out}/device_check.csv and .md ({time.perf_counter() - started:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
