"""``mogradient-llm sweep``: one policy per preference, their front on held-out prompts, and the
front at matched KL budgets.

A preference-aware aggregator (``linear``, ``tchebycheff``, ``stch``, ``epo``, ``upgrad``, ...)
reaches one point of the trade-off per preference vector, so a front is a set of runs that
differ only in ``aggregator_kwargs["preference"]``. Each run is a normal ``train`` output
directory, ``OUT/runs/<preference>/``: a finished run (a complete ``final/``) is not trained
again, and an interrupted one resumes from its newest checkpoint with the train machinery.

Every checkpoint along a run (``--save-steps``), the final policy and the shared initial policy
are evaluated on held-out prompts (mean reward per objective, KL to the reference), and cached
next to the checkpoint. The front is compared at matched KL, so that no method wins by drifting
further from the reference: for a budget ``b``, each run contributes the last checkpoint whose
held-out KL is at most ``b`` (:func:`select_at_kl_budget`, a pure function).

Outputs: ``front.csv``, ``front.png``, ``kl_curve.csv``, ``kl_curve.png`` and ``summary.json``
(hypervolume and spacing of the final front and of each budget's, with the reference point).

Rewarded Soups (Ramé et al. 2023), the cheap front: the runs with one-hot preferences (one per
objective) are trained, and their weights (LoRA adapters, or whole policies) are interpolated
over a lattice of mixing weights; each mix is evaluated like a run (``soups.csv``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import inspect
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mogradient import get_aggregator, registered
from mogradient.pareto import hypervolume, is_non_dominated, simplex_lattice, spacing
from mogradient_llm.checkpoint import TMP_PREFIX, is_complete, latest_checkpoint
from mogradient_llm.config import MOConfig

RUNS_DIR = "runs"
#: The settings a run was trained with, next to its checkpoints; a sweep refuses to reuse a
#: run directory trained with other settings.
RUN_RECORD = "sweep_run.json"
EVALS_DIR = "evals"
INITIAL = "initial"
SOUPS_DIR = "soups"
#: The sources and weights a soup was mixed from, next to its ``policy/``.
SOUP_RECORD = "mix.json"
#: Run arguments that do not change what a run learns (left out of :data:`RUN_RECORD`).
_NOT_RECORDED = frozenset({"output_dir", "resume", "no_progress", "cpu", "config"})


@dataclass(frozen=True)
class SweepOptions:
    """What ``sweep`` adds to ``train``'s flags.

    Args:
        preferences: one preference vector per run (normalised to sum to 1).
        kl_budgets: KL budgets (nats, held-out, per sequence) at which the front is also reported.
        eval_split: the held-out split of the prompts (``--dataset``'s, or generated reviews).
        eval_num_prompts: held-out prompts per evaluation.
        eval_batch_size: prompts per generation batch in evaluation.
        eval_seed: seed of the held-out prompts and of the sampling (the same for every
            checkpoint).
        ref_point: hypervolume reference point (default: each reward's worst value).
        rewarded_soups: ``0``, or the number of mixing weights (a lattice over the simplex) at
            which the one-hot runs' weights are interpolated (Rewarded Soups).
    """

    preferences: tuple[tuple[float, ...], ...]
    kl_budgets: tuple[float, ...] = ()
    eval_split: str = "test"
    eval_num_prompts: int = 64
    eval_batch_size: int = 32
    eval_seed: int = 0
    ref_point: tuple[float, ...] | None = None
    rewarded_soups: int = 0

    def __post_init__(self) -> None:
        if not self.preferences:
            raise ValueError(
                "a sweep needs at least one preference (--preferences N or --preference)"
            )
        labels = [preference_label(p) for p in self.preferences]
        if len(set(labels)) != len(labels):
            raise ValueError(f"the preferences repeat one another: {labels}; give each once")
        if any(not b > 0 for b in self.kl_budgets):
            raise ValueError(f"KL budgets must be positive, got {list(self.kl_budgets)}")
        if self.rewarded_soups == 1 or self.rewarded_soups < 0:
            raise ValueError(
                f"rewarded_soups must be 0 (off) or at least 2 mixing weights, got "
                f"{self.rewarded_soups}"
            )
        if self.eval_num_prompts <= 0 or self.eval_batch_size <= 0:
            raise ValueError(
                f"eval_num_prompts and eval_batch_size must be positive, got "
                f"{self.eval_num_prompts}, {self.eval_batch_size}"
            )


@dataclass(frozen=True)
class PolicyPoint:
    """One evaluated policy of a run: held-out mean rewards and KL at a training step.

    ``checkpoint`` is ``"initial"`` (step 0, the policy every run starts from),
    ``"checkpoint-N"`` or ``"final"``."""

    run: str
    preference: tuple[float, ...]
    step: int
    checkpoint: str
    scores: tuple[float, ...]
    kl: float


# ---------------------------------------------------------------------- preferences


def preference_aware_aggregators() -> list[str]:
    """The registered aggregators that take a ``preference`` (one point of the simplex)."""
    return sorted(
        name
        for name, cls in registered().items()
        if "preference" in inspect.signature(cls).parameters
    )


def check_preference_aware(aggregator: str) -> None:
    """Raise unless ``aggregator`` takes a preference (a sweep varies nothing else)."""
    cls = type(get_aggregator(aggregator))  # an unknown name raises, listing the valid ones
    if "preference" not in inspect.signature(cls).parameters:
        raise ValueError(
            f"sweep trains one policy per preference, and aggregator {aggregator!r} takes no "
            f"preference, so every run would learn the same thing; use a preference-aware "
            f"aggregator: {', '.join(preference_aware_aggregators())}"
        )


def preference_lattice(n_objectives: int, n_points: int) -> list[tuple[float, ...]]:
    """Evenly spread preferences on the simplex: ``n_points`` of them for two objectives
    (``[0, 1], [0.25, 0.75], ...`` for 5), the smallest Das–Dennis lattice with at least
    ``n_points`` for more."""
    if n_points < 2:
        raise ValueError(
            f"a preference lattice needs at least 2 points, got {n_points}; for one run give "
            "--preference a,b"
        )
    return [tuple(float(x) for x in row) for row in simplex_lattice(n_objectives, n_points)]


def normalize_preference(values: Sequence[float], n_objectives: int) -> tuple[float, ...]:
    """``values`` divided by their sum; raises on a wrong length, negative or all-zero values."""
    p = np.asarray(values, dtype=np.float64)
    if p.shape != (n_objectives,):
        raise ValueError(
            f"preference {list(values)} has {p.size} entries for {n_objectives} rewards; "
            "give one entry per --reward"
        )
    if not np.isfinite(p).all() or (p < 0).any() or not p.sum() > 0:
        raise ValueError(f"preference {list(values)} must be non-negative and not all zero")
    return tuple(float(x) for x in p / p.sum())


def preference_label(preference: Sequence[float]) -> str:
    """The run directory name of a preference: ``0.25_0.75``."""
    return "_".join(f"{x:.6g}" for x in preference)


def config_for_preference(config: MOConfig, preference: Sequence[float]) -> MOConfig:
    """``config`` with ``aggregator_kwargs["preference"] = preference``; refuses a config that
    already fixes the preference (the sweep sets it per run)."""
    if config.reward_weights is not None or "preference" in config.aggregator_kwargs:
        raise ValueError(
            "sweep sets each run's preference itself; drop --reward-weights and "
            "aggregator_kwargs['preference'], and give --preferences N or --preference a,b"
        )
    kwargs = {**config.aggregator_kwargs, "preference": list(preference)}
    return dataclasses.replace(config, aggregator_kwargs=kwargs)


# ---------------------------------------------------------------------- matched KL


def select_at_kl_budget(curve: Sequence[PolicyPoint], budget: float) -> PolicyPoint | None:
    """The last point of a run's ``curve`` (the largest step) whose KL is at most ``budget``;
    ``None`` when every point exceeds it. Later checkpoints are preferred over lower KL: the
    question is how far training gets within the budget."""
    within = [p for p in curve if p.kl <= budget]
    return max(within, key=lambda p: p.step) if within else None


def front_at_kl_budget(
    curves: Mapping[str, Sequence[PolicyPoint]], budget: float
) -> list[PolicyPoint]:
    """One point per run (:func:`select_at_kl_budget`); runs with no point within the budget
    are left out."""
    chosen = (select_at_kl_budget(curve, budget) for curve in curves.values())
    return [p for p in chosen if p is not None]


def front_metrics(points: Sequence[PolicyPoint], ref_point: Sequence[float]) -> dict[str, Any]:
    """Hypervolume (maximised rewards above ``ref_point``), spacing (``None`` for fewer than
    two points) and the non-dominated mask of ``points``."""
    if not points:
        return {"hypervolume": 0.0, "spacing": None, "non_dominated": [], "n_points": 0}
    scores = np.array([p.scores for p in points], dtype=np.float64)
    mask = is_non_dominated(scores, maximize=True)
    return {
        "hypervolume": hypervolume(scores, ref_point, maximize=True),
        "spacing": spacing(scores) if len(points) > 1 else None,
        "non_dominated": [bool(m) for m in mask],
        "n_points": len(points),
    }


# ---------------------------------------------------------------------- training


def _run_record(args: argparse.Namespace, config: MOConfig) -> dict[str, Any]:
    """What a run was trained with: its config and the run flags that change what it learns."""
    fields = {f.name for f in dataclasses.fields(config)}
    run = {
        k: v for k, v in sorted(vars(args).items()) if k not in fields and k not in _NOT_RECORDED
    }
    record = {"config": config.to_dict(), "run": run}
    return dict(json.loads(json.dumps(record, default=str)))


def _check_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Raise if ``run_dir`` was trained with other settings than ``record``."""
    path = run_dir / RUN_RECORD
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    differ = sorted(
        f"{part}.{key}"
        for part in ("config", "run")
        for key in set(old.get(part, {})) | set(record[part])
        if old.get(part, {}).get(key) != record[part].get(key)
    )
    if differ:
        raise ValueError(
            f"{run_dir} was trained with other settings ({', '.join(differ)} differ); give a "
            f"new --output-dir, or remove {run_dir} to train it again"
        )


def train_run(args: argparse.Namespace, config: MOConfig, run_dir: Path) -> Path:
    """Train one preference's run in ``run_dir`` (a ``train`` output directory) and return its
    ``final/``: cached when complete, resumed from the newest checkpoint when interrupted."""
    from mogradient_llm.cli import train

    record = _run_record(args, config)
    _check_record(run_dir, record)
    final = run_dir / "final"
    if is_complete(final):
        print(f"[sweep] {run_dir.name}: cached ({final})", flush=True)
        return final
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_RECORD).write_text(json.dumps(record, indent=1))
    run_args = copy.copy(args)
    run_args.output_dir = str(run_dir)
    run_args.resume = True if latest_checkpoint(run_dir) is not None else None
    verb = "resuming" if run_args.resume else "training"
    print(f"[sweep] {run_dir.name}: {verb}", flush=True)
    return train(run_args, config)


def _initial_policy(args: argparse.Namespace, config: MOConfig, out: Path) -> str:
    """The policy every run starts from: ``--policy``, or the tiny offline one, built once into
    ``OUT/initial_policy`` (written aside, then renamed) so that all runs share it."""
    from mogradient_llm.cli import TINY, _save_tiny_policy

    if args.policy != TINY:
        return str(args.policy)
    path = out / "initial_policy"
    if not (path / "config.json").is_file():
        tmp = out / f"{TMP_PREFIX}initial_policy"
        if tmp.exists():
            shutil.rmtree(tmp)
        _save_tiny_policy(args, str(tmp), config.seed)
        os.replace(tmp, path)
    return str(path)


# ---------------------------------------------------------------------- evaluation


class _Evaluator:
    """Held-out evaluation of saved policies with one set of prompts, rewards and reference,
    each result cached in a JSON file keyed by the policy's files and the evaluation settings."""

    def __init__(
        self,
        args: argparse.Namespace,
        config: MOConfig,
        options: SweepOptions,
        policy: str,
    ):
        from mogradient_llm.cli import _load_lm, _prompts
        from mogradient_llm.data import prompt_text
        from mogradient_llm.evaluate import reference_point
        from mogradient_llm.rewards import build_reward

        ref_model, tokenizer = _load_lm(args.ref_policy or policy)
        self.ref_model = ref_model.eval()
        self.rewards = [build_reward(spec, tokenizer) for spec in args.reward]
        eval_args = copy.copy(args)
        eval_args.split = options.eval_split
        rows = _prompts(eval_args, tokenizer, None, options.eval_seed)[: options.eval_num_prompts]
        self.prompts = [prompt_text(row["prompt"], tokenizer) for row in rows]
        self.options = options
        self.ref_point = reference_point(self.rewards, options.ref_point)
        self.generation = dict(config.generation_kwargs)
        self.settings = {
            "split": options.eval_split,
            "num_prompts": len(self.prompts),
            "seed": options.eval_seed,
            "generation": self.generation,
            "ref_policy": args.ref_policy or policy,
        }

    def __call__(self, policy_dir: Path, cache: Path) -> dict[str, Any]:
        """``{"scores": [...], "kl": ...}`` of the policy in ``policy_dir``, cached in ``cache``."""
        from mogradient_llm.evaluate import evaluate_checkpoint

        key = {"policy": str(policy_dir), "mtime_ns": _stamp(policy_dir), **self.settings}
        if cache.is_file():
            stored = json.loads(cache.read_text())
            if stored.get("key") == json.loads(json.dumps(key)):
                return dict(stored["result"])
        result = evaluate_checkpoint(
            policy_dir,
            self.rewards,
            self.prompts,
            self.generation,
            ref_model=self.ref_model,
            ref_point=self.ref_point,
            batch_size=self.options.eval_batch_size,
            seed=self.options.eval_seed,
        )
        value = {
            "scores": [result[f"eval/scores/{r.name}"] for r in self.rewards],
            "kl": result["eval/kl"],
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.parent / f"{TMP_PREFIX}{cache.name}"
        tmp.write_text(json.dumps({"key": key, "result": value}, indent=1))
        os.replace(tmp, cache)
        return value


def _stamp(directory: Path) -> int:
    """The newest modification time of the files under ``directory`` (a policy's version)."""
    return max(p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file())


def _checkpoints(run_dir: Path) -> list[tuple[int, str, Path]]:
    """``(step, name, policy dir)`` of a run's complete checkpoints and ``final``, by step; a
    ``checkpoint-N`` at the final step is the final policy and is left out."""
    final = run_dir / "final"
    final_step = int(json.loads((final / "trainer_state.json").read_text())["step"])
    found = [(final_step, "final", final / "policy")]
    for path in run_dir.glob("checkpoint-*"):
        if is_complete(path):
            step = int(json.loads((path / "trainer_state.json").read_text())["step"])
            if step < final_step:
                found.append((step, path.name, path / "policy"))
    return sorted(found)


# ---------------------------------------------------------------------- Rewarded Soups


def one_hot_preferences(n_objectives: int) -> list[tuple[float, ...]]:
    """The preferences of the runs that Rewarded Soups mixes: one objective each."""
    return [tuple(float(i == j) for j in range(n_objectives)) for i in range(n_objectives)]


def interpolate_policies(sources: Sequence[Path], weights: Sequence[float], target: Path) -> None:
    """Write ``Σᵢ wᵢ θᵢ`` of saved policies of one architecture into ``target`` (Rewarded
    Soups, Ramé et al. 2023): every floating-point tensor of their ``*.safetensors`` files is
    interpolated — with LoRA the adapters' A and B matrices, as the paper does — and the other
    files (configs, tokenizer) are copied from the first source. Written aside, then renamed."""
    from safetensors.torch import load_file, save_file

    if len(sources) != len(weights) or not sources:
        raise ValueError(f"got {len(sources)} policies and {len(weights)} weights; give one each")
    first = Path(sources[0])
    files = sorted(p.name for p in first.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {first}; pass saved policies")
    tmp = target.parent / f"{TMP_PREFIX}{target.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(first, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for name in files:
        tensors = [load_file(Path(source) / name) for source in sources]
        for source, other in zip(sources[1:], tensors[1:]):
            if set(other) != set(tensors[0]) or any(
                other[key].shape != value.shape for key, value in tensors[0].items()
            ):
                raise ValueError(
                    f"{Path(source) / name} does not hold the same tensors as {first / name}; "
                    "Rewarded Soups mixes policies of one architecture (and one LoRA config)"
                )
        mixed = {}
        for key, value in tensors[0].items():
            if not value.is_floating_point():
                mixed[key] = value
                continue
            total = torch.zeros_like(value, dtype=torch.float64)
            for weight, other in zip(weights, tensors):
                total += weight * other[key].to(torch.float64)
            mixed[key] = total.to(value.dtype)
        save_file(mixed, str(tmp / name), metadata={"format": "pt"})
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _soups(
    out: Path,
    options: SweepOptions,
    curves: Mapping[str, Sequence[PolicyPoint]],
    evaluate: _Evaluator,
) -> list[PolicyPoint]:
    """Mix the one-hot runs' final policies at a lattice of weights and evaluate each mix
    (mixes and evaluations cached in ``OUT/soups/<weights>/``)."""
    k = len(evaluate.rewards)
    labels = [preference_label(p) for p in one_hot_preferences(k)]
    sources = [out / RUNS_DIR / label / "final" / "policy" for label in labels]
    step = max(curves[label][-1].step for label in labels)
    points = []
    for weights in preference_lattice(k, options.rewarded_soups):
        label = preference_label(weights)
        directory = out / SOUPS_DIR / label
        record = {
            "sources": [str(s) for s in sources],
            "stamps": [_stamp(s) for s in sources],
            "weights": list(weights),
        }
        record_path = directory / SOUP_RECORD
        if not record_path.is_file() or json.loads(record_path.read_text()) != record:
            directory.mkdir(parents=True, exist_ok=True)
            interpolate_policies(sources, weights, directory / "policy")
            record_path.write_text(json.dumps(record, indent=1))
        value = evaluate(directory / "policy", directory / "eval.json")
        points.append(
            PolicyPoint(f"soup {label}", weights, step, "soup", tuple(value["scores"]), value["kl"])
        )
    return points


# ---------------------------------------------------------------------- the sweep


def run_sweep(args: argparse.Namespace, config: MOConfig, options: SweepOptions) -> dict[str, Any]:
    """Train (or reuse) one run per preference in ``args.output_dir/runs/``, evaluate every
    checkpoint on held-out prompts, write the front, the KL curves and ``summary.json``, print
    the tables, and return the summary."""
    from mogradient_llm.aggregation import build_aggregator
    from mogradient_llm.rewards import parse_reward_spec

    if args.resume is not None:
        raise ValueError("sweep resumes interrupted runs by itself; drop --resume")
    check_preference_aware(config.aggregator)
    k = len(args.reward)
    preferences = list(options.preferences)
    if options.rewarded_soups:  # the runs it mixes, unless the sweep has them already
        labels = {preference_label(p) for p in preferences}
        preferences += [p for p in one_hot_preferences(k) if preference_label(p) not in labels]
    configs = {}
    for preference in preferences:
        if len(preference) != k:
            raise ValueError(
                f"preference {list(preference)} has {len(preference)} entries for {k} rewards; "
                "give one entry per --reward"
            )
        run_config = config_for_preference(config, preference)
        try:
            build_aggregator(run_config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"preference {preference_label(preference)}: {exc}") from None
        configs[preference_label(preference)] = (preference, run_config)
    kinds = [parse_reward_spec(spec)[0] for spec in args.reward]
    if options.ref_point is None and "classifier" in kinds:  # fail now, not after training
        raise ValueError(
            "a classifier reward has no default hypervolume reference; pass --ref-point with "
            f"one value per reward ({k})"
        )
    if options.ref_point is not None and len(options.ref_point) != k:
        raise ValueError(f"--ref-point has {len(options.ref_point)} values for {k} rewards")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_args = copy.copy(args)
    run_args.policy = _initial_policy(args, config, out)
    for label, (_, run_config) in configs.items():
        train_run(run_args, run_config, out / RUNS_DIR / label)

    evaluate = _Evaluator(run_args, config, options, run_args.policy)
    ref_point = evaluate.ref_point
    names = [r.name for r in evaluate.rewards]
    initial = evaluate(Path(run_args.policy), out / EVALS_DIR / f"{INITIAL}.json")
    curves: dict[str, list[PolicyPoint]] = {}
    for label, (preference, _) in configs.items():
        run_dir = out / RUNS_DIR / label
        curve = [
            PolicyPoint(label, preference, 0, INITIAL, tuple(initial["scores"]), initial["kl"])
        ]
        for step, name, policy_dir in _checkpoints(run_dir):
            value = evaluate(policy_dir, run_dir / EVALS_DIR / f"{name}.json")
            curve.append(
                PolicyPoint(label, preference, step, name, tuple(value["scores"]), value["kl"])
            )
        curves[label] = curve

    finals = [curve[-1] for curve in curves.values()]
    final_metrics = front_metrics(finals, ref_point)
    budgets = []
    for budget in options.kl_budgets:
        chosen = front_at_kl_budget(curves, budget)
        metrics = front_metrics(chosen, ref_point)
        budgets.append(
            {
                "kl_budget": budget,
                **metrics,
                "selected": {
                    p.run: {"step": p.step, "checkpoint": p.checkpoint, "kl": p.kl} for p in chosen
                },
            }
        )
    soups = _soups(out, options, curves, evaluate) if options.rewarded_soups else []
    summary = {
        "objectives": names,
        "ref_point": list(ref_point),
        "algorithm": config.algorithm,
        "aggregator": config.aggregator,
        "eval": evaluate.settings,
        "final": {**final_metrics, "runs": [p.run for p in finals]},
        "kl_budgets": budgets,
    }
    if soups:
        soup_metrics = front_metrics(soups, ref_point)
        summary["rewarded_soups"] = {**soup_metrics, "runs": [p.run for p in soups]}
        write_front_csv(out / "soups.csv", soups, soup_metrics["non_dominated"], names)
    write_front_csv(out / "front.csv", finals, final_metrics["non_dominated"], names)
    write_kl_curve_csv(out / "kl_curve.csv", curves, names)
    plot_front(out / "front.png", finals, final_metrics["non_dominated"], names, ref_point, soups)
    plot_kl_curves(out / "kl_curve.png", curves, names, options.kl_budgets)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(format_tables(finals, summary, names), flush=True)
    return summary


# ---------------------------------------------------------------------- outputs


def write_front_csv(
    path: Path, points: Sequence[PolicyPoint], non_dominated: Sequence[bool], names: Sequence[str]
) -> None:
    """One row per run: its preference, held-out mean rewards, KL and non-dominated flag."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "run",
                *(f"preference/{n}" for n in names),
                "step",
                *(f"score/{n}" for n in names),
                "kl",
                "non_dominated",
            ]
        )
        for point, flag in zip(points, non_dominated):
            writer.writerow(
                [point.run, *point.preference, point.step, *point.scores, point.kl, int(flag)]
            )


def write_kl_curve_csv(
    path: Path, curves: Mapping[str, Sequence[PolicyPoint]], names: Sequence[str]
) -> None:
    """Every evaluated checkpoint of every run: held-out rewards against KL."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "checkpoint", "kl", *(f"score/{n}" for n in names)])
        for curve in curves.values():
            for p in curve:
                writer.writerow([p.run, p.step, p.checkpoint, p.kl, *p.scores])


def _staircase(scores: np.ndarray, ref_point: Sequence[float]) -> np.ndarray:
    """The outline of the region that 2-D maximised ``scores`` dominate above ``ref_point``."""
    r0, r1 = ref_point
    inside = scores[(scores[:, 0] > r0) & (scores[:, 1] > r1)]
    inside = inside[np.argsort(-inside[:, 0])]
    vertices = [(r0, r1)]
    best_y = r1
    for x, y in inside:
        if y <= best_y:  # dominated: adds nothing to the region
            continue
        vertices += [(x, best_y), (x, y)]
        best_y = y
    vertices.append((r0, best_y))
    return np.array(vertices)


def plot_front(
    path: Path,
    points: Sequence[PolicyPoint],
    non_dominated: Sequence[bool],
    names: Sequence[str],
    ref_point: Sequence[float],
    soups: Sequence[PolicyPoint] = (),
) -> None:
    """The runs' held-out rewards, the non-dominated ones marked; with two objectives the
    dominated (hypervolume) region is shaded, with more each pair of objectives is drawn.
    ``soups`` (Rewarded Soups' mixes) are drawn as a dashed line of open diamonds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.array([p.scores for p in points], dtype=np.float64)
    flags = np.array(non_dominated, dtype=bool)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    ref_text = "reference point (" + ", ".join(f"{r:g}" for r in ref_point) + ")"
    for ax, (i, j) in zip(axes[0], pairs):
        if len(names) == 2:
            outline = _staircase(scores, ref_point)
            ax.fill(
                outline[:, 0],
                outline[:, 1],
                color="tab:blue",
                alpha=0.15,
                label=f"hypervolume region, {ref_text}",
            )
            ax.scatter([ref_point[0]], [ref_point[1]], marker="x", color="black")
        ax.scatter(scores[~flags, i], scores[~flags, j], color="tab:gray", label="dominated")
        ax.scatter(
            scores[flags, i],
            scores[flags, j],
            color="tab:red",
            marker="*",
            s=120,
            label="non-dominated",
        )
        if soups:
            mixes = np.array([p.scores for p in soups], dtype=np.float64)
            ax.plot(
                mixes[:, i],
                mixes[:, j],
                linestyle="--",
                marker="D",
                fillstyle="none",
                color="tab:green",
                label="Rewarded Soups (weights interpolated)",
            )
        for p, (x, y) in zip(points, scores[:, [i, j]]):
            ax.annotate(p.run, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(f"held-out mean {names[i]}")
        ax.set_ylabel(f"held-out mean {names[j]}")
        ax.legend(fontsize=7, loc="lower left")
    title = "sweep front (final policies)"
    if len(names) > 2:
        title += f"; hypervolume over {len(names)} objectives, {ref_text}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_kl_curves(
    path: Path,
    curves: Mapping[str, Sequence[PolicyPoint]],
    names: Sequence[str],
    kl_budgets: Sequence[float],
) -> None:
    """One panel per objective: held-out mean reward against held-out KL along each run, the
    KL budgets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        for label, curve in curves.items():
            ax.plot([p.kl for p in curve], [p.scores[i] for p in curve], marker="o", label=label)
        for budget in kl_budgets:
            ax.axvline(budget, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlabel("held-out KL to the reference (nats / sequence)")
        ax.set_ylabel(f"held-out mean {name}")
        ax.legend(fontsize=7, title="preference", title_fontsize=7)
    fig.suptitle("rewards against KL along training (dashed: KL budgets)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_tables(
    finals: Sequence[PolicyPoint], summary: Mapping[str, Any], names: Sequence[str]
) -> str:
    """The final front per run, then the hypervolume at each KL budget with the checkpoint
    each run contributes (``run@step``; a run with none within the budget is left out)."""
    header = ["preference", *names, "KL", "step", "non-dominated"]
    rows = [
        [p.run, *(f"{s:.4f}" for s in p.scores), f"{p.kl:.3f}", str(p.step), "*" if flag else ""]
        for p, flag in zip(finals, summary["final"]["non_dominated"])
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    ref = ", ".join(f"{r:g}" for r in summary["ref_point"])
    final = summary["final"]
    lines.append(
        f"final front: hypervolume {_number(final['hypervolume'])}, spacing "
        f"{_number(final['spacing'])} (reference point {ref})"
    )
    if "rewarded_soups" in summary:
        soups = summary["rewarded_soups"]
        lines.append(
            f"Rewarded Soups ({soups['n_points']} mixes of the one-hot runs): hypervolume "
            f"{_number(soups['hypervolume'])}, spacing {_number(soups['spacing'])} (soups.csv)"
        )
    for entry in summary["kl_budgets"]:
        chosen = " ".join(f"{run}@{v['step']}" for run, v in entry["selected"].items())
        lines.append(
            f"KL <= {entry['kl_budget']:g}: hypervolume {_number(entry['hypervolume'])}, spacing "
            f"{_number(entry['spacing'])}; last checkpoint within the budget: {chosen or 'none'}"
        )
    return "\n".join(lines)
