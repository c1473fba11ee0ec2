"""Our loop: one step in six stages, rollout → score → estimate → combine → update → log.

One loop for every algorithm; the algorithm is an estimator (:mod:`mogradient_llm.estimators`)
chosen by the config's class, and the objectives are combined by one
:class:`~mogradient_llm.objectives.loss.MultiObjectiveLoss` (the same component TRL's and
verl's adapters use). A step flows one way:

1. **rollout** — :meth:`MOTrainer.generate`: ``num_generations`` completions of each of the
   step's prompts, sampled exactly as they are scored;
2. **score** — :meth:`MOTrainer.score`: every reward, TRL's way (dataset columns as keyword
   arguments, ``None`` = no score); the ranks agree on non-finite values before anything else;
3. **estimate** — the forwards the estimator needs
   (:class:`~mogradient_llm.loop.forwards.RolloutForwards`) and its per-objective advantages (a
   loss weighting scalarises them where the estimator says);
4. **combine** — the Noon clip and the advantage-level combine (PAMA): a
   :class:`~mogradient_llm.loop.batch.RolloutBatch`;
5. **update** — :class:`~mogradient_llm.loop.update.Updater`: minibatch epochs; Gramian methods
   decide their weights from the all-reduced Gramian first; one ``accelerator.backward`` each;
6. **log** — JSONL/CSV, accelerate trackers (``report_to``); checkpoints: ``loop.checkpoint``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn

from mogradient import Aggregator
from mogradient_llm.config import MOConfig
from mogradient_llm.estimators import Estimator, EstimatorInputs, estimator_for
from mogradient_llm.estimators.value_heads import PolicyWithValueHeads
from mogradient_llm.inputs.preferences import PreferenceInjection, PreferenceSampler, TextPrefix
from mogradient_llm.inputs.prompts import as_prompt_rows, prompt_text
from mogradient_llm.inputs.reward_context import RewardLog, trainer_state
from mogradient_llm.inputs.rewards import NonFiniteRewardError, Reward, RewardFn, as_rewards
from mogradient_llm.inputs.sampler import PromptSampler
from mogradient_llm.inputs.scoring import score_groups
from mogradient_llm.loop.batch import RolloutBatch
from mogradient_llm.loop.checkpoint import load_checkpoint, save_checkpoint
from mogradient_llm.loop.forwards import RolloutForwards
from mogradient_llm.loop.metrics import mean_kl_of, policy_stats, reward_metrics_of, samples
from mogradient_llm.loop.nonfinite import NonFiniteError, NonFiniteGuard
from mogradient_llm.loop.setup import (
    accumulating_accelerator,
    check_sharding,
    objective_loss,
    padding_tokenizer,
    policy_and_reference,
)
from mogradient_llm.loop.training import train_steps
from mogradient_llm.loop.update import Updater, build_optimizer, build_scheduler
from mogradient_llm.objectives.loss import objective_losses
from mogradient_llm.policy.dropout import disable_dropout
from mogradient_llm.policy.rollout import Rollout, generate_rollout
from mogradient_llm.policy.sampling import sampling_config
from mogradient_llm.policy.sharding import generation_context

__all__ = ["MOTrainer", "NonFiniteError"]


class MOTrainer:
    """Multi-objective RL fine-tuning of a causal LM: PPO, GRPO or RLOO by the config's class,
    with the k objectives combined by any ``mogradient`` aggregator.

    Args:
        config: :class:`~mogradient_llm.estimators.MOPPOConfig`, ``MOGRPOConfig`` or
            ``MORLOOConfig``.
        model: a causal LM (any ``AutoModelForCausalLM``); trained in place.
        tokenizer: its tokenizer (set to left padding; pad = EOS when it has no pad token).
        rewards: one per objective: TRL-style functions ``(prompts, completions, **kwargs) ->
            list[float | None]`` or :class:`~mogradient_llm.inputs.rewards.Reward` objects.
        prompts: strings, conversations, or a ``datasets.Dataset`` with a ``prompt`` column
            (its other columns reach the rewards as keyword arguments).
        ref_model: the KL reference; by default a frozen copy of ``model``, or with LoRA
            (``config.lora_r > 0``) the base model with its adapters disabled; none at all when
            the estimator needs none (GRPO/RLOO with ``beta = 0``).
        accelerator: an ``accelerate.Accelerator``; a default one (with the config's
            ``gradient_accumulation_steps`` and ``report_to``) is made if omitted.
        aggregator: the ``mogradient`` aggregator instance to combine the objectives with
            (default: the one ``config.aggregator`` names, with ``config``'s arguments).
        injection: with ``config.conditioned``, how the policy reads each prompt's preference
            (default :class:`~mogradient_llm.inputs.preferences.TextPrefix`).
    """

    def __init__(
        self,
        config: MOConfig,
        model: nn.Module,
        tokenizer: Any,
        rewards: Sequence[RewardFn | Reward],
        prompts: Sequence[Any] | Any,
        ref_model: nn.Module | None = None,
        accelerator: Accelerator | None = None,
        aggregator: Aggregator | None = None,
        injection: PreferenceInjection | None = None,
    ):
        self.config = config
        estimator_class = estimator_for(config)
        self.accelerator = acc = accumulating_accelerator(accelerator, config)
        set_seed(config.seed + acc.process_index)
        self.rewards = as_rewards(rewards)
        self.names = [r.name for r in self.rewards]
        self.rows = as_prompt_rows(prompts)
        self.prompts_per_step = config.batch_size // config.num_generations
        self.prompt_sampler = PromptSampler(
            self.rows, self.prompts_per_step, config.seed + acc.process_index
        )
        #: with ``conditioned``: each rank's stream of preferences (one per prompt), checkpointed
        self.preference_sampler: PreferenceSampler | None = None
        if config.conditioned:
            self.preference_sampler = PreferenceSampler(
                len(self.rewards), config.preference_concentration, config.seed, acc.process_index
            )
        self.injection = injection or TextPrefix()
        self.tokenizer = padding_tokenizer(tokenizer)
        self.estimator: Estimator = estimator_class(config, self.names)
        self.objective = objective_loss(config, self.names, aggregator)
        check_sharding(self.objective, acc)

        disable_dropout(model)
        self.sampling = sampling_config(config.generation_kwargs, model, tokenizer)
        self.temperature = float(self.sampling.temperature)
        model, self.ref_model, ref_is_base = policy_and_reference(
            config, model, ref_model, self.estimator.needs_reference, acc
        )
        heads = len(self.rewards) if self.estimator.value_heads else 0
        wrapped = PolicyWithValueHeads(model, heads)
        self.model, self.optimizer = acc.prepare(wrapped, build_optimizer(wrapped, config))
        self.model.train()
        self.scheduler = build_scheduler(self.optimizer, config)
        acc.register_for_checkpointing(self.scheduler)
        self._sum = self._all_reduce_sum if acc.num_processes > 1 else None
        self.guard = NonFiniteGuard(acc, config.skip_nonfinite)
        self.forwards = RolloutForwards(
            acc,
            self.model,
            lambda: self.policy,
            self.ref_model,
            ref_is_base,
            self.estimator,
            self.temperature,
            config.mini_batch_size,
        )
        self.updater = Updater(
            config,
            acc,
            self.model,
            self.optimizer,
            self.scheduler,
            self.estimator,
            self.objective,
            self.guard,
            self.temperature,
            int(self.sampling.max_new_tokens),
            lambda: self.policy,
        )
        self.step_count = 0
        self.reward_log = RewardLog(0)
        self.last_samples: list[dict[str, Any]] = []

    @property
    def policy(self) -> nn.Module:
        """The causal LM being trained (unwrapped)."""
        return self.accelerator.unwrap_model(self.model).policy

    @property
    def aggregator(self) -> Aggregator:
        """The aggregator combining the objectives (its state is checkpointed)."""
        return self.objective.aggregator

    # ------------------------------------------------------------------ rollout and score
    def sample_prompts(self) -> list[dict[str, Any]]:
        """The next ``batch_size / num_generations`` rows of a reshuffled pass over the prompts."""
        return self.prompt_sampler.next()

    def draw_preferences(self, n_prompts: int) -> np.ndarray | None:
        """With ``conditioned``: the next ``n_prompts`` preferences ``[n, k]``; else ``None``."""
        return None if self.preference_sampler is None else self.preference_sampler.draw(n_prompts)

    def per_sample(self, preferences: np.ndarray) -> np.ndarray:
        """Each prompt's preference repeated for its ``num_generations`` completions."""
        return np.repeat(preferences, self.config.num_generations, axis=0)

    def generate(self, prompts: Sequence[Any], preferences: np.ndarray | None = None) -> Rollout:
        """``num_generations`` consecutive completions of each prompt (a row or a prompt),
        sampled from softmax(logits / temperature) — exactly what the loss scores — under the
        policy's autocast, gathering sharded parameters the libraries' way; with
        ``preferences`` (one per prompt), each prompt as the injection shows it."""
        rows = as_prompt_rows(prompts)
        texts = [
            prompt_text(row["prompt"], self.tokenizer)
            for row in rows
            for _ in range(self.config.num_generations)
        ]
        if preferences is not None:
            texts = self.injection.apply(texts, self.per_sample(preferences))
        with self.accelerator.autocast(), generation_context(self.model) as synced_gpus:
            return generate_rollout(
                self.policy,
                self.tokenizer,
                texts,
                self.sampling,
                self.accelerator.device,
                synced_gpus=synced_gpus,
            )

    def score(self, prompts: Sequence[Any], rollout: Rollout) -> torch.Tensor:
        """Scores ``[k, B]`` (NaN: no score) of every reward, called TRL's way (``score_groups``)
        with ``trainer_state``, ``log_extra`` and ``log_metric`` (what they log is in
        :attr:`reward_log` until the step reports it)."""
        lengths = rollout.response_mask.sum(1)
        ids = [row[: int(n)].tolist() for row, n in zip(rollout.response_ids, lengths)]
        self.reward_log = RewardLog(len(ids))
        state = trainer_state(
            self.step_count,
            self.config.max_steps,
            self.step_count * self.prompts_per_step / len(self.rows),
            self.config.batch_size,
            is_main_process=self.accelerator.is_main_process,
            is_local_main_process=self.accelerator.is_local_main_process,
        )
        kwargs = {"trainer_state": state, **self.reward_log.kwargs()}
        rows = as_prompt_rows(prompts)
        n = self.config.num_generations
        return score_groups(self.rewards, rows, n, rollout.completions, ids, kwargs)

    # ------------------------------------------------------------------ estimate and combine
    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (on this rank's device)."""
        return self.accelerator.reduce(tensor.to(self.accelerator.device), "sum")

    @torch.no_grad()
    def prepare_batch(
        self, rollout: Rollout, scores: torch.Tensor, preferences: np.ndarray | None = None
    ) -> RolloutBatch:
        """Everything the updates need: old log-probs (and values), combined advantages;
        with ``preferences`` (one per prompt), each sample weighed under its prompt's.

        The estimator's pipeline (PPO: normalisation → KL penalty → GAE → [loss weightings:
        ``Σ wᵢ Aᵢ``] → whitening; GRPO: group-relative advantages) → Noon clip → advantage
        combiners (PAMA). Raises :class:`NonFiniteError` naming the first non-finite objective.
        """
        mask = rollout.response_mask.float()
        logprobs, ref_logprobs, values = self.forwards(rollout)
        scores = scores.to(self.accelerator.device)
        losses = objective_losses(scores, self._sum)
        problem = self.objective.nonfinite_losses(losses)  # finite scores, overflowing mean
        if problem is not None:
            raise NonFiniteError(problem)
        stats: dict[str, float] = {}
        prefs = None if preferences is None else torch.as_tensor(self.per_sample(preferences))
        inputs = EstimatorInputs(
            scores, mask, self.config.num_generations, logprobs, ref_logprobs, values, self._sum
        )
        scalarize = self.objective.scalarizer(losses, stats, self.estimator.weight_total, prefs)
        estimate = self.estimator.estimate(inputs, scalarize)
        problem = estimate.nonfinite()
        if problem is None and logprobs is not None and not logprobs.isfinite().all():
            problem = "the policy's log-probabilities are not finite"
        if problem is not None:
            raise NonFiniteError(problem)
        clipped = self.objective.clip(estimate.advantages, mask)
        combined, combine_stats = self.objective.combine(clipped, mask, losses, self._sum, prefs)
        stats.update(estimate.stats)
        stats.update(combine_stats)
        stats.update(self.objective.diagnostics(clipped, mask, scores))
        return RolloutBatch.of(
            rollout, scores, losses, estimate, clipped, combined, logprobs, ref_logprobs, stats
        )

    # ------------------------------------------------------------------ one step
    def step(self, prompts: Sequence[Any] | None = None) -> dict[str, float]:
        """One step on ``prompts`` (default: the next batch; given, exactly ``batch_size /
        num_generations`` of them); returns TRL-style metrics.

        Rewards and advantages are computed and checked before anything is updated, so a
        failing or non-finite reward leaves the model, the statistics and the step counter
        untouched (with ``skip_nonfinite``, the step is counted and skipped:
        ``train/skipped`` is 1).
        """
        start = time.perf_counter()
        rows = self.prompt_sampler.step_rows(prompts)
        preferences = self.draw_preferences(len(rows))  # None unless conditioned
        rollout = self.generate(rows, preferences)  # 1. rollout
        snapshot = self.estimator.state_dict()  # restored if the step is abandoned
        scores, batch, problem = self._score_and_prepare(rows, rollout, preferences)  # 2.-4.
        reward_metrics = reward_metrics_of(self.reward_log, self.accelerator)  # every rank
        if problem is not None:
            self.estimator.load_state_dict(snapshot)  # the bad scores must not count
            return self._skip_step(problem, start)
        assert scores is not None and batch is not None  # no rank met a problem
        stats = {f"objective/scores/{n}": float(s.nanmean()) for n, s in zip(self.names, scores)}
        stats["env/response_length"] = float(batch.mask.sum(1).mean())
        stats.update(self.estimator.stats())
        stats.update(batch.stats)
        stats.update(self.updater.optimize(batch, self.step_count + 1))  # 5. update
        stats.update(self.objective.update_constraints(batch.objective_losses))
        stats.update(reward_metrics)  # 6. log
        stats.update(policy_stats(batch))
        mean_kl = mean_kl_of(batch, self.accelerator)
        if mean_kl is not None:
            stats["objective/kl"] = mean_kl
            self.estimator.after_step(mean_kl, batch.size * self.accelerator.num_processes)
        self.step_count += 1
        self.last_samples = samples(
            rollout.prompts, rollout.completions, scores, self.names, self.reward_log.extra
        )
        stats["train/learning_rate"] = float(self.scheduler.get_last_lr()[0])
        stats["train/skipped"] = 0.0
        stats["time/step_s"] = time.perf_counter() - start
        return stats

    def _score_and_prepare(
        self, rows: list[dict[str, Any]], rollout: Rollout, preferences: np.ndarray | None
    ) -> tuple[torch.Tensor | None, RolloutBatch | None, str | None]:
        """Score, estimate and combine; the problem every rank agrees on, if any."""
        scores: torch.Tensor | None = None
        batch: RolloutBatch | None = None
        problem: str | None = None
        try:
            scores = self.score(rows, rollout)
        except NonFiniteRewardError as exc:
            problem = str(exc)
        if self.guard.agree(problem) is None:  # every rank runs prepare_batch's forwards, or none
            assert scores is not None  # no problem on this rank: score_all returned
            try:
                batch = self.prepare_batch(rollout, scores, preferences)
            except NonFiniteError as exc:
                problem = str(exc)
        return scores, batch, self.guard.agree(problem)

    def _skip_step(self, problem: str, start: float) -> dict[str, float]:
        """Raise on ``problem``, or (``skip_nonfinite``) count the step with no update."""
        self.guard.report(problem, self.step_count + 1)
        self.step_count += 1
        self.last_samples = []
        return {"train/skipped": 1.0, "time/step_s": time.perf_counter() - start}

    # ------------------------------------------------------------------ loop and checkpoints
    def train(
        self,
        steps: int | None = None,
        output_dir: str | Path | None = None,
        save_steps: int = 0,
        n_samples: int = 4,
        progress: bool = True,
        extra_state: dict[str, Any] | None = None,
        resume_from: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``steps`` (default ``config.max_steps``) steps are done; with
        ``output_dir``, log metrics and samples and checkpoint every ``save_steps`` steps and at
        the end (``output_dir/final``); ``report_to`` trackers get every step's metrics. The
        learning-rate schedule spans ``config.max_steps`` steps whatever ``steps`` is.

        ``resume_from``: a checkpoint, or a run's ``output_dir`` (its newest complete
        checkpoint); training continues from that checkpoint's step, and the metrics logged
        after it are dropped. ``extra_state`` goes into the checkpoints' ``trainer_state.json``.
        The main process first prints how many processes train (a launch that runs one process
        where several were meant shows there).
        """
        return train_steps(
            self, steps, output_dir, save_steps, n_samples, progress, extra_state, resume_from
        )

    def save(self, directory: str | Path, extra_state: dict[str, Any] | None = None) -> None:
        """Write a checkpoint atomically (see :mod:`mogradient_llm.loop.checkpoint`)."""
        save_checkpoint(self, directory, extra_state)

    def load_checkpoint(self, checkpoint: str | Path) -> Path:
        """Restore everything :meth:`save` wrote; returns the checkpoint directory used."""
        return load_checkpoint(self, checkpoint)
