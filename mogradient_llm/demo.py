"""Offline demo: a tiny GPT-2 trained with PAMA on sentiment (VADER) and length.

Builds a byte-level BPE tokenizer and a ``GPT2Config(n_layer=2, n_embd=64)`` model locally,
pre-trains it briefly on the IMDb subset (or on reviews generated here when the subset is not
found), then runs multi-objective PPO for a time budget and reports held-out mean rewards per
objective before and after, with a plot of both objectives over training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.config import DEMO_GENERATION, MOConfig
from mogradient_llm.estimators import estimator_class
from mogradient_llm.inputs.builtin_rewards import length, vader
from mogradient_llm.inputs.prompts import imdb_prompts, load_text_dataset
from mogradient_llm.inputs.rewards import Reward
from mogradient_llm.loop.metrics import MetricsWriter
from mogradient_llm.loop.trainer import MOTrainer
from mogradient_llm.policy.evaluation import evaluate_policy
from mogradient_llm.policy.models import build_tiny_policy, synthetic_reviews
from mogradient_llm.specs import DEFAULT_DATA_DIR

#: The demo's sampling: the default settings with longer completions.
GENERATION = DEMO_GENERATION


def demo_texts(data_dir: str | Path | None) -> tuple[list[str], list[str], str]:
    """Train and held-out texts: the IMDb subset if found, else generated reviews."""
    path = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    if (path / "train.jsonl.gz").is_file() and (path / "test.jsonl.gz").is_file():
        train = load_text_dataset(path, "train")["text"]
        test = load_text_dataset(path, "test")["text"]
        return train, test, f"IMDb subset at {path}"
    if data_dir:
        raise FileNotFoundError(f"no train.jsonl.gz and test.jsonl.gz in {path}")
    return synthetic_reviews(5000, seed=0), synthetic_reviews(500, seed=1), "generated reviews"


def build_demo_policy(texts: list[str], pretrain_steps: int, seed: int) -> tuple[Any, Any]:
    """The demo's tokenizer and ``GPT2Config(n_layer=2, n_embd=64, n_head=4)``, pre-trained."""
    return build_tiny_policy(
        texts,
        pretrain_steps=pretrain_steps,
        vocab_size=4000,
        seed=seed,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_positions=128,
    )


def demo_rewards() -> list[Reward]:
    """VADER sentiment and the paper's length reward (in characters)."""
    return [vader(), length(unit="chars")]


def demo_config(aggregator: str, seed: int, algorithm: str = "ppo", **overrides: Any) -> MOConfig:
    """The demo's config of ``algorithm``: its config class's :meth:`~MOConfig.demo` preset."""
    return estimator_class(algorithm).config_class.demo(aggregator, seed, **overrides)


def plot_history(history: list[dict[str, float]], names: list[str], path: Path) -> None:
    """One panel per objective: the training batch mean and its moving average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5))
    window = max(1, len(history) // 10)
    for ax, name in zip(axes, names):
        values = torch.tensor([h[f"objective/scores/{name}"] for h in history])
        smooth = values.unfold(0, window, 1).mean(1) if len(values) >= window else values
        ax.plot(range(1, len(values) + 1), values, alpha=0.3, label="batch mean")
        ax.plot(range(window, window + len(smooth)), smooth, label=f"moving mean ({window})")
        ax.set_xlabel("PPO step")
        ax.set_title(f"objective/scores/{name}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(
    data_dir: str | Path | None = None,
    output_dir: str | Path = "outputs/demo",
    minutes: float = 3.0,
    aggregator: str = "pama",
    seed: int = 0,
    pretrain_steps: int = 400,
    eval_prompts: int = 128,
    algorithm: str = "ppo",
) -> dict[str, Any]:
    """Run the demo; prints and returns before/after mean rewards (see the module docstring)."""
    start = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_texts, test_texts, source = demo_texts(data_dir)
    print(f"text: {source} ({len(train_texts)} train / {len(test_texts)} held-out)")
    model, tokenizer = build_demo_policy(train_texts, pretrain_steps, seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"tiny GPT-2: {n_params / 1e6:.2f}M parameters, pre-trained {pretrain_steps} steps "
        f"({time.perf_counter() - start:.0f} s)"
    )
    prompts = imdb_prompts(train_texts, tokenizer, 2, 8, min_chars=0, seed=seed)
    held_out = imdb_prompts(test_texts, tokenizer, 2, 8, min_chars=0, seed=seed + 1)
    held_out = held_out[:eval_prompts]
    rewards = demo_rewards()
    names = [r.name for r in rewards]

    def evaluate(policy: torch.nn.Module) -> dict[str, float]:
        torch.manual_seed(seed + 123)
        result = evaluate_policy(policy, tokenizer, rewards, held_out, GENERATION)
        return {name: result[f"eval/scores/{name}"] for name in names}

    before = evaluate(model)
    config = demo_config(aggregator, seed, algorithm)
    trainer = MOTrainer(config, model, tokenizer, rewards, prompts)
    writer = MetricsWriter(output_dir)
    history = []
    train_start = time.perf_counter()
    while time.perf_counter() - train_start < 60 * minutes:
        stats = trainer.step()
        history.append(stats)
        writer.log(trainer.step_count, stats)
        writer.log_samples(trainer.step_count, trainer.last_samples[:2])
        if trainer.step_count % 10 == 0:
            scores = ", ".join(f"{n}={stats[f'objective/scores/{n}']:.3f}" for n in names)
            kl = f", kl={stats['objective/kl']:.2f}" if "objective/kl" in stats else ""
            print(f"step {trainer.step_count}: {scores}{kl}")
    train_seconds = time.perf_counter() - train_start
    after = evaluate(trainer.policy)
    plot_history(history, names, output_dir / "rewards.png")
    trainer.save(output_dir / "final")
    summary = {
        "source": source,
        "algorithm": algorithm,
        "aggregator": aggregator,
        "steps": trainer.step_count,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
        "held_out_prompts": len(held_out),
        "before": before,
        "after": after,
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\nheld-out mean reward ({len(held_out)} prompts), {trainer.step_count} "
        f"{algorithm.upper()} steps "
        f"in {train_seconds:.0f} s:"
    )
    print(f"{'objective':<10}{'before':>10}{'after':>10}{'change':>10}")
    for name in names:
        print(
            f"{name:<10}{before[name]:>10.3f}{after[name]:>10.3f}"
            f"{after[name] - before[name]:>+10.3f}"
        )
    print(f"plot: {output_dir / 'rewards.png'}; total wall time {summary['wall_seconds']:.0f} s")
    return summary
