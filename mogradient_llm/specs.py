"""What a run needs besides its algorithm's config: the model, the prompts, the run's outputs,
and a held-out evaluation, as typed records.

The command line fills them (:mod:`mogradient_llm.cli`) and the services take them
(:mod:`mogradient_llm.run`); nothing below the command line sees its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mogradient_llm.config import generation_kwargs

#: Where the IMDb subset is looked for by default (the offline demo, the IMDb benchmark):
#: ``../shared/data/imdb``, beside the repository on this project's machines.
DEFAULT_DATA_DIR = Path("..") / "shared" / "data" / "imdb"
#: ``ModelSpec.policy`` that builds the tiny offline GPT-2 instead of loading one.
TINY = "tiny"


@dataclass(frozen=True)
class ModelSpec:
    """The policy to start from and the KL reference.

    Args:
        policy: a model name or path, or :data:`TINY` (a tiny GPT-2 built and pre-trained here).
        ref_policy: the KL reference (default: a frozen copy of the policy).
        tiny_pretrain_steps: language-model pre-training steps of the tiny policy.
    """

    policy: str = TINY
    ref_policy: str | None = None
    tiny_pretrain_steps: int = 200


@dataclass(frozen=True)
class DataSpec:
    """Where the prompts come from.

    Args:
        dataset: a hub dataset name, or a local ``.jsonl``/``.csv(.gz)`` file or a directory
            with ``{split}.jsonl.gz``; ``None``: generated reviews.
        split: the dataset's split.
        prompt_column: the column used as it is for prompts.
        imdb_prompts: instead cut the ``text_field`` texts into prompts of their first
            ``prompt_min_tokens..prompt_max_tokens`` tokens.
        text_field: the texts' column (``imdb_prompts``, and the tiny policy's pre-training).
        max_prompts: use the first N rows only.
    """

    dataset: str | None = None
    split: str = "train"
    prompt_column: str = "prompt"
    imdb_prompts: bool = False
    text_field: str = "text"
    max_prompts: int | None = None
    prompt_min_tokens: int = 2
    prompt_max_tokens: int = 8


@dataclass(frozen=True)
class RunSpec:
    """One training run: its rewards, model, prompts and output directory.

    Args:
        output_dir: checkpoints (``checkpoint-N/``), ``final/`` and the metrics go here.
        rewards: one ``--reward`` spec per objective (:mod:`mogradient_llm.inputs.reward_specs`).
        model: the policy and reference.
        data: the training prompts.
        save_steps: checkpoint every N steps (0: only ``final/``).
        resume: ``None`` (start afresh), ``True`` (the newest complete checkpoint of
            ``output_dir``) or a checkpoint or run directory.
        progress: show a progress bar.
        cpu: run on CPU even where a GPU is present.
    """

    output_dir: Path
    rewards: tuple[str, ...]
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    save_steps: int = 0
    resume: bool | str | None = None
    progress: bool = True
    cpu: bool = False

    def __post_init__(self) -> None:
        if not self.rewards:
            raise ValueError("a run needs at least one reward (--reward SPEC per objective)")
        if self.save_steps < 0:
            raise ValueError(f"save_steps must be >= 0, got {self.save_steps}")


@dataclass(frozen=True)
class EvalSpec:
    """A held-out evaluation of one policy (``mogradient-llm evaluate``).

    Args:
        checkpoint: a checkpoint directory written by ``train`` (its policy, reference and
            rewards are the defaults of the fields below).
        policy: a model name or path (default: ``checkpoint/policy``).
        ref_policy: the KL reference (default: the one the checkpoint was trained against).
        rewards: ``--reward`` specs (default: the checkpoint's).
        ref_point: the hypervolume reference point (default: each reward's worst value).
        num_prompts: held-out prompts evaluated.
        batch_size: prompts per generation batch.
        seed: seed of the prompts and of the sampling.
        generation: the sampling settings.
        data: the held-out prompts.
        preference: for a conditioned policy (``train --conditioned``), the preference it
            reads before every prompt (one weight per reward, normalised to sum to 1).
    """

    checkpoint: str | None = None
    policy: str | None = None
    ref_policy: str | None = None
    rewards: tuple[str, ...] | None = None
    ref_point: tuple[float, ...] | None = None
    num_prompts: int = 64
    batch_size: int = 32
    seed: int = 0
    generation: dict[str, Any] = field(default_factory=generation_kwargs)
    data: DataSpec = field(default_factory=lambda: DataSpec(split="test"))
    preference: tuple[float, ...] | None = None
