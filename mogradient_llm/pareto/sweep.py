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
held-out KL is at most ``b`` (:func:`mogradient_llm.pareto.front.select_at_kl_budget`, a pure
function; the front's metrics, CSV, plots and tables are in :mod:`mogradient_llm.pareto.front`).

Outputs: ``front.csv``, ``front.png``, ``kl_curve.csv``, ``kl_curve.png`` and ``summary.json``
(hypervolume and spacing of the final front and of each budget's, with the reference point).

Rewarded Soups (Ramé et al. 2023), the cheap front: the runs with one-hot preferences (one per
objective) are trained, and their weights (LoRA adapters, or whole policies) are interpolated
over a lattice of mixing weights (:mod:`mogradient_llm.pareto.soups`); each mix is evaluated like a
run (``soups.csv``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mogradient import Aggregator, get_aggregator, registered
from mogradient.pareto import simplex_lattice
from mogradient_llm.config import MOConfig
from mogradient_llm.inputs.preferences import (  # re-exported: the sweep's preferences
    normalize_preference as normalize_preference,
)
from mogradient_llm.loop.checkpoint import TMP_PREFIX, is_complete, latest_checkpoint
from mogradient_llm.pareto.front import (
    PolicyPoint,
    format_tables,
    front_at_kl_budget,
    front_metrics,
    plot_front,
    plot_kl_curves,
    preference_labels,
    write_front_csv,
    write_kl_curve_csv,
)
from mogradient_llm.pareto.soups import interpolate_policies
from mogradient_llm.specs import TINY, RunSpec

RUNS_DIR = "runs"
#: The settings a run was trained with, next to its checkpoints; a sweep refuses to reuse a
#: run directory trained with other settings.
RUN_RECORD = "sweep_run.json"
EVALS_DIR = "evals"
INITIAL = "initial"
SOUPS_DIR = "soups"
#: The sources and weights a soup was mixed from, next to its ``policy/``.
SOUP_RECORD = "mix.json"


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


# ---------------------------------------------------------------------- preferences


def preference_aware_aggregators() -> list[str]:
    """The registered aggregators that take a ``preference`` (one point of the simplex)."""
    return sorted(name for name, cls in registered().items() if cls.preference_aware)


def check_preference_aware(aggregator: str) -> None:
    """Raise unless ``aggregator`` takes a preference (a sweep varies nothing else)."""
    cls = type(get_aggregator(aggregator))  # an unknown name raises, listing the valid ones
    if not cls.preference_aware:
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


# ---------------------------------------------------------------------- training


def _run_record(run: RunSpec, config: MOConfig) -> dict[str, Any]:
    """What a run was trained with: its config and the run settings that change what it learns
    (not where it writes, whether it resumes, shows progress or runs on CPU)."""
    settings = {
        "rewards": list(run.rewards),
        "model": dataclasses.asdict(run.model),
        "data": dataclasses.asdict(run.data),
        "save_steps": run.save_steps,
    }
    record = {"config": config.to_dict(), "run": settings}
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


def train_run(
    run: RunSpec, config: MOConfig, run_dir: Path, aggregator: Aggregator | None = None
) -> Path:
    """Train one preference's run in ``run_dir`` (a ``train`` output directory) and return its
    ``final/``: cached when complete, resumed from the newest checkpoint when interrupted."""
    from mogradient_llm.run import train

    record = _run_record(run, config)
    _check_record(run_dir, record)
    final = run_dir / "final"
    if is_complete(final):
        print(f"[sweep] {run_dir.name}: cached ({final})", flush=True)
        return final
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_RECORD).write_text(json.dumps(record, indent=1))
    resume = latest_checkpoint(run_dir) is not None
    print(f"[sweep] {run_dir.name}: {'resuming' if resume else 'training'}", flush=True)
    run = dataclasses.replace(run, output_dir=run_dir, resume=True if resume else None)
    return train(run, config, aggregator)


def initial_policy(run: RunSpec, config: MOConfig, out: Path) -> str:
    """The policy every run starts from: the run's, or the tiny offline one, built once into
    ``OUT/initial_policy`` (written aside, then renamed) so that all runs share it."""
    from mogradient_llm.run import save_tiny_policy

    if run.model.policy != TINY:
        return run.model.policy
    path = out / "initial_policy"
    if not (path / "config.json").is_file():
        tmp = out / f"{TMP_PREFIX}initial_policy"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_tiny_policy(run.model, run.data, tmp, config.seed)
        os.replace(tmp, path)
    return str(path)


# ---------------------------------------------------------------------- evaluation


class HeldOutEvaluator:
    """Held-out evaluation of saved policies with one set of prompts, rewards and reference,
    each result cached in a JSON file keyed by the policy's files and the evaluation settings."""

    def __init__(self, run: RunSpec, config: MOConfig, options: SweepOptions):
        from mogradient_llm.policy.evaluation import reference_point
        from mogradient_llm.run import build_rewards, load_lm, load_prompt_rows

        policy = run.model.policy
        ref_model, tokenizer = load_lm(run.model.ref_policy or policy)
        self.ref_model = ref_model.eval()
        self.rewards = build_rewards(run.rewards, tokenizer)
        data = dataclasses.replace(run.data, split=options.eval_split)
        self.prompts = load_prompt_rows(data, tokenizer, options.eval_seed)[
            : options.eval_num_prompts
        ]
        self.options = options
        self.ref_point = reference_point(self.rewards, options.ref_point)
        self.generation = dict(config.generation_kwargs)
        self.settings = {
            "split": options.eval_split,
            "num_prompts": len(self.prompts),
            "seed": options.eval_seed,
            "generation": self.generation,
            "ref_policy": run.model.ref_policy or policy,
        }

    def __call__(self, policy_dir: Path, cache: Path) -> dict[str, Any]:
        """``{"scores": [...], "kl": ...}`` of the policy in ``policy_dir``, cached in ``cache``."""
        from mogradient_llm.policy.evaluation import evaluate_checkpoint

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


def _soups(
    out: Path,
    options: SweepOptions,
    curves: Mapping[str, Sequence[PolicyPoint]],
    evaluate: HeldOutEvaluator,
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


def run_sweep(run: RunSpec, config: MOConfig, options: SweepOptions) -> dict[str, Any]:
    """Train (or reuse) one run per preference in ``run.output_dir/runs/``, evaluate every
    checkpoint on held-out prompts, write the front, the KL curves and ``summary.json``, print
    the tables, and return the summary.

    ``run`` is the runs' template: each one trains it with its own output directory and
    preference; each run's aggregator is built once, here, and handed to its training."""
    from mogradient_llm.inputs.reward_specs import check_reward_specs, default_reference_known
    from mogradient_llm.run import build_aggregator

    if run.resume is not None:
        raise ValueError("sweep resumes interrupted runs by itself; drop --resume")
    if config.conditioned:
        raise ValueError("a conditioned policy is one run: use run_conditioned_sweep")
    check_preference_aware(config.aggregator)
    k = len(run.rewards)
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
            aggregator = build_aggregator(run_config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"preference {preference_label(preference)}: {exc}") from None
        configs[preference_label(preference)] = (preference, run_config, aggregator)
    check_reward_specs(list(run.rewards))
    unknown = [spec for spec in run.rewards if not default_reference_known(spec)]
    if options.ref_point is None and unknown:  # fail now, not after training
        raise ValueError(
            f"the reward(s) {unknown} have no default hypervolume reference (a classifier, or a "
            f"function without an hv_reference attribute); pass --ref-point with one value per "
            f"reward ({k})"
        )
    if options.ref_point is not None and len(options.ref_point) != k:
        raise ValueError(f"--ref-point has {len(options.ref_point)} values for {k} rewards")

    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = dataclasses.replace(run.model, policy=initial_policy(run, config, out))
    run = dataclasses.replace(run, model=model)
    for label, (_, run_config, aggregator) in configs.items():
        train_run(run, run_config, out / RUNS_DIR / label, aggregator)

    evaluate = HeldOutEvaluator(run, config, options)
    ref_point = evaluate.ref_point
    names = [r.name for r in evaluate.rewards]
    initial = evaluate(Path(model.policy), out / EVALS_DIR / f"{INITIAL}.json")
    curves: dict[str, list[PolicyPoint]] = {}
    for label, (preference, _, _) in configs.items():
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
    point_labels, caption = preference_labels(finals, names)
    plot_front(
        out / "front.png",
        finals,
        final_metrics["non_dominated"],
        names,
        ref_point,
        soups,
        start=PolicyPoint(INITIAL, (), 0, INITIAL, tuple(initial["scores"]), initial["kl"]),
        labels=point_labels,
        caption=caption,
    )
    plot_kl_curves(out / "kl_curve.png", curves, names, options.kl_budgets)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(format_tables(finals, summary, names), flush=True)
    return summary
