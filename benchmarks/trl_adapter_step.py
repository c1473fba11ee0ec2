"""Seconds per step of the TRL adapter (``MOGRPOTrainer``) against TRL's own ``GRPOTrainer`` in
the same process, on two tiny GPT-2 sizes.

Cells: ``trl`` (``GRPOTrainer`` with ``reward_weights``), ``trl-control`` (a second, identical
``GRPOTrainer``: how far from 1 a ratio of two equal steps lands on this machine), ``linear``
(the adapter at the advantage level: the same step), ``upgrad-features`` and
``upgrad-parameters`` (the Gramian methods' two levels). Every trainer gets the same fixed
completions (its ``_generate`` returns them: generation is TRL's in every cell and would only
add noise), so a step is
``_generate_and_score_completions`` (rewards, advantages) plus ``_compute_loss`` and its
backward. The cells run interleaved, one step each per round; a ratio is the median over rounds
of the cell's step over ``trl``'s step of the same round. Memory: on CUDA the peak allocated
during a step; on the CPU the size of what the Gramian holds at once (computed, not measured,
``held_mb``): the slopes and one head tile (features) or the k×P Jacobian (parameters).

    python -m benchmarks.trl_adapter_step [--rounds 20] [--output-dir docs/results/trl_adapter_step]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.tables import read_csv, write_csv

CELLS: dict[str, dict[str, Any]] = {
    "trl": {},
    "trl-control": {},  # a second GRPOTrainer: the noise floor of a ratio on this machine
    "linear": {"aggregator": "linear"},
    "upgrad-features": {"aggregator": "upgrad", "gramian_level": "features"},
    "upgrad-parameters": {"aggregator": "upgrad", "gramian_level": "parameters"},
}
#: name → (n_layer, n_embd)
SIZES = {"gpt2-2x32": (2, 32), "gpt2-4x128": (4, 128)}
PROMPTS, G, TOKENS, PROMPT_TOKENS = 4, 4, 32, 8
WEIGHTS = [1.0, 0.5]
K = len(WEIGHTS)


def length_reward(completions: list[str], **kwargs: Any) -> list[float | None]:
    return [len(c) / 10.0 for c in completions]


def vowel_reward(completions: list[str], **kwargs: Any) -> list[float | None]:
    return [float(sum(ch in "aeiou" for ch in c)) for c in completions]


def build_policy(path: Path, n_layer: int, n_embd: int) -> Path:
    """A tiny GPT-2 (untrained) and a locally trained tokenizer, saved to ``path``."""
    from mogradient_llm.policy.models import synthetic_reviews, tiny_gpt2, train_tokenizer

    tokenizer = train_tokenizer(synthetic_reviews(300, seed=0), vocab_size=400)
    model = tiny_gpt2(tokenizer, n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=64, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_trainer(cell: str, policy: Path) -> Any:
    """The cell's trainer on ``policy``, generating the fixed completions."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from mogradient_llm.integrations.trl import MOGRPOConfig, MOGRPOTrainer

    config_class, trainer_class = (
        (GRPOConfig, GRPOTrainer) if cell.startswith("trl") else (MOGRPOConfig, MOGRPOTrainer)
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args = config_class(
        output_dir=tempfile.mkdtemp(prefix="trl-adapter-step-"),
        per_device_train_batch_size=PROMPTS * G,
        num_generations=G,
        max_completion_length=TOKENS,
        reward_weights=None if cell.startswith("upgrad") else WEIGHTS,
        use_cpu=device == "cpu",
        bf16=False,
        report_to="none",
        disable_dropout=True,
        seed=0,
        **CELLS[cell],
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    trainer: Any  # a TRL trainer whose generation is replaced below
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = trainer_class(
            model=str(policy),
            processing_class=tokenizer,
            reward_funcs=[length_reward, vowel_reward],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": ["x"] * PROMPTS}),
        )
    gen = torch.Generator().manual_seed(0)
    vocab = len(tokenizer)
    prompt_ids = [torch.randint(1, vocab, (PROMPT_TOKENS,), generator=gen).tolist()] * (PROMPTS * G)
    ids = [torch.randint(1, vocab, (TOKENS,), generator=gen).tolist() for _ in range(PROMPTS * G)]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    trainer._generate = lambda p: (prompt_ids, ids, None, texts, None, {}, None, None)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def step(trainer: Any) -> tuple[float, float]:
    """One step's seconds and, on CUDA, its peak allocated MB (0 on the CPU)."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    batch = trainer._generate_and_score_completions([{"prompt": "x"}] * (PROMPTS * G))
    trainer.model.zero_grad(set_to_none=True)
    trainer._compute_loss(trainer.model, batch).backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0


def held_mb(cell: str, trainer: Any, n_embd: int) -> float:
    """What the Gramian holds at once, in MB (computed). Features level (factorised through the
    LM head): the k float64 slopes ``[k, B, C]`` and one float64 tile of the head pass (its
    logits, exponentiated in place, ``[tokens, columns]``, three ``[tokens, d]`` rows and the
    head's ``[columns, d]``).
    Parameters level (factorised through the LM head too): the k×P float32 Jacobian, the k
    float64 cotangents ``[k, tokens, d]`` and the head's float64 gradients ``[k, V, d]``."""
    if cell.endswith("features"):
        from mogradient_llm.objectives.logprob_gramian import tile_shape

        completion_tokens = PROMPTS * G * TOKENS
        rows, columns = tile_shape(trainer.model.config.vocab_size, n_embd)
        rows = min(rows, completion_tokens)
        tile = rows * (columns + 3 * n_embd) + columns * n_embd
        return 8 * (K * completion_tokens + tile) / 2**20
    if cell.endswith("parameters"):
        count = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        vocab, completion_tokens = trainer.model.config.vocab_size, PROMPTS * G * TOKENS
        head = 8 * K * (completion_tokens + vocab) * n_embd
        return (K * count * 4 + head) / 2**20
    return 0.0


def run(rounds: int, warmup: int = 2) -> list[dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    rows = []
    for size, (n_layer, n_embd) in SIZES.items():
        policy = build_policy(Path(tempfile.mkdtemp(prefix=f"{size}-")), n_layer, n_embd)
        trainers = {cell: make_trainer(cell, policy) for cell in CELLS}
        times: dict[str, list[float]] = {cell: [] for cell in CELLS}
        peaks: dict[str, float] = {cell: 0.0 for cell in CELLS}
        for r in range(warmup + rounds):
            order = list(CELLS)[r % len(CELLS) :] + list(CELLS)[: r % len(CELLS)]
            for cell in order:
                seconds, peak = step(trainers[cell])
                if r >= warmup:
                    times[cell].append(seconds)
                    peaks[cell] = max(peaks[cell], peak)
        for cell, cell_times in times.items():
            ratios = [a / b for a, b in zip(cell_times, times["trl"])]
            rows.append(
                {
                    "size": size,
                    "cell": cell,
                    "device": "cuda" if torch.cuda.is_available() else "cpu",
                    "median_s": statistics.median(cell_times),
                    "ratio_vs_trl": statistics.median(ratios),
                    "peak_mb": peaks[cell],
                    "gramian_held_mb": held_mb(cell, trainers[cell], n_embd),
                    "rounds": rounds,
                    "completions": PROMPTS * G,
                    "tokens": TOKENS,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table with its caption."""
    cuda = rows[0]["device"] == "cuda"
    memory = "peak MB (CUDA)" if cuda else "Gramian holds (MB, computed)"
    lines = [f"| policy | cell | s/step (median) | vs TRL | {memory} |", "|---" * 5 + "|"]
    for r in rows:
        mb = r["peak_mb"] if cuda else r["gramian_held_mb"]
        lines.append(
            f"| {r['size']} | {r['cell']} | {r['median_s']:.4f} | {r['ratio_vs_trl']:.3f}x "
            f"| {mb:.2f} |"
        )
    r0 = rows[0]
    caption = (
        f"\n\n{r0['completions']} completions of {r0['tokens']} tokens per step, 2 rewards, "
        f"{r0['rounds']} paired rounds on {r0['device']} (a ratio is the median over rounds of "
        "the cell's step over TRL's in the same round)."
    )
    return "\n".join(lines) + caption


def docs_table(results: Path, name: str) -> str:
    """The docs' table ``trl_adapter_step`` from its CSV, as printed."""
    path = results / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"no TRL adapter results {path}: NAME is a CSV's stem")
    return table(read_csv(path))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--output-dir", default="outputs/trl_adapter_step")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = run(args.rounds)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "trl_adapter_step.csv")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
