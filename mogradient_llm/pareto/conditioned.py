"""``mogradient-llm sweep --conditioned``: one preference-conditioned policy, evaluated along a
preference lattice — its front and its controllability.

One run (``OUT/conditioned/``, a normal ``train`` output directory, cached when finished and
resumed when interrupted) trains a policy that reads each prompt's preference
(:mod:`mogradient_llm.inputs.preferences`). Its final checkpoint is then evaluated once per
preference of the lattice on the same held-out prompts and the same random stream (common
random numbers: the points differ by the preference alone): held-out mean reward per objective
and KL to the reference, each point's own KL (the reference reads the same prefixed prompt).

Controllability (:func:`controllability`) says whether the preference steers the policy: per
objective, Spearman's ρ between its preference weight and its achieved reward over the lattice,
and the fraction of pairs of lattice points with different weights on it whose rewards are
ordered as the weights (strictly: a tie in reward counts as not ordered).

Outputs: ``front.csv``, ``front.png``, ``controllability.csv`` and ``summary.json``
(hypervolume, spacing, controllability, training steps and seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mogradient_llm.config import MOConfig
from mogradient_llm.inputs.preferences import PreferenceInjection, conditioning
from mogradient_llm.objectives.conditioned import check_conditionable
from mogradient_llm.pareto.front import (
    PolicyPoint,
    format_tables,
    front_metrics,
    plot_front,
    preference_labels,
    write_front_csv,
)
from mogradient_llm.pareto.sweep import (
    HeldOutEvaluator,
    SweepOptions,
    initial_policy,
    preference_label,
    train_run,
)
from mogradient_llm.specs import RunSpec

CONDITIONED_DIR = "conditioned"


def controllability(
    preferences: np.ndarray | Sequence[Sequence[float]],
    scores: np.ndarray | Sequence[Sequence[float]],
    names: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per objective ``i``: ``spearman``, Spearman's ρ between the weights ``preferences[:, i]``
    and the rewards ``scores[:, i]`` (``scipy.stats.spearmanr``, ties ranked by their average;
    NaN when either is constant), and ``pairs_ordered``, the fraction of point pairs with
    different weights on ``i`` whose rewards on ``i`` differ in the same direction (NaN when no
    pair has different weights). ``"mean"`` averages each over the objectives."""
    from scipy.stats import spearmanr

    w = np.asarray(preferences, dtype=np.float64)
    r = np.asarray(scores, dtype=np.float64)
    if w.shape != r.shape or w.ndim != 2 or w.shape[1] != len(names):
        raise ValueError(
            f"need preferences and scores of the same shape [points, {len(names)}], got "
            f"{w.shape} and {r.shape}"
        )
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        constant = np.ptp(w[:, i]) == 0 or np.ptp(r[:, i]) == 0
        rho = math.nan if constant else float(spearmanr(w[:, i], r[:, i]).statistic)
        pairs = [(a, b) for a, b in itertools.combinations(range(len(w)), 2) if w[a, i] != w[b, i]]
        ordered = sum((w[a, i] - w[b, i]) * (r[a, i] - r[b, i]) > 0 for a, b in pairs)
        fraction = ordered / len(pairs) if pairs else math.nan
        out[name] = {"spearman": rho, "pairs_ordered": fraction}
    out["mean"] = {
        key: float(np.mean([out[n][key] for n in names])) for key in ("spearman", "pairs_ordered")
    }
    return out


def write_controllability_csv(path: Path, values: dict[str, dict[str, float]]) -> None:
    """One row per objective (and ``mean``): Spearman's ρ and the fraction of ordered pairs."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["objective", "spearman", "pairs_ordered"])
        for name, row in values.items():
            writer.writerow([name, row["spearman"], row["pairs_ordered"]])


def evaluate_conditioned(
    policy_dir: Path,
    evaluate: HeldOutEvaluator,
    preferences: Sequence[Sequence[float]],
    injection: PreferenceInjection | None = None,
    step: int = 0,
) -> list[PolicyPoint]:
    """The saved conditioned policy in ``policy_dir`` under each preference: held-out mean
    rewards and KL (``evaluate``'s prompts, rewards, reference, sampling), each preference
    sampled after the same ``torch.manual_seed``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mogradient_llm.policy.evaluation import evaluate_policy

    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    points = []
    for preference in preferences:
        torch.manual_seed(evaluate.options.eval_seed)
        result = evaluate_policy(
            model,
            tokenizer,
            evaluate.rewards,
            evaluate.prompts,
            evaluate.generation,
            ref_model=evaluate.ref_model,
            ref_point=evaluate.ref_point,
            batch_size=evaluate.options.eval_batch_size,
            condition=conditioning(preference, injection),
        )
        scores = tuple(float(result[f"eval/scores/{r.name}"]) for r in evaluate.rewards)
        label, kl = preference_label(preference), float(result["eval/kl"])
        points.append(PolicyPoint(label, tuple(preference), step, "final", scores, kl))
    return points


def _training_cost(run_dir: Path) -> dict[str, float]:
    """Training steps and the seconds they took (``time/step_s`` summed over ``metrics.jsonl``)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return {
        "train_steps": float(len(rows)),
        "train_seconds": float(sum(row.get("time/step_s", 0.0) for row in rows)),
    }


def run_conditioned_sweep(run: RunSpec, config: MOConfig, options: SweepOptions) -> dict[str, Any]:
    """Train (or reuse) one conditioned policy in ``run.output_dir/conditioned/``, evaluate it
    at every preference of ``options.preferences`` on held-out prompts, write the front and
    the controllability, print the table, and return the summary."""
    from mogradient_llm.inputs.reward_specs import check_reward_specs
    from mogradient_llm.run import build_aggregator

    if not config.conditioned:
        raise ValueError("run_conditioned_sweep trains a conditioned policy: set conditioned")
    if run.resume is not None:
        raise ValueError("sweep resumes an interrupted run by itself; drop --resume")
    if options.kl_budgets or options.rewarded_soups:
        raise ValueError(
            "--kl-budgets and --rewarded-soups compare runs trained one per preference; with "
            "--conditioned every point is the same policy (each point's KL is in front.csv): "
            "run them in a sweep without --conditioned"
        )
    k = len(run.rewards)
    bad = [list(p) for p in options.preferences if len(p) != k]
    if bad:
        raise ValueError(f"preferences {bad} do not have one entry per --reward ({k})")
    if options.ref_point is not None and len(options.ref_point) != k:
        raise ValueError(f"--ref-point has {len(options.ref_point)} values for {k} rewards")
    check_reward_specs(list(run.rewards))
    aggregator = build_aggregator(config)
    check_conditionable(aggregator, bool(config.constraints))
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = dataclasses.replace(run.model, policy=initial_policy(run, config, out))
    run = dataclasses.replace(run, model=model)
    run_dir = out / CONDITIONED_DIR
    final = train_run(run, config, run_dir, aggregator)

    evaluate = HeldOutEvaluator(run, config, options)
    names = [r.name for r in evaluate.rewards]
    step = int(json.loads((final / "trainer_state.json").read_text())["step"])
    points = evaluate_conditioned(final / "policy", evaluate, options.preferences, step=step)
    metrics = front_metrics(points, evaluate.ref_point)
    control = controllability([p.preference for p in points], [p.scores for p in points], names)
    summary: dict[str, Any] = {
        "objectives": names,
        "ref_point": list(evaluate.ref_point),
        "algorithm": config.algorithm,
        "aggregator": config.aggregator,
        "conditioned": True,
        "eval": evaluate.settings,
        "final": {**metrics, "runs": [p.run for p in points]},
        "kl_budgets": [],
        "controllability": control,
        "compute": _training_cost(run_dir),
    }
    write_front_csv(out / "front.csv", points, metrics["non_dominated"], names)
    write_controllability_csv(out / "controllability.csv", control)
    labels, caption = preference_labels(points, names)
    plot_front(
        out / "front.png",
        points,
        metrics["non_dominated"],
        names,
        evaluate.ref_point,
        title="conditioned policy's front (one policy, one point per preference)",
        labels=labels,
        caption=caption,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [format_tables(points, summary, names)]
    lines += [
        f"controllability of {name}: Spearman rho {v['spearman']:.3f}, pairs ordered "
        f"{v['pairs_ordered']:.3f}"
        for name, v in control.items()
    ]
    print("\n".join(lines), flush=True)
    return summary
