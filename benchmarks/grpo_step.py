"""Seconds and peak memory per GRPO step: our ``MOTrainer`` against TRL 1.16's ``GRPOTrainer``.

    python -m benchmarks.grpo_step [--quick] [--out DIR] [--data-dir DIR]

Every cell trains the same tiny GPT-2 (built once, saved, loaded with ``from_pretrained`` by
both sides) on the same prompts (short synthetic reviews, or IMDb prompts from ``--data-dir``)
with the same number of completions per prompt, and every completion has exactly
``--completion-length`` tokens (``min_new_tokens == max_new_tokens`` on both sides), so the
generation work does not depend on when EOS happens to be sampled. Both sides run in float32
without gradient checkpointing, with dropout off, ``beta=0`` (no reference model),
``num_iterations=1``, ``loss_type="dapo"`` (TRL 1.16's default), ``scale_rewards="group"``,
one optimizer step per generation (TRL: ``gradient_accumulation_steps=1``; ours:
``mini_batch_size == batch_size``). The rewards are two cheap TRL-style functions
(``fn(completions, **kwargs) -> list[float]``: a word-count length score and the VADER compound
sentiment), weighted ``[1.0, 0.5]``, so the table measures the trainers, not reward models.

Cells: ``trl`` (TRL's weighted sum of the rewards: the reference), ``linear`` (ours, the same
weighted sum through ``reward_weights``), ``single`` (ours with one reward function that returns
the weighted sum: plain single-objective GRPO), ``pama`` and ``mgda`` (at
``gramian_level="features"``). Each cell runs in its own subprocess (``--warmup`` untimed steps,
then ``--steps`` timed ones; seconds per step is the median of the timed steps), and the cells
are repeated for ``--rounds`` rounds in a rotated order so that machine noise hits all of them.
A ratio is the median over rounds of (cell median / reference median in the same round).
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident set
(``ru_maxrss``), of which the part that the steps add (peak after the steps minus peak before
the first step) is reported too, since the imports (TRL loads more libraries) dominate the total.
"""

from __future__ import annotations

import argparse
import csv
import functools
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

#: Cells in table order; ``trl`` is the reference.
CELLS = ("trl", "linear", "single", "pama", "mgda")
#: cell -> (aggregator, extra MOGRPOConfig fields) for our side.
OURS: dict[str, tuple[str, dict[str, Any]]] = {
    "linear": ("linear", {"reward_weights": [1.0, 0.5]}),
    "single": ("linear", {}),
    "pama": ("pama", {}),
    "mgda": ("mgda", {"gramian_level": "features"}),
}
#: cell -> (the cell it is compared with, the largest ratio that meets the target).
TARGETS: dict[str, tuple[str, float]] = {
    "linear": ("trl", 1.0),
    "pama": ("single", 1.05),
    "mgda": ("single", 1.3),
}
REWARD_WEIGHTS = (1.0, 0.5)
LOSS_TYPE = "dapo"
#: Short prompts used when no ``--data-dir`` is given.
DEFAULT_PROMPTS = (
    "The movie was",
    "I thought the acting",
    "This film is",
    "The plot of this story",
    "Honestly, the ending",
    "My favourite scene",
    "The director clearly",
    "What a",
)


# ----- rewards, written the way TRL expects them ---------------------------------------------


def length_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """Words in the completion over 20, capped at 1: rewards longer answers."""
    return [min(len(text.split()) / 20.0, 1.0) for text in completions]


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """VADER compound score of the completion, in [-1, 1]: rewards positive text."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in completions]


def weighted_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The two rewards summed with ``REWARD_WEIGHTS``, as one reward (single-objective GRPO)."""
    a, b = REWARD_WEIGHTS
    lengths = length_reward(completions)
    sentiments = sentiment_reward(completions)
    return [a * x + b * y for x, y in zip(lengths, sentiments)]


# ----- the shared setup ----------------------------------------------------------------------


def build_policy(path: Path, n_layer: int, n_embd: int, vocab_size: int) -> Path:
    """Save a randomly initialised tiny GPT-2 and its tokenizer to ``path`` (both sides load it)."""
    from mogradient_llm.models import build_tiny_policy

    model, tokenizer = build_tiny_policy(
        pretrain_steps=0,
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=4,
        n_positions=128,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_prompts(data_dir: str | None, policy: Path, n: int) -> list[str]:
    """``n`` prompts: the first 2-8 tokens of IMDb reviews from ``data_dir`` (its
    ``train.jsonl.gz`` or ``train.jsonl``), or the built-in short prompts repeated."""
    if data_dir is None:
        return [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(n)]
    from transformers import AutoTokenizer

    from mogradient_llm.data import load_prompts as load

    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = load(data_dir, tokenizer, split="train", limit=4 * n)[:n]
    if len(prompts) < n:
        raise ValueError(
            f"{data_dir} gave {len(prompts)} prompts, {n} are needed: point --data-dir at a "
            "directory with a train.jsonl(.gz) of reviews longer than 200 characters"
        )
    return prompts


def _generation(length: int) -> dict[str, Any]:
    """Sample from softmax(logits) for exactly ``length`` new tokens."""
    return {
        "max_new_tokens": length,
        "min_new_tokens": length,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "temperature": 1.0,
    }


# ----- one cell, in its own process ----------------------------------------------------------


def _peak_memory_mb() -> float:
    """Peak memory so far: CUDA allocations, else the process's peak resident set."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _trl_times(settings: dict[str, Any]) -> tuple[list[float], float]:
    """Train TRL's GRPOTrainer for warmup + steps steps; each step's seconds, and the peak
    memory before the first step."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    length = settings["completion_length"]
    steps = settings["warmup"] + settings["steps"]
    times: list[float] = []

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        """Seconds between on_step_begin and on_step_end (generation, scoring and update)."""

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    generation = _generation(length)
    config = GRPOConfig(
        output_dir=settings["tmp"],
        per_device_train_batch_size=settings["batch_size"],
        gradient_accumulation_steps=1,
        num_generations=settings["num_generations"],
        num_iterations=1,
        max_completion_length=length,
        generation_kwargs={"min_new_tokens": generation["min_new_tokens"]},
        temperature=generation["temperature"],
        top_k=generation["top_k"],
        top_p=generation["top_p"],
        learning_rate=1e-5,
        beta=0.0,
        epsilon=0.2,
        loss_type=LOSS_TYPE,
        scale_rewards="group",
        reward_weights=list(REWARD_WEIGHTS),
        max_steps=steps,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        gradient_checkpointing=False,
        disable_dropout=True,
        seed=0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(settings["policy"])
    tokenizer = AutoTokenizer.from_pretrained(settings["policy"])
    # TRL types reward functions as returning list[float | None]; ours return list[float].
    reward_funcs: list[Any] = [length_reward, sentiment_reward]
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": settings["prompts"]}),
        callbacks=[StepTimer()],
    )
    before = _peak_memory_mb()
    trainer.train()
    return times, before


def _our_times(cell: str, settings: dict[str, Any]) -> tuple[list[float], float]:
    """Step our MOTrainer warmup + steps times; each step's seconds, and the peak memory
    before the first step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mogradient_llm import MOGRPOConfig, MOTrainer

    aggregator, extra = OURS[cell]
    config = MOGRPOConfig(
        learning_rate=1e-5,
        batch_size=settings["batch_size"],
        mini_batch_size=settings["batch_size"],
        num_generations=settings["num_generations"],
        num_iterations=1,
        beta=0.0,
        epsilon=0.2,
        loss_type=LOSS_TYPE,
        scale_rewards="group",
        aggregator=aggregator,
        noon=False,
        seed=0,
        generation_kwargs=_generation(settings["completion_length"]),
        **extra,
    )
    rewards = [weighted_reward] if cell == "single" else [length_reward, sentiment_reward]
    model = AutoModelForCausalLM.from_pretrained(settings["policy"])
    tokenizer = AutoTokenizer.from_pretrained(settings["policy"])
    trainer = MOTrainer(config, model, tokenizer, rewards=rewards, prompts=settings["prompts"])
    before = _peak_memory_mb()
    times = []
    for _ in range(settings["warmup"] + settings["steps"]):
        start = time.perf_counter()
        trainer.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, before


def run_cell(cell: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Time one cell in this process: its timed steps' seconds and its peak memory."""
    import torch

    torch.set_num_threads(settings["threads"])
    with tempfile.TemporaryDirectory(prefix="grpo-step-") as tmp:
        settings = {**settings, "tmp": tmp}
        if cell == "trl":
            times, before = _trl_times(settings)
        else:
            times, before = _our_times(cell, settings)
    expected = settings["warmup"] + settings["steps"]
    if len(times) != expected:
        raise RuntimeError(f"cell {cell} ran {len(times)} steps, {expected} were asked for")
    peak = _peak_memory_mb()
    return {
        "cell": cell,
        "times": times[settings["warmup"] :],
        "peak_mb": peak,
        "step_extra_mb": peak - before,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _spawn(cell: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in a fresh Python process (so its peak memory is its own)."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(settings["threads"]))
    env["MKL_NUM_THREADS"] = env["OMP_NUM_THREADS"]
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    command = [sys.executable, "-m", "benchmarks.grpo_step", "--cell", cell]
    result = subprocess.run(
        command, input=json.dumps(settings), capture_output=True, text=True, env=env, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"cell {cell} failed (exit {result.returncode}):\n{result.stderr}")
    return dict(json.loads(lines[-1]))


# ----- the driver ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time every cell for ``args.rounds`` rounds; one summary row per cell."""
    if args.batch_size % args.num_generations:
        raise ValueError(
            f"--batch-size {args.batch_size} is not a multiple of --num-generations "
            f"{args.num_generations}: every prompt needs its full group of completions"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = list(args.cells)
    if "trl" not in cells:
        cells.insert(0, "trl")
    for cell in cells:
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
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": args.threads,
        }
        results: dict[str, list[dict[str, Any]]] = {cell: [] for cell in cells}
        for r in range(args.rounds):
            order = cells[r % len(cells) :] + cells[: r % len(cells)]
            for cell in order:
                result = _spawn(cell, settings)
                results[cell].append(result)
                print(
                    f"round {r + 1}/{args.rounds} {cell:<7} "
                    f"{statistics.median(result['times']):.3f} s/step",
                    flush=True,
                )
    return summarize(results, args)


def summarize(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> list[dict]:
    """One row per cell: medians, paired ratios against TRL and against single, targets."""
    medians = {
        cell: [statistics.median(r["times"]) for r in runs] for cell, runs in results.items()
    }

    def ratio(cell: str, reference: str) -> float:
        return statistics.median(a / b for a, b in zip(medians[cell], medians[reference]))

    rows = []
    for cell, runs in results.items():
        pooled = [t for r in runs for t in r["times"]]
        target = TARGETS.get(cell)
        vs = ratio(cell, target[0]) if target else None
        rows.append(
            {
                "cell": cell,
                "side": "trl" if cell == "trl" else "ours",
                "device": runs[0]["device"],
                "median_s": statistics.median(pooled),
                "min_s": min(pooled),
                "ratio_vs_trl": ratio(cell, "trl"),
                "ratio_vs_single": ratio(cell, "single") if "single" in medians else "",
                "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                "step_extra_mb": statistics.median(r["step_extra_mb"] for r in runs),
                "target": f"{cell}/{target[0]} <= {target[1]:g}" if target else "",
                "target_met": "" if vs is None else vs <= target[1],  # type: ignore[index]
                "rounds": len(runs),
                "timed_steps": len(pooled),
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
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        single = "" if r["ratio_vs_single"] == "" else f"{r['ratio_vs_single']:.3f}x"
        mem = f"{r['peak_mb']:.0f}" if cuda else f"{r['peak_mb']:.0f} | {r['step_extra_mb']:.0f}"
        met = {True: "yes", False: "NO", "": ""}[r["target_met"]]
        lines.append(
            f"| {r['cell']} | {r['median_s']:.3f} | {r['ratio_vs_trl']:.3f}x | {single} | {mem} "
            f"| {r['target']} | {met} |"
        )
    r0 = rows[0]
    caption = (
        f"\nB={r0['batch_size']} completions per step ({r0['num_generations']} per prompt), "
        f"{r0['completion_length']} tokens each, loss_type={r0['loss_type']}, "
        f"{r0['rounds']} rounds x {r0['timed_steps'] // r0['rounds']} timed steps per cell on "
        f"{r0['device']}; ratios are medians over rounds of per-round ratios. Memory: "
        + (
            "torch.cuda.max_memory_allocated of the cell's process."
            if cuda
            else "ru_maxrss of the cell's own subprocess (whole process, imports included), "
            "and its growth from before the first step to after the last."
        )
    )
    return "\n".join(lines) + caption


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
    ax_t.set_title("GRPO step time (ratio vs TRL)")
    key = "peak_mb" if rows[0]["device"] == "cuda" else "step_extra_mb"
    ax_m.bar(cells, [r[key] for r in rows], color=colors)
    ax_m.set_ylabel("peak CUDA MB" if key == "peak_mb" else "peak RSS growth over the steps (MB)")
    ax_m.set_title("memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", default="outputs/grpo_step")
    parser.add_argument("--quick", action="store_true", help="1 round, 2 timed steps, tiny batch")
    parser.add_argument("--data-dir", help="IMDb directory (train.jsonl.gz) for the prompts")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per cell and round")
    parser.add_argument("--warmup", type=int, default=3)
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
        args.rounds, args.steps, args.warmup = 1, 2, 1
        args.batch_size, args.num_generations, args.completion_length = 8, 4, 8
        args.vocab_size = 500
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.cell:  # a subprocess of the driver: settings on stdin, result on stdout
        print(json.dumps(run_cell(args.cell, json.load(sys.stdin))))
        return []
    rows = run(args)
    print()
    print(table(rows))
    out = Path(args.out)
    stem = "grpo_step_quick" if args.quick else "grpo_step"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / f"{stem}.png")
    print(f"wrote {out / stem}.csv and .png")
    return rows


if __name__ == "__main__":
    main()
