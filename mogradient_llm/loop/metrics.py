"""Metrics and samples written to ``metrics.jsonl``, ``metrics.csv`` and ``samples.jsonl``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from mogradient_llm.estimators.kl import kl_estimate
from mogradient_llm.inputs.reward_context import RewardLog
from mogradient_llm.loop.batch import RolloutBatch


def policy_stats(batch: RolloutBatch) -> dict[str, float]:
    """The step's entropy from the rollout's log-probs (or, when no forward ran before the
    update, its first forward's), and the per-token KL then filled into ``batch.kl``."""
    logprobs = batch.old_logprobs
    if logprobs is None and batch.live_logprobs is not None:
        # no forward before the update: its first forward's log-probs are the rollout's
        logprobs = batch.live_logprobs if batch.live_logprobs.isfinite().all() else None
        if logprobs is not None and batch.ref_logprobs is not None and batch.kl is None:
            batch.kl = kl_estimate(logprobs, batch.ref_logprobs, "k3") * batch.mask
    if logprobs is None:
        return {}
    return {"objective/entropy": float((-logprobs * batch.mask).sum(1).mean())}


def mean_kl_of(batch: RolloutBatch, accelerator: Accelerator) -> float | None:
    """The per-sequence KL to the reference averaged over every process's batch."""
    if batch.kl is None:
        return None
    local = batch.kl.sum(1).mean().reshape(1).to(accelerator.device)
    return float(accelerator.reduce(local, "mean"))


def reward_metrics_of(log: RewardLog, accelerator: Accelerator) -> dict[str, float]:
    """What the rewards logged with ``log_metric`` this step, averaged over the calls and the
    processes (TRL's way); every rank calls it, skipped step or not."""
    if accelerator.num_processes == 1:
        return log.metrics()

    def reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
        return accelerator.reduce(tensor.to(accelerator.device), "sum")

    return log.metrics(gather_object, reduce_sum)


def samples(
    prompts: list[str],
    completions: list[str],
    scores: torch.Tensor,
    names: list[str],
    extra: dict[str, list[Any]],
) -> list[dict[str, Any]]:
    """One row per completion: its prompt, completion, every objective's score and the columns
    the rewards logged with ``log_extra``."""
    return [
        {
            "prompt": p,
            "completion": c,
            **{n: float(s) for n, s in zip(names, col)},
            **{column: values[i] for column, values in extra.items()},
        }
        for i, (p, c, col) in enumerate(zip(prompts, completions, scores.T))
    ]


class MetricsWriter:
    """Appends one row of metrics per step to JSONL and CSV files in ``output_dir``.

    A new run starts the files afresh; a resumed one (``keep_until`` = the checkpoint's step)
    keeps the rows up to that step and drops those logged after it by the interrupted run.
    """

    def __init__(self, output_dir: str | Path, keep_until: int | None = None):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / "metrics.jsonl"
        self.csv = self.dir / "metrics.csv"
        self.samples = self.dir / "samples.jsonl"
        kept = {p: _rows_until(p, keep_until) for p in (self.jsonl, self.samples)}
        for path in (self.jsonl, self.csv, self.samples):
            path.unlink(missing_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.fields: list[str] = []
        for row in kept[self.jsonl]:
            self.log(row.pop("step"), row)
        with self.samples.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in kept[self.samples])

    def log(self, step: int, stats: dict[str, float]) -> None:
        """Write one row (``step`` first, then the stats)."""
        row = {"step": step, **stats}
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        new_fields = [k for k in row if k not in self.fields]
        if new_fields:  # a column appeared: rewrite the CSV with the union of the columns
            self.fields += new_fields
            with self.csv.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with self.csv.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """Write sample completions with their per-objective scores."""
        with self.samples.open("a") as f:
            for sample in samples:
                f.write(json.dumps({"step": step, **sample}) + "\n")


def _rows_until(path: Path, step: int | None) -> list[dict[str, Any]]:
    """The JSONL rows of ``path`` with ``step`` ≤ ``step`` (none when ``step`` is ``None``)."""
    if step is None or not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= step]
