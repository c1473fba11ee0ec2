"""Checkpoints: what a trainer's checkpoint holds, atomic directories, and finding the last
complete one.

A checkpoint (:func:`save_checkpoint`) holds ``policy/`` (the policy, adapters only with LoRA,
and its tokenizer, ``save_pretrained``), the value heads (PPO), ``resume/``
(``accelerator.save_state``: model, optimizer, scheduler and every rank's RNGs; each rank's
prompt order and, for a conditioned policy, its preference stream; the aggregator's state)
and, written last, ``trainer_state.json`` (step, the estimator's state, the multipliers of
constraints, the config).

A checkpoint is written into ``.tmp-<name>`` next to its final place, every file is fsynced,
and the directory is renamed into place (``os.replace``): a crash leaves either the previous
complete checkpoint or a ``.tmp-*`` directory that nothing ever loads. ``LATEST`` (replaced
atomically too) names the newest complete checkpoint; without it, the complete
``checkpoint-N`` directories (those holding ``STATE_FILE``) are scanned.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from accelerate import Accelerator
from torch import nn

from mogradient import Aggregator
from mogradient_llm.config import MOConfig
from mogradient_llm.estimators import Estimator
from mogradient_llm.inputs.preferences import PreferenceSampler
from mogradient_llm.inputs.sampler import PromptSampler
from mogradient_llm.objectives.loss import MultiObjectiveLoss

if TYPE_CHECKING:
    from transformers.utils import PushToHubMixin

LATEST_FILE = "LATEST"
#: Written last into every checkpoint; a directory without it is never loaded.
STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"
#: ``accelerator.save_state`` output inside a checkpoint: model, optimizer, scheduler, RNGs.
RESUME_DIR = "resume"
#: The aggregator's state (GradVac's EMA, FAMO's logits, a random stream...) inside RESUME_DIR.
AGGREGATOR_FILE = "aggregator.pt"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def temporary_dir(final: Path) -> Path:
    """The (emptied) staging directory for ``final``, in the same parent so rename is atomic."""
    tmp = final.parent / f"{TMP_PREFIX}{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """fsync everything in ``tmp``, then move it to ``final`` (replacing an older one)."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        _fsync(path)
    _fsync(tmp)
    if final.exists():  # rename cannot replace a non-empty directory: move the old one aside
        old = final.parent / f"{TMP_PREFIX}old-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync(final.parent)


def write_latest(output_dir: Path, checkpoint: Path) -> None:
    """Point ``output_dir/LATEST`` at ``checkpoint`` (write, fsync, rename)."""
    tmp = output_dir / f"{TMP_PREFIX}{LATEST_FILE}"
    with tmp.open("w") as f:
        f.write(checkpoint.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output_dir / LATEST_FILE)
    _fsync(output_dir)


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` is a finished checkpoint (renamed into place, state file inside)."""
    return (
        directory.is_dir()
        and not directory.name.startswith(TMP_PREFIX)
        and (directory / STATE_FILE).is_file()
    )


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run's ``output_dir``, or ``None`` if there is none."""
    output_dir = Path(output_dir)
    pointer = output_dir / LATEST_FILE
    if pointer.is_file():
        named = output_dir / pointer.read_text().strip()
        if is_complete(named):
            return named
    found = [
        (int(m.group(1)), path)
        for path in output_dir.glob("checkpoint-*")
        if (m := _CHECKPOINT.fullmatch(path.name)) and is_complete(path)
    ]
    return max(found)[1] if found else None


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint directory from ``path``: a checkpoint itself or a run's ``output_dir``."""
    path = Path(path)
    if is_complete(path):
        return path
    found = latest_checkpoint(path) if path.is_dir() else None
    if found is None:
        raise FileNotFoundError(
            f"no complete checkpoint at {path}; pass a checkpoint directory (one holding "
            f"{STATE_FILE}) or the output directory of a run that saved one (--save-steps)"
        )
    return found


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointable(Protocol):
    """What :func:`save_checkpoint` reads of a trainer and :func:`load_checkpoint` restores."""

    config: MOConfig
    accelerator: Accelerator
    model: nn.Module
    tokenizer: Any
    names: list[str]
    estimator: Estimator
    prompt_sampler: PromptSampler
    preference_sampler: PreferenceSampler | None
    objective: MultiObjectiveLoss
    step_count: int

    @property
    def policy(self) -> nn.Module: ...

    @property
    def aggregator(self) -> Aggregator: ...


def save_checkpoint(
    trainer: Checkpointable, directory: str | Path, extra_state: dict[str, Any] | None = None
) -> None:
    """Write ``trainer``'s checkpoint into ``directory`` atomically; the parent's ``LATEST``
    then points at it. ``extra_state`` goes into ``trainer_state.json``."""
    directory = Path(directory)
    tmp = directory.parent / f"{TMP_PREFIX}{directory.name}"
    acc = trainer.accelerator
    if acc.is_main_process:
        temporary_dir(directory)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / RESUME_DIR))
    sampler = trainer.prompt_sampler.state_dict()
    torch.save(sampler, tmp / RESUME_DIR / f"prompt_sampler_{acc.process_index}.pt")
    if trainer.preference_sampler is not None:
        stream = json.dumps(trainer.preference_sampler.state_dict())
        (tmp / RESUME_DIR / f"preference_sampler_{acc.process_index}.json").write_text(stream)
    if acc.is_main_process:  # every rank decides alike, so one copy of its state serves all
        torch.save(trainer.aggregator.state_dict(), tmp / RESUME_DIR / AGGREGATOR_FILE)
    acc.wait_for_everyone()
    if acc.is_main_process:
        # a transformers model or its peft wrapper: both implement PushToHubMixin's method
        cast("PushToHubMixin", trainer.policy).save_pretrained(tmp / "policy")
        trainer.tokenizer.save_pretrained(tmp / "policy")
        acc.unwrap_model(trainer.model).save_heads(tmp)
        state = {
            "step": trainer.step_count,
            "algorithm": trainer.config.algorithm,
            "objectives": trainer.names,
            "aggregator": repr(trainer.aggregator),
            "estimator": trainer.estimator.state_dict(),
            "objective": trainer.objective.state_dict(),
            "config": trainer.config.to_dict(),
            **(extra_state or {}),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        commit_dir(tmp, directory)
        write_latest(directory.parent, directory)
    acc.wait_for_everyone()


def load_checkpoint(trainer: Checkpointable, checkpoint: str | Path) -> Path:
    """Restore everything :func:`save_checkpoint` wrote into ``trainer``; returns the
    checkpoint directory used (``checkpoint`` or a run's newest)."""
    path = resolve_resume(checkpoint)
    state = json.loads((path / STATE_FILE).read_text())
    if state["objectives"] != trainer.names:
        raise ValueError(
            f"checkpoint {path} was trained on objectives {state['objectives']}, this trainer "
            f"has {trainer.names}; pass the same --reward list to resume"
        )
    algorithm = trainer.config.algorithm
    if state.get("algorithm", "ppo") != algorithm:
        raise ValueError(
            f"checkpoint {path} was trained with --algorithm {state.get('algorithm', 'ppo')}, "
            f"this trainer runs {algorithm}; resume with the same algorithm"
        )
    trainer.accelerator.load_state(str(path / RESUME_DIR))
    rank = trainer.accelerator.process_index
    trainer.prompt_sampler.load_state_dict(
        torch.load(path / RESUME_DIR / f"prompt_sampler_{rank}.pt")
    )
    if trainer.preference_sampler is not None:
        stream = path / RESUME_DIR / f"preference_sampler_{rank}.json"
        if not stream.is_file():
            raise ValueError(
                f"checkpoint {path} holds no preference stream (it was not trained with "
                "--conditioned); resume it without --conditioned"
            )
        trainer.preference_sampler.load_state_dict(json.loads(stream.read_text()))
    # our own pickle (numpy random streams, histories), written by save_checkpoint above
    aggregator_state = torch.load(path / RESUME_DIR / AGGREGATOR_FILE, weights_only=False)
    trainer.aggregator.load_state_dict(aggregator_state)
    trainer.step_count = int(state["step"])
    trainer.estimator.load_state_dict(state["estimator"])
    trainer.objective.load_state_dict(state.get("objective", {}))
    return path
