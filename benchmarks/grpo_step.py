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
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.tables import read_csv, write_csv

#: Cells in table order; ``trl`` is the reference.
CELLS = ("trl", "linear", "single", "pama", "mgda")
#: cell -> (aggregator, extra config fields) for our side; a cell named ``ppo-*`` runs PPO
#: (one value head per objective) instead of GRPO. ``upgrad`` and ``ppo-linear`` are cells of
#: the device check (``benchmarks.device_check``), not of this table.
OURS: dict[str, tuple[str, dict[str, Any]]] = {
    "linear": ("linear", {"reward_weights": [1.0, 0.5]}),
    "single": ("linear", {}),
    "pama": ("pama", {}),
    "mgda": ("mgda", {"gramian_level": "features"}),
    "upgrad": ("upgrad", {"gramian_level": "parameters", "parameter_gramian": "layers"}),
    "ppo-linear": ("linear", {"reward_weights": [1.0, 0.5], "num_ppo_epochs": 1}),
}
#: cell -> (the cell it is compared with, the largest ratio that meets the target).
TARGETS: dict[str, tuple[str, float]] = {
    "linear": ("trl", 1.0),
    "pama": ("single", 1.05),
    "mgda": ("single", 1.3),
}
REWARD_WEIGHTS = (1.0, 0.5)
#: The policy's EOS logit is -EOS_LOGIT whatever the input (see :func:`build_policy`).
EOS_LOGIT = 100.0
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


#: Token counts of the completions scored in this process (both trainers pass
#: ``completion_ids``); a cell checks them against ``--completion-length``.
COMPLETION_TOKENS: list[int] = []


def length_reward(
    completions: Sequence[str], completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any
) -> list[float]:
    """Words in the completion over 20, capped at 1: rewards longer answers."""
    if completion_ids is not None:
        COMPLETION_TOKENS.extend(len(ids) for ids in completion_ids)
    return [min(len(text.split()) / 20.0, 1.0) for text in completions]


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """VADER compound score of the completion, in [-1, 1]: rewards positive text."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in completions]


def vowel_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The share of vowels among the completion's letters, in [0, 1]: a second reward that
    needs no library (for machines without ``vaderSentiment``)."""
    out = []
    for text in completions:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / max(len(letters), 1))
    return out


#: ``settings["second_reward"]`` -> the second reward function (the first is the length).
SECOND_REWARDS = {"sentiment": sentiment_reward, "vowels": vowel_reward}


def reward_functions(settings: dict[str, Any]) -> list[Any]:
    """The two reward functions of a run: the length and ``settings["second_reward"]``."""
    return [length_reward, SECOND_REWARDS[settings.get("second_reward", "sentiment")]]


def weighted_reward(completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The two rewards summed with ``REWARD_WEIGHTS``, as one reward (single-objective GRPO)."""
    a, b = REWARD_WEIGHTS
    lengths = length_reward(completions, **kwargs)
    sentiments = sentiment_reward(completions)
    return [a * x + b * y for x, y in zip(lengths, sentiments)]


# ----- the shared setup ----------------------------------------------------------------------


def build_policy(
    path: Path,
    n_layer: int,
    n_embd: int,
    vocab_size: int,
    *,
    n_head: int = 4,
    n_positions: int = 128,
    model_vocab: int | None = None,
) -> Path:
    """Save a randomly initialised GPT-2 whose EOS is never sampled, and its tokenizer, to
    ``path`` (both sides load it).

    Our trainer refuses ``min_new_tokens`` (it changes the sampled distribution), so equal
    completion lengths come from the policy instead: the EOS logit is pinned at ``-EOS_LOGIT``
    for every input. The head is tied to the embeddings, so the EOS row is set to
    ``EOS_LOGIT`` on one coordinate and 0 elsewhere, and the final layer norm outputs -1 on that
    coordinate (gain 0, bias -1); the other tokens' logits only gain a fixed offset each.
    ``model_vocab``: the embedding padded to that many rows (GPT-2's 50257 for its 124M shape)
    beyond the tokenizer's, each a copy of the EOS row, so that none is ever sampled either.
    """
    import torch

    from mogradient_llm.policy.models import build_tiny_policy

    model, tokenizer = build_tiny_policy(
        pretrain_steps=0,
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
    )
    if model_vocab is not None and model_vocab > len(tokenizer):
        model.resize_token_embeddings(model_vocab)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[tokenizer.eos_token_id] = 0.0
        embedding[tokenizer.eos_token_id, 0] = EOS_LOGIT
        embedding[len(tokenizer) :] = embedding[tokenizer.eos_token_id]
        model.transformer.ln_f.weight[0] = 0.0
        model.transformer.ln_f.bias[0] = -1.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_prompts(data_dir: str | None, policy: Path, n: int) -> list[str]:
    """``n`` prompts: the first 2-8 tokens of IMDb reviews from ``data_dir`` (its
    ``train.jsonl.gz`` or ``train.jsonl``), or the built-in short prompts repeated."""
    if data_dir is None:
        return [DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)] for i in range(n)]
    from transformers import AutoTokenizer

    from mogradient_llm.inputs.prompts import load_prompts as load

    tokenizer = AutoTokenizer.from_pretrained(policy)
    prompts = load(data_dir, tokenizer, split="train", limit=4 * n)[:n]
    if len(prompts) < n:
        raise ValueError(
            f"{data_dir} gave {len(prompts)} prompts, {n} are needed: point --data-dir at a "
            "directory with a train.jsonl(.gz) of reviews longer than 200 characters"
        )
    return prompts


def _generation(length: int) -> dict[str, Any]:
    """Sample ``length`` new tokens from softmax(logits) (the same kwargs on both sides)."""
    return {
        "max_new_tokens": length,
        "do_sample": True,
        "top_k": 0,
        "top_p": 1.0,
        "temperature": 1.0,
    }


# ----- the cells: one step at a time ---------------------------------------------------------


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TRLCell:
    """TRL's ``GRPOTrainer.train()`` in a thread that pauses after every step, so that its
    steps can be interleaved with ours one by one; :meth:`step` runs one and returns its seconds
    (from ``on_step_begin`` to ``on_step_end``: generation, scoring and the update)."""

    def __init__(self, settings: dict[str, Any]):
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from transformers.trainer_callback import PrinterCallback
        from trl import GRPOConfig, GRPOTrainer

        self.max_steps = settings["warmup"] + settings["steps"]
        self.times: list[float] = []
        self.start = 0.0
        self.go = threading.Event()
        self.done = threading.Event()
        self.closing = False
        self.error: BaseException | None = None
        cell = self

        class PauseAfterStep(TrainerCallback):  # type: ignore[misc]
            """Times each step, then holds the training thread until the next step is asked."""

            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                cell.start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                _synchronize()
                cell.times.append(time.perf_counter() - cell.start)
                cell.done.set()
                cell.go.wait()
                cell.go.clear()
                if cell.closing:  # closed before its last step (a time budget ran out)
                    control.should_training_stop = True

        generation = _generation(settings["completion_length"])
        config = GRPOConfig(
            output_dir=settings["tmp"],
            per_device_train_batch_size=settings["batch_size"],
            gradient_accumulation_steps=1,
            num_generations=settings["num_generations"],
            num_iterations=1,
            max_completion_length=generation["max_new_tokens"],
            temperature=generation["temperature"],
            top_k=generation["top_k"],
            top_p=generation["top_p"],
            learning_rate=1e-5,
            beta=0.0,
            epsilon=0.2,
            loss_type=LOSS_TYPE,
            scale_rewards="group",
            reward_weights=list(REWARD_WEIGHTS),
            max_steps=self.max_steps,
            logging_steps=self.max_steps,
            save_strategy="no",
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            bf16=settings.get("bf16", False),
            gradient_checkpointing=False,
            disable_dropout=True,
            disable_tqdm=True,
            seed=0,
        )
        # TRL types reward functions as returning list[float | None]; ours return list[float].
        reward_funcs: list[Any] = reward_functions(settings)
        self.trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(settings["policy"]),
            processing_class=AutoTokenizer.from_pretrained(settings["policy"]),
            reward_funcs=reward_funcs,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": settings["prompts"]}),
            callbacks=[PauseAfterStep()],
        )
        self.trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        self.thread = threading.Thread(target=self._train, daemon=True)

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread by step()
            self.error = error
        finally:
            self.done.set()

    def step(self) -> float:
        if len(self.times) >= self.max_steps:
            raise RuntimeError(f"TRL's trainer was built for {self.max_steps} steps; no more")
        if self.thread.ident is None:
            self.thread.start()
        else:
            self.go.set()
        self.done.wait()
        self.done.clear()
        if self.error is not None:
            raise RuntimeError("TRL's GRPOTrainer failed") from self.error
        return self.times[-1]

    def close(self) -> None:
        """Let ``train()`` finish (logging after the last step, or stopping early when fewer
        steps were asked for) and end its thread."""
        if self.thread.is_alive():
            self.closing = True
            self.go.set()
            self.thread.join()


class OurCell:
    """Our ``MOTrainer`` with the cell's aggregator; :meth:`step` runs one ``trainer.step()``
    (generation, scoring and the update) and returns its seconds. ``settings["bf16"]``: under
    accelerate's bf16 autocast (float32 weights), as TRL's ``bf16=True``."""

    def __init__(self, cell: str, settings: dict[str, Any]):
        from accelerate import Accelerator
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mogradient_llm import MOGRPOConfig, MOPPOConfig, MOTrainer

        aggregator, extra = OURS[cell]
        common = {
            "learning_rate": 1e-5,
            "batch_size": settings["batch_size"],
            "mini_batch_size": settings["batch_size"],
            "aggregator": aggregator,
            "noon": False,
            "seed": 0,
            "generation_kwargs": _generation(settings["completion_length"]),
        }
        config: Any
        if cell.startswith("ppo"):
            config = MOPPOConfig(**common, **extra)
        else:
            config = MOGRPOConfig(
                **common,
                num_generations=settings["num_generations"],
                num_iterations=1,
                beta=0.0,
                epsilon=0.2,
                loss_type=LOSS_TYPE,
                scale_rewards="group",
                **extra,
            )
        rewards = [weighted_reward] if cell == "single" else reward_functions(settings)
        precision = "bf16" if settings.get("bf16") else "no"
        self.trainer = MOTrainer(
            config,
            AutoModelForCausalLM.from_pretrained(settings["policy"]),
            AutoTokenizer.from_pretrained(settings["policy"]),
            rewards=rewards,
            prompts=settings["prompts"],
            accelerator=Accelerator(mixed_precision=precision, cpu=not _cuda()),
        )

    def step(self) -> float:
        start = time.perf_counter()
        stats = self.trainer.step()
        _synchronize()
        seconds = time.perf_counter() - start
        if stats.get("train/skipped"):
            raise RuntimeError(f"our trainer skipped a step (non-finite values): {stats}")
        return seconds

    def close(self) -> None:
        """Nothing to release."""


Cell = TRLCell | OurCell


def make_cell(cell: str, settings: dict[str, Any]) -> Cell:
    return TRLCell(settings) if cell == "trl" else OurCell(cell, settings)


def check_lengths(length: int) -> None:
    """Raise unless every completion scored so far in this process had ``length`` tokens."""
    lengths = set(COMPLETION_TOKENS)
    if lengths != {length}:
        raise RuntimeError(
            f"completions of {sorted(lengths)} tokens were scored, not all {length}: the cells "
            "did unequal generation work, so their timings are not comparable (did the policy "
            "sample EOS? see build_policy)"
        )


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
    cuda = _cuda()
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

    device = "cuda" if _cuda() else "cpu"
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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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
