"""The outer loop of a training run: steps with a progress bar, metrics files and trackers,
checkpoints every ``save_steps`` steps and at the end, resumption from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from accelerate import Accelerator
from tqdm.auto import tqdm

from mogradient_llm.config import MOConfig
from mogradient_llm.loop.metrics import MetricsWriter


class Steppable(Protocol):
    """What :func:`train_steps` drives: a trainer's step, checkpoints and state."""

    config: MOConfig
    accelerator: Accelerator
    names: list[str]
    step_count: int
    last_samples: list[dict[str, Any]]

    def step(self) -> dict[str, float]: ...

    def save(self, directory: str | Path, extra_state: dict[str, Any] | None = None) -> None: ...

    def load_checkpoint(self, checkpoint: str | Path) -> Path: ...


def train_steps(
    trainer: Steppable,
    steps: int | None = None,
    output_dir: str | Path | None = None,
    save_steps: int = 0,
    n_samples: int = 4,
    progress: bool = True,
    extra_state: dict[str, Any] | None = None,
    resume_from: str | Path | None = None,
) -> list[dict[str, float]]:
    """Step ``trainer`` until ``steps`` (default ``config.max_steps``) are done (see
    :meth:`mogradient_llm.loop.trainer.MOTrainer.train`); returns every step's metrics."""
    steps = trainer.config.max_steps if steps is None else steps
    acc = trainer.accelerator
    if acc.is_main_process:  # a launch that silently runs one process shows here
        print(
            f"training on {acc.num_processes} process(es) ({acc.distributed_type.value}, "
            f"{acc.device.type}); {trainer.config.batch_size} completions per process and step",
            flush=True,
        )
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
    writer = None
    if output_dir and acc.is_main_process:
        keep = trainer.step_count if resume_from is not None else None
        writer = MetricsWriter(output_dir, keep_until=keep)
    if acc.log_with:
        acc.init_trackers("mogradient_llm", config=trainer.config.to_dict())
    history = []
    bar = tqdm(
        range(trainer.step_count, steps),
        disable=not progress or not acc.is_main_process,
    )
    for _ in bar:
        stats = trainer.step()
        history.append(stats)
        bar.set_postfix(
            {
                n: f"{stats[f'objective/scores/{n}']:.3f}"
                for n in trainer.names
                if f"objective/scores/{n}" in stats
            }
        )
        acc.log(stats, step=trainer.step_count)
        if writer is not None:
            writer.log(trainer.step_count, stats)
            writer.log_samples(trainer.step_count, trainer.last_samples[:n_samples])
        if output_dir and save_steps and trainer.step_count % save_steps == 0:
            trainer.save(Path(output_dir) / f"checkpoint-{trainer.step_count}", extra_state)
    if output_dir:
        trainer.save(Path(output_dir) / "final", extra_state)
    if acc.log_with:
        acc.end_training()
    return history
