"""What both trainers add to TRL's: the per-objective advantages of every generation batch,
the Gramian weightings' loss and the constraints' multipliers (updated, logged, checkpointed),
all through one :class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss`."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mogradient_llm.estimators.grpo import GroupEstimator
from mogradient_llm.integrations.trl.advantages import group_estimator, objective_advantages
from mogradient_llm.integrations.trl.configs import MultiObjectiveFields, objective_loss_of
from mogradient_llm.integrations.trl.constraints import ConstraintCallback, load_state, save_state
from mogradient_llm.integrations.trl.loss import KEY, gramian_loss
from mogradient_llm.integrations.trl.metrics import log_stats
from mogradient_llm.loop.setup import check_sharding
from mogradient_llm.objectives.diagnostics import Correlation, correlation_stats
from mogradient_llm.objectives.loss import MultiObjectiveLoss

#: Generation batches whose diagnostics wait for TRL's log at most (then computed at once):
#: what they hold stays bounded when logging is rare or off.
PENDING = 64


class MultiObjectiveMixin:
    """Put before TRL's trainer in the bases. Each of TRL's ``reward_funcs`` is one objective,
    named by TRL's ``reward_func_names``."""

    #: ``"grpo"`` or ``"rloo"``: which of our estimators computes TRL's advantages.
    mo_algorithm: ClassVar[str]

    # set by TRL's trainer
    args: Any
    accelerator: Any
    model: Any
    reward_func_names: list[str]
    _metrics: dict[str, Any]

    def _setup_multi_objective(self) -> None:
        if not isinstance(self.args, MultiObjectiveFields):
            raise TypeError(
                f"{type(self).__name__} takes its multi-objective settings from its config: pass "
                f"args=MO{self.mo_algorithm.upper()}Config(...), got {type(self.args).__name__}"
            )
        self.mo_objective = objective_loss_of(self.args, list(self.reward_func_names))
        check_sharding(self.mo_objective, self.accelerator)
        check_checkpointing(self.mo_objective, self.args)
        self._mo_estimators: dict[int, GroupEstimator[Any]] = {}
        self._mo_losses: dict[str, torch.Tensor | None] = {}
        #: each generation batch's conflict diagnostics, by mode, until TRL logs
        self._mo_correlations: dict[str, list[Correlation]] = {"train": [], "eval": []}
        self._mo_rewards: torch.Tensor | None = None
        self._mo_constraints: ConstraintCallback | None = None
        if self.mo_objective.constraints is not None:
            self._mo_constraints = ConstraintCallback(self)
            self.add_callback(self._mo_constraints)  # type: ignore[attr-defined]

    def _estimator(self, num_generations: int) -> GroupEstimator[Any]:
        if num_generations not in self._mo_estimators:
            names = list(self.mo_objective.names)
            self._mo_estimators[num_generations] = group_estimator(
                self.mo_algorithm, names, num_generations, self
            )
        return self._mo_estimators[num_generations]

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """TRL's gathered rewards ``[B_global, k]``, kept for the advantages."""
        rewards = super()._calculate_rewards(*args, **kwargs)  # type: ignore[misc]
        self._mo_rewards = rewards
        return rewards

    def _sequence_kl(self, output: dict[str, Any]) -> torch.Tensor | None:
        """The gathered per-sequence KL that enters the reward (RLOO); ``None``: none."""
        return None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's batch with our advantages: ``advantages`` ``[B]`` combined (advantage
        combiners, loss weightings) and ``objective_advantages`` ``[B, k]`` (every kind)."""
        output = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        rewards = self._mo_rewards
        assert rewards is not None  # set by TRL's _calculate_rewards, called above
        names = self.mo_objective.names
        if rewards.shape[1] != len(names):
            raise ValueError(
                f"{rewards.shape[1]} rewards per completion and {len(names)} objectives "
                f"{list(names)}: an environment's reward counts as one more objective, which the "
                "multi-objective trainers do not support"
            )
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval  # type: ignore[attr-defined]
        result = objective_advantages(
            self.mo_objective, self._estimator(num_generations), rewards, self._sequence_kl(output)
        )
        n = len(inputs)
        local = slice(self.accelerator.process_index * n, (self.accelerator.process_index + 1) * n)
        old = output["advantages"]
        output[KEY] = result.per_objective[local].to(old)
        if result.combined is not None:
            output["advantages"] = result.combined[local].to(old)
        self._mo_losses[mode] = result.losses
        if self._mo_constraints is not None and mode == "train":
            assert result.losses is not None  # computed for the constraints
            self._mo_constraints.measured(result.losses)
        log_stats(self._metrics[mode], result.stats)
        if result.correlation is not None:
            self._mo_correlations[mode].append(result.correlation)
            if len(self._mo_correlations[mode]) >= PENDING:
                self._log_correlations(mode)
        return output

    def _log_correlations(self, mode: str) -> None:
        """The pending diagnostics of ``mode`` into TRL's metrics, in one pass."""
        pending, self._mo_correlations[mode] = self._mo_correlations[mode], []
        for stats in correlation_stats(pending, self.mo_objective.names):
            log_stats(self._metrics[mode], stats)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with the conflict diagnostics of every generation batch since the last
        one: computed here, in one pass over the window, and averaged by TRL with the rest."""
        self._log_correlations("train" if self.model.training else "eval")
        super().log(logs, start_time)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """TRL's checkpoint, plus the constraints' multipliers (:mod:`.constraints`)."""
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        if self._mo_constraints is not None and self.args.should_save:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"  # type: ignore[attr-defined]
            output_dir = os.path.join(self._get_output_dir(trial=trial), folder)  # type: ignore[attr-defined]
            save_state(self.mo_objective, output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """TRL's resume, plus the multipliers saved with the checkpoint."""
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        if checkpoint is not None:
            load_state(self.mo_objective, checkpoint)

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """TRL's loss; Gramian weightings: ``Σ wᵢ Lᵢ`` (+ the shared regulariser once). Without
        grad (TRL's evaluation, ``prediction_step``) no Gramian exists: TRL's own loss."""
        compute_loss = super()._compute_loss  # type: ignore[misc]
        if not self.mo_objective.gradient_level or not torch.is_grad_enabled():
            return compute_loss(model, inputs)
        return gramian_loss(self, model, inputs, compute_loss)


def check_checkpointing(objective: MultiObjectiveLoss, args: Any) -> None:
    """Parameter-level Gramians take each objective's gradient with ``torch.autograd.grad``,
    which gets no gradient for parameters under reentrant activation checkpointing (their
    gradients go to ``.grad`` only, silently): refused, naming the settings that work."""
    kwargs = getattr(args, "gradient_checkpointing_kwargs", None) or {}
    reentrant = getattr(args, "gradient_checkpointing", False) and kwargs.get("use_reentrant")
    if reentrant and objective.gradient_level and objective.level == "parameters":
        raise ValueError(
            "gramian_level='parameters' takes each objective's gradient with "
            "torch.autograd.grad, which reentrant activation checkpointing "
            "(gradient_checkpointing_kwargs={'use_reentrant': True}) leaves empty; set "
            "use_reentrant=False, gradient_checkpointing=False, or gramian_level='features'"
        )
