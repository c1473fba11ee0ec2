"""What every estimator's training shares: :class:`MOConfig`, the loop's hyper-parameters.

Each estimator adds its own fields in its module (``MOPPOConfig`` in
:mod:`mogradient_llm.estimators.ppo`, ``MOGRPOConfig`` in ``...grpo``, ``MORLOOConfig`` in
``...rloo``). Every field carries its help text in ``metadata["help"]``: the command line is
generated from these dataclasses (:mod:`mogradient_llm.cli`), so the defaults live here only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from mogradient_llm.objectives.constraints import Constraint

GRAMIAN_LEVELS = ("parameters", "features")
PARAMETER_GRAMIANS = ("auto", "layers", "jacobian")

Config = TypeVar("Config", bound="MOConfig")


def _help(text: str, **metadata: Any) -> dict[str, Any]:
    return {"help": text, **metadata}


#: The sampling settings of every command and config unless told otherwise (plain sampling from
#: the policy's distribution; temperature 1 by ``transformers``' default); the one place they live.
DEFAULT_GENERATION: dict[str, Any] = {
    "max_new_tokens": 32,
    "do_sample": True,
    "top_k": 0,
    "top_p": 1.0,
}


def generation_kwargs(
    max_new_tokens: int | None = None, temperature: float | None = None
) -> dict[str, Any]:
    """:data:`DEFAULT_GENERATION` with the given length and temperature (``None``: the default)."""
    values = dict(DEFAULT_GENERATION)
    if max_new_tokens is not None:
        values["max_new_tokens"] = max_new_tokens
    if temperature is not None:
        values["temperature"] = temperature
    return values


#: The offline demo's sampling (``mogradient-llm demo``, also the IMDb benchmark's): the default
#: settings with longer completions.
DEMO_GENERATION: dict[str, Any] = generation_kwargs(max_new_tokens=48)
#: The demo's settings that every algorithm shares; each config's ``demo_preset`` adds its own.
DEMO_SETTINGS: dict[str, Any] = {"learning_rate": 3e-4, "batch_size": 32, "mini_batch_size": 16}


def _default_generation_kwargs() -> dict[str, Any]:
    return dict(DEFAULT_GENERATION)


@dataclass
class MOConfig:
    """The loop's hyper-parameters (prompt batches, updates, aggregation, sampling, LoRA, logging).

    The multi-objective ones:

    * ``aggregator`` / ``aggregator_kwargs``: a name of the ``mogradient`` registry and its
      hyper-parameters; the loop picks the level from the aggregator's kind (loss weightings
      scalarise the advantages where the estimator says, PAMA combines them after the Noon clip,
      Gramian methods weigh the policy losses' gradients).
    * ``reward_weights``: TRL's weights of the weighted sum of rewards; they are the preference
      of a preference-aware aggregator (``linear`` above all) unless ``aggregator_kwargs`` gives
      one.
    * ``normalize_weights``: rescale the loss weights to Σw = 1 before the update (default), so
      the step's scale does not depend on the aggregator; ``agg/weight_sum`` logs the raw sum.
      GRPO and RLOO rescale a loss weighting's weights to TRL's sum instead, ``Σ reward_weights``
      (k without them), so that ``linear`` weighs the rewards exactly as TRL.
    * ``noon``: clip every objective's advantage at zero before aggregating (Noon PPO).
    * ``conditioned`` (``--conditioned``): train one preference-conditioned policy: every
      prompt gets a preference drawn from a Dirichlet (every concentration
      ``preference_concentration``), written before the prompt, and the loss weighs its
      completions by it (:mod:`mogradient_llm.inputs.preferences`,
      :mod:`mogradient_llm.objectives.conditioned`).
    * ``constraints`` (``--constraint 'sentiment>=0.8'``): objectives kept above / below a
      threshold by a Lagrange multiplier each (Safe RLHF), updated after every step by dual
      ascent with step ``constraint_lr`` (PID Lagrangian with ``constraint_kp``/``_kd``); the
      aggregator combines the other objectives.
    * ``gramian_level``: ``"parameters"`` (the policy-loss gradients over all trainable
      parameters) or ``"features"`` (over the last hidden states: MGDA-UB).
    * ``parameter_gramian``: ``"auto"`` (default: the k×d Jacobian while it fits the memory
      budget of :func:`mogradient.gramian.path.choose_parameter_path`, else layer by layer),
      ``"layers"`` (layer by layer in one backward, never holding the k×d Jacobian; with one
      micro-batch) or ``"jacobian"`` (always used with accumulation).
    """

    #: The ``--algorithm`` this config trains (set by each estimator's subclass).
    algorithm: ClassVar[str] = ""
    #: Old field names that are refused, each with what replaced it (no silent aliases).
    renamed: ClassVar[dict[str, str]] = {}
    #: This algorithm's part of the offline demo's settings (``mogradient-llm demo``, also the
    #: IMDb benchmark's): :meth:`demo` adds it to the shared :data:`DEMO_SETTINGS`.
    demo_preset: ClassVar[dict[str, Any]] = {}
    #: Its part of the smallest settings that train in a few seconds (tests, quick checks).
    tiny_preset: ClassVar[dict[str, Any]] = {}

    def __new__(cls: type[Config], *args: Any, **kwargs: Any) -> Config:
        refuse_renamed(cls, kwargs)
        return object.__new__(cls)

    learning_rate: float = field(default=1.41e-5, metadata=_help("AdamW learning rate"))
    weight_decay: float = field(
        default=0.0,
        metadata=_help("AdamW weight decay, not on biases and norms (transformers' default: 0)"),
    )
    lr_scheduler_type: str = field(
        default="constant",
        metadata=_help(
            "learning-rate schedule (transformers.get_scheduler names: linear, cosine…)"
        ),
    )
    warmup_steps: int = field(default=0, metadata=_help("optimiser steps of linear warm-up"))
    warmup_ratio: float = field(
        default=0.0, metadata=_help("warm-up as a fraction of all optimiser steps (if no steps)")
    )
    max_steps: int = field(
        default=100,
        metadata=_help("training steps (rollout + updates) in all", aliases=["--steps"]),
    )
    batch_size: int = field(
        default=32, metadata=_help("completions per step and process (prompts × num_generations)")
    )
    mini_batch_size: int = field(
        default=8, metadata=_help("completions per optimiser step (a multiple of the micro-batch)")
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("micro-batches per minibatch, accumulated into one update")
    )
    num_generations: int = field(
        default=1, metadata=_help("completions sampled per prompt (a group)")
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata=_help("clip the gradient norm (None: no clipping)")
    )
    seed: int = field(default=0, metadata=_help("random seed (each process adds its rank)"))
    aggregator: str = field(
        default="pama", metadata=_help("mogradient aggregator (pama, mgda, upgrad, linear, …)")
    )
    aggregator_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            'the aggregator\'s hyper-parameters, a JSON object: \'{"granularity": "batch"}\''
        ),
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata=_help("weights of the rewards' weighted sum (the aggregator's preference)"),
    )
    normalize_weights: bool = field(
        default=True, metadata=_help("rescale the aggregator's weights to sum to 1")
    )
    noon: bool = field(default=True, metadata=_help("clip every advantage at 0 (Noon)"))
    conditioned: bool = field(
        default=False,
        metadata=_help(
            "train one preference-conditioned policy: a preference drawn per prompt, written "
            "before it, weighs its completions (a loss- or advantage-level preference-aware "
            "aggregator: linear, tchebycheff, stch, pbi, cosmos, softmin)"
        ),
    )
    preference_concentration: float = field(
        default=1.0,
        metadata=_help(
            "--conditioned: the Dirichlet's concentration (1: uniform on the simplex; below 1: "
            "more preferences near the corners)"
        ),
    )
    gramian_level: Literal["parameters", "features"] = field(
        default="parameters",
        metadata=_help("Gramian methods: over the policy parameters or the last hidden states"),
    )
    parameter_gramian: Literal["auto", "layers", "jacobian"] = field(
        default="auto",
        metadata=_help(
            "parameters level: auto (the k x d Jacobian while it fits the memory budget, "
            "else layer by layer), layers, or jacobian"
        ),
    )
    generation_kwargs: dict[str, Any] = field(
        default_factory=_default_generation_kwargs,
        metadata=_help("sampling settings, a JSON object (max_new_tokens, temperature, top_k…)"),
    )
    constraints: list[str] = field(
        default_factory=list,
        metadata={
            "help": "constrained objectives, e.g. 'sentiment>=0.8' 'length<=1.2' (Safe RLHF's "
            "Lagrangian); the other objectives are maximised",
            "aliases": ["--constraint"],
        },
    )
    constraint_lr: float = field(
        default=0.05, metadata=_help("the multipliers' dual ascent step (PID: integral gain)")
    )
    constraint_kp: float = field(default=0.0, metadata=_help("PID Lagrangian: proportional gain"))
    constraint_kd: float = field(default=0.0, metadata=_help("PID Lagrangian: derivative gain"))
    skip_nonfinite: bool = field(
        default=False, metadata=_help("skip steps with NaN/inf rewards or losses, with a warning")
    )
    lora_r: int = field(default=0, metadata=_help("LoRA rank; 0 trains the whole policy"))
    lora_alpha: float = field(default=16.0, metadata=_help("LoRA alpha"))
    lora_dropout: float = field(default=0.0, metadata=_help("LoRA dropout (must be 0)"))
    lora_target_modules: list[str] | None = field(
        default=None, metadata=_help("LoRA target modules (default: peft's for the model)")
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata=_help("accelerate trackers (tensorboard, wandb, …; 'all' or 'none')"),
    )

    def __post_init__(self) -> None:
        positive = (
            "learning_rate",
            "max_steps",
            "batch_size",
            "mini_batch_size",
            "gradient_accumulation_steps",
            "num_generations",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                f"({self.num_generations}): each process samples whole groups"
            )
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size "
                f"({self.mini_batch_size})"
            )
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must be a multiple of "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        self._check_scheduler()
        if self.gramian_level not in GRAMIAN_LEVELS:
            raise ValueError(
                f"gramian_level must be one of {GRAMIAN_LEVELS}, got {self.gramian_level!r}"
            )
        if self.parameter_gramian not in PARAMETER_GRAMIANS:
            raise ValueError(
                f"parameter_gramian must be one of {PARAMETER_GRAMIANS}, "
                f"got {self.parameter_gramian!r}"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.reward_weights is not None and "preference" in self.aggregator_kwargs:
            raise ValueError(
                "reward_weights and aggregator_kwargs['preference'] both set the weights of the "
                "objectives; give one of them"
            )
        if not self.preference_concentration > 0:
            raise ValueError(
                f"preference_concentration must be positive, got {self.preference_concentration!r}"
            )
        if self.conditioned and (
            self.reward_weights is not None or "preference" in self.aggregator_kwargs
        ):
            raise ValueError(
                "conditioned draws each prompt's preference itself; drop reward_weights and "
                "aggregator_kwargs['preference'] (preference_concentration shapes the draws)"
            )
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        for name in ("constraint_lr", "constraint_kp", "constraint_kd"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for text in self.constraints:
            Constraint.parse(text)  # a malformed constraint fails here, before any model loads
        if self.lora_dropout != 0.0:
            raise ValueError(
                f"lora_dropout={self.lora_dropout}: dropout makes the policy ratio and the KL to "
                "the reference noisy (two forwards of the same tokens disagree); set it to 0"
            )
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ValueError(f"report_to={self.report_to}: 'none' cannot be combined")

    def _check_scheduler(self) -> None:
        from transformers import SchedulerType

        try:
            SchedulerType(self.lr_scheduler_type)
        except ValueError:
            valid = [s.value for s in SchedulerType]
            raise ValueError(
                f"unknown lr_scheduler_type {self.lr_scheduler_type!r}; valid: {valid}"
            ) from None
        if self.warmup_steps < 0 or not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(
                f"need warmup_steps >= 0 and 0 <= warmup_ratio < 1, got {self.warmup_steps}, "
                f"{self.warmup_ratio}"
            )

    @classmethod
    def demo(
        cls: type[Config], aggregator: str = "pama", seed: int = 0, **overrides: Any
    ) -> Config:
        """The offline demo's settings (also the IMDb benchmark's): :data:`DEMO_SETTINGS` (32
        completions per step in minibatches of 16, learning rate 3e-4), :data:`DEMO_GENERATION`,
        then this algorithm's :attr:`demo_preset` (GRPO/RLOO: 8 prompts × 4 completions,
        β = 0.05), then ``overrides``."""
        values: dict[str, Any] = {
            **DEMO_SETTINGS,
            "aggregator": aggregator,
            "seed": seed,
            "generation_kwargs": dict(DEMO_GENERATION),
        }
        return cls(**{**values, **cls.demo_preset, **overrides})

    @property
    def epochs(self) -> int:
        """Passes over each step's rollouts (``num_ppo_epochs``, GRPO's ``num_iterations``)."""
        return 1

    @property
    def trackers(self) -> list[str]:
        """``report_to`` as accelerate's ``log_with`` ("none" means none)."""
        return [t for t in self.report_to if t != "none"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (with the algorithm it trains)."""
        return {"algorithm": self.algorithm, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[Config], values: dict[str, Any]) -> Config:
        """Build a config from :meth:`to_dict` output, rejecting unknown keys."""
        values = dict(values)
        refuse_renamed(cls, values)
        algorithm = values.pop("algorithm", cls.algorithm)
        if algorithm != cls.algorithm:
            raise ValueError(f"these values are for algorithm {algorithm!r}, not {cls.algorithm!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**values)


def refuse_renamed(config_class: type[MOConfig], names: Iterable[str], where: str = "") -> None:
    """Raise if ``names`` holds a field name that ``config_class`` renamed, naming the new one
    (``where``: the file or flags they came from)."""
    old = sorted(set(names) & set(config_class.renamed))
    if old:
        hints = "; ".join(f"{name} is now {config_class.renamed[name]}" for name in old)
        raise TypeError(f"renamed config field(s) {old}{where}: {hints}")
