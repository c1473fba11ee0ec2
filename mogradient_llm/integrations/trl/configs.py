"""``MOGRPOConfig`` and ``MORLOOConfig``: TRL's configs plus the multi-objective fields, and the
:class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss` they describe."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from trl import GRPOConfig, RLOOConfig

from mogradient import AdvantageCombiner, Aggregator
from mogradient_llm.objectives.building import aggregator_from
from mogradient_llm.objectives.constraints import Constraint, lagrangian_from
from mogradient_llm.objectives.loss import MultiObjectiveLoss

LEVELS = ("features", "parameters")


@dataclass
class MultiObjectiveFields:
    """The fields both configs add to TRL's.

    * ``aggregator``: a name of the ``mogradient`` registry (``linear``, ``pama``, ``mgda``,
      ``upgrad``, …) or an :class:`~mogradient.Aggregator` instance.
    * ``aggregator_kwargs``: the named aggregator's hyper-parameters.
    * ``gramian_level``: where Gramian weightings take the Gramian of the objectives' policy-loss
      gradients: ``"features"`` (the backbone's last hidden state, MGDA-UB: one backward per
      objective through the LM head only) or ``"parameters"`` (every trainable parameter).
    * ``preference``: the preference of a preference-aware aggregator; by default TRL's
      ``reward_weights`` (so ``linear`` weighs the rewards as TRL does).
    * ``noon``: clip every objective's advantage at zero first (Noon); ``None``: on for
      advantage combiners (PAMA), off otherwise.
    * ``constraints``: constrained objectives, as the command line's ``--constraint`` writes
      them (``"sentiment>=0.8"``, ``"length<=1.2"``) or as
      :class:`~mogradient_llm.objectives.constraints.Constraint`; each gets a Lagrange
      multiplier (Safe RLHF's Lagrangian at the advantage level) moved by projected dual ascent
      with step ``constraint_lr`` (PID Lagrangian with ``constraint_kp``/``constraint_kd``);
      the other objectives are maximised by the aggregator.
    """

    # Annotated ``str`` for TRL's command-line parser (``TrlParser``); an instance is taken too.
    aggregator: str = field(
        default="linear",
        metadata={"help": "mogradient aggregator name (linear, pama, mgda, upgrad, …) or instance"},
    )
    aggregator_kwargs: dict[str, Any] | str | None = field(
        default_factory=dict,
        metadata={"help": "the aggregator's hyper-parameters (a dict, or a JSON object's text)"},
    )
    gramian_level: Literal["features", "parameters"] = field(
        default="features",
        metadata={"help": "Gramian methods: last hidden state ('features') or 'parameters'"},
    )
    preference: list[float] | None = field(
        default=None,
        metadata={"help": "preference of a preference-aware aggregator (default: reward_weights)"},
    )
    noon: bool | None = field(
        default=None,
        metadata={"help": "clip advantages at 0 (Noon); default: on for PAMA, off otherwise"},
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
        default=0.05,
        metadata={"help": "the multipliers' dual ascent step (PID: integral gain)"},
    )
    constraint_kp: float = field(
        default=0.0, metadata={"help": "PID Lagrangian: proportional gain"}
    )
    constraint_kd: float = field(default=0.0, metadata={"help": "PID Lagrangian: derivative gain"})

    def _check_multi_objective(self) -> None:
        if isinstance(self.aggregator_kwargs, str):  # from the command line
            self.aggregator_kwargs = json.loads(self.aggregator_kwargs)
        if self.aggregator_kwargs is None:
            self.aggregator_kwargs = {}
        if self.gramian_level not in LEVELS:
            raise ValueError(f"gramian_level must be one of {LEVELS}, got {self.gramian_level!r}")
        for name in ("constraint_lr", "constraint_kp", "constraint_kd"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if isinstance(self.constraints, str | Constraint):
            self.constraints = [self.constraints]  # type: ignore[list-item]
        for constraint in self.constraints:
            if not isinstance(constraint, Constraint):  # a malformed one fails before the model
                Constraint.parse(constraint)
        if not isinstance(self.aggregator, str | Aggregator):
            raise TypeError(
                f"aggregator must be a registered name or a mogradient Aggregator instance, got "
                f"{self.aggregator!r}"
            )


@dataclass
class MOGRPOConfig(MultiObjectiveFields, GRPOConfig):
    """TRL's ``GRPOConfig`` with :class:`MultiObjectiveFields`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_multi_objective()


@dataclass
class MORLOOConfig(MultiObjectiveFields, RLOOConfig):
    """TRL's ``RLOOConfig`` with :class:`MultiObjectiveFields`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_multi_objective()
        if self.reward_clip_range is not None:
            raise ValueError(
                "reward_clip_range clips TRL's weighted sum of rewards, which the multi-objective "
                "adapter does not form; clip inside each reward function instead"
            )


def objective_loss_of(args: MultiObjectiveFields, names: Sequence[str]) -> MultiObjectiveLoss:
    """The multi-objective loss the config describes over the objectives ``names``.

    The weights sum to 1 (``normalize_weights``); GRPO and RLOO scale a loss weighting's back to
    ``Σ reward_weights`` where they scalarise, so ``linear`` is TRL's weighted sum."""
    preference = args.preference
    weights = getattr(args, "reward_weights", None)
    if preference is None and weights is not None and not isinstance(args.aggregator, Aggregator):
        preference = list(weights)
    name = "preference" if args.preference is not None else "reward_weights"
    kwargs = args.aggregator_kwargs
    assert isinstance(kwargs, dict)  # parsed in __post_init__
    aggregator = aggregator_from(args.aggregator, kwargs, preference, preference_name=name)
    noon = args.noon
    if noon is None:
        noon = isinstance(aggregator, AdvantageCombiner)
    constraints = lagrangian_from(args, names)
    loss = MultiObjectiveLoss(
        aggregator,
        names,
        level=args.gramian_level,
        normalize_weights=True,
        noon=noon,
        constraints=constraints,
    )
    if loss.decides_direction:
        raise ValueError(
            f"{aggregator!r} decides a direction from the k×d Jacobian over the parameters, "
            "which TRL's trainers do not form; train it with mogradient's own loop "
            "(mogradient_llm.run.train, gramian_level='parameters', parameter_gramian='jacobian') "
            "or mogradient.backward"
        )
    return loss
