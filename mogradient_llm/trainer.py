"""The training loop: prompts → rollouts → k rewards → estimator → Noon → combine → updates.

One loop for every algorithm; the algorithm is an estimator (:mod:`mogradient_llm.estimators`)
chosen by the config's class. A step flows one way:

1. :meth:`MOTrainer.sample_prompts` — ``batch_size / num_generations`` prompt rows;
2. :meth:`MOTrainer.generate` — ``num_generations`` completions of each, sampled exactly as
   they are scored;
3. :meth:`MOTrainer.score` — every reward, TRL's way (dataset columns as keyword arguments,
   ``None`` = no score); the ranks agree on non-finite values before anything else;
4. :meth:`MOTrainer.prepare_batch` — the forwards the estimator needs, its per-objective
   advantages (a loss weighting scalarises them where the estimator says), the Noon clip and
   the advantage-level combine (PAMA): a :class:`~mogradient_llm.batch.RolloutBatch`;
5. :class:`~mogradient_llm.update.Updater` — minibatch epochs; Gramian methods decide their
   weights from the all-reduced Gramian first; one ``accelerator.backward`` per micro-batch;
6. logging (JSONL/CSV always, accelerate trackers with ``report_to``) and atomic checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedType,
    GradientAccumulationPlugin,
    gather_object,
    set_seed,
)
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from mogradient import Aggregator, LossWeighting
from mogradient_llm.advantages import noon_clip
from mogradient_llm.aggregation import ObjectiveCombiner
from mogradient_llm.batch import RolloutBatch
from mogradient_llm.checkpoint import (
    COMPLETE_FILE,
    TMP_PREFIX,
    commit_dir,
    resolve_resume,
    temporary_dir,
    write_latest,
)
from mogradient_llm.config import MOConfig
from mogradient_llm.data import (
    as_prompt_rows,
    completion_for_reward,
    prompt_text,
    reward_columns,
)
from mogradient_llm.diagnostics import advantage_diagnostics, score_diagnostics
from mogradient_llm.dropout import disable_dropout
from mogradient_llm.estimators import Estimator, EstimatorInputs, estimator_for
from mogradient_llm.kl import kl_estimate
from mogradient_llm.lora import apply_lora
from mogradient_llm.metrics import MetricsWriter
from mogradient_llm.nonfinite import NonFiniteError, NonFiniteGuard
from mogradient_llm.reward_context import RewardLog, trainer_state
from mogradient_llm.rewards import NonFiniteRewardError, Reward, RewardFn, as_reward, score_all
from mogradient_llm.rollout import (
    Rollout,
    generate_rollout,
    lm_response_logprobs,
    response_logprobs,
)
from mogradient_llm.sampling import sampling_config
from mogradient_llm.sharding import generation_context
from mogradient_llm.update import Updater, build_optimizer
from mogradient_llm.value_heads import PolicyWithValueHeads

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers.utils import PushToHubMixin

__all__ = ["MOTrainer", "NonFiniteError", "STATE_FILE"]

STATE_FILE = COMPLETE_FILE
#: ``accelerator.save_state`` output inside a checkpoint: model, optimizer, scheduler, RNGs.
RESUME_DIR = "resume"
#: The aggregator's state (GradVac's EMA, FAMO's logits, a random stream...) inside RESUME_DIR.
AGGREGATOR_FILE = "aggregator.pt"


def _check_sharding(combiner: ObjectiveCombiner, accelerator: Accelerator) -> None:
    """Parameter-level Gramians need every objective's full gradient: not under FSDP/ZeRO."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and combiner.gradient_level and combiner.config.gramian_level == "parameters":
        raise ValueError(
            f"gramian_level='parameters' needs each objective's full gradient, which "
            f"{accelerator.distributed_type.value} shards; use gramian_level='features' "
            "(--gramian-level features) or a PAMA / loss-level aggregator"
        )


def gradient_accumulation(steps: int) -> GradientAccumulationPlugin:
    """Accumulation over ``steps`` micro-batches, never synced with a dataloader: the loop
    decides where each minibatch ends, so a dataloader's end left in accelerate's process-wide
    gradient state (by another trainer in the process, TRL's for one) cannot force an extra
    optimiser step."""
    return GradientAccumulationPlugin(num_steps=steps, sync_with_dataloader=False)


def _accelerator(accelerator: Accelerator | None, config: MOConfig) -> Accelerator:
    """``accelerator`` (or a new one logging to ``report_to``) accumulating gradients over the
    config's ``gradient_accumulation_steps``."""
    steps = config.gradient_accumulation_steps
    if accelerator is None:
        return Accelerator(
            gradient_accumulation_plugin=gradient_accumulation(steps),
            log_with=config.trackers or None,
        )
    if accelerator.gradient_accumulation_steps not in (1, steps):
        raise ValueError(
            f"the accelerator accumulates over {accelerator.gradient_accumulation_steps} steps "
            f"and the config over gradient_accumulation_steps={steps}; set one of them"
        )
    accelerator.gradient_accumulation_steps = steps
    return accelerator


def _padding_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` set to pad on the left, with EOS as pad when it has no pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                "the tokenizer has neither a pad token nor an EOS token; set one, e.g. "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the model's "
                "embeddings"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class MOTrainer:
    """Multi-objective RL fine-tuning of a causal LM: PPO, GRPO or RLOO by the config's class,
    with the k objectives combined by any ``mogradient`` aggregator.

    Args:
        config: :class:`~mogradient_llm.estimators.MOPPOConfig`, ``MOGRPOConfig`` or
            ``MORLOOConfig``.
        model: a causal LM (any ``AutoModelForCausalLM``); trained in place.
        tokenizer: its tokenizer (set to left padding; pad = EOS when it has no pad token).
        rewards: one per objective: TRL-style functions ``(prompts, completions, **kwargs) ->
            list[float | None]`` or :class:`~mogradient_llm.rewards.Reward` objects.
        prompts: strings, conversations, or a ``datasets.Dataset`` with a ``prompt`` column
            (its other columns reach the rewards as keyword arguments).
        ref_model: the KL reference; by default a frozen copy of ``model``, or with LoRA
            (``config.lora_r > 0``) the base model with its adapters disabled; none at all when
            the estimator needs none (GRPO/RLOO with ``beta = 0``).
        accelerator: an ``accelerate.Accelerator``; a default one (with the config's
            ``gradient_accumulation_steps`` and ``report_to``) is made if omitted.
        aggregator: the ``mogradient`` aggregator instance to combine the objectives with
            (default: the one ``config.aggregator`` names, with ``config``'s arguments).
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
    ):
        self.config = config
        estimator_class = estimator_for(config)
        self.accelerator = _accelerator(accelerator, config)
        set_seed(config.seed + self.accelerator.process_index)
        self.rewards = [as_reward(r) for r in rewards]
        self.names = [r.name for r in self.rewards]
        if not self.rewards:
            raise ValueError("pass at least one reward function")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reward names must be unique, got {self.names}")
        self.rows = as_prompt_rows(prompts)
        self.prompts_per_step = config.batch_size // config.num_generations
        if len(self.rows) < self.prompts_per_step:
            raise ValueError(
                f"need at least batch_size / num_generations = {self.prompts_per_step} prompts, "
                f"got {len(self.rows)}"
            )
        self.tokenizer = _padding_tokenizer(tokenizer)
        self.estimator: Estimator = estimator_class(config, self.names)
        self.combiner = ObjectiveCombiner(config, self.names, aggregator)
        _check_sharding(self.combiner, self.accelerator)

        disable_dropout(model)
        self.sampling = sampling_config(config.generation_kwargs, model, tokenizer)
        self.temperature = float(self.sampling.temperature)
        self.ref_model: nn.Module | None = None
        self._ref_is_base = False  # LoRA: the reference is the policy with its adapters off
        if config.lora_r:
            model = apply_lora(model, config)
            self._ref_is_base = ref_model is None and self.estimator.needs_reference
        elif ref_model is None and self.estimator.needs_reference:
            ref_model = copy.deepcopy(model)
        if ref_model is not None and self.estimator.needs_reference:
            device = self.accelerator.device
            self.ref_model = ref_model.eval().requires_grad_(False).to(device)
        heads = len(self.rewards) if self.estimator.value_heads else 0
        wrapped = PolicyWithValueHeads(model, heads)
        optimizer = build_optimizer(wrapped, config)
        self.model, self.optimizer = self.accelerator.prepare(wrapped, optimizer)
        self.model.train()
        updates = config.max_steps * config.epochs * (config.batch_size // config.mini_batch_size)
        self.scheduler = get_scheduler(
            config.lr_scheduler_type,
            self.optimizer,
            num_warmup_steps=config.warmup_steps or math.ceil(config.warmup_ratio * updates),
            num_training_steps=updates,
        )
        self.accelerator.register_for_checkpointing(self.scheduler)
        self._sum = self._all_reduce_sum if self.accelerator.num_processes > 1 else None
        self.guard = NonFiniteGuard(self.accelerator, config.skip_nonfinite)
        self.updater = Updater(
            config,
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            self.estimator,
            self.combiner,
            self.guard,
            self.names,
            self.temperature,
            int(self.sampling.max_new_tokens),
            lambda: self.policy,
        )
        self.step_count = 0
        self.reward_log = RewardLog(0)
        self.last_samples: list[dict[str, Any]] = []
        self._prompt_rng = torch.Generator().manual_seed(
            config.seed + self.accelerator.process_index
        )
        self._prompt_order: list[int] = []

    # ------------------------------------------------------------------ rollouts
    @property
    def policy(self) -> nn.Module:
        """The causal LM being trained (unwrapped)."""
        return self.accelerator.unwrap_model(self.model).policy

    def sample_prompts(self) -> list[dict[str, Any]]:
        """The next ``batch_size / num_generations`` rows of a reshuffled pass over the prompts."""
        out: list[dict[str, Any]] = []
        while len(out) < self.prompts_per_step:
            if not self._prompt_order:
                self._prompt_order = torch.randperm(
                    len(self.rows), generator=self._prompt_rng
                ).tolist()
            out.append(self.rows[self._prompt_order.pop()])
        return out

    def generate(self, prompts: Sequence[Any]) -> Rollout:
        """``num_generations`` consecutive completions of each prompt (a row or a prompt),
        sampled from softmax(logits / temperature) — exactly what the loss scores — under the
        policy's autocast, gathering sharded parameters the libraries' way."""
        rows = as_prompt_rows(prompts)
        texts = [
            prompt_text(row["prompt"], self.tokenizer)
            for row in rows
            for _ in range(self.config.num_generations)
        ]
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
        """Scores ``[k, B]`` (NaN: a reward returned ``None``) of every reward, called TRL's
        way: the rows' prompts, the completions, their token ids and the rows' other columns,
        with ``trainer_state`` (a ``transformers.TrainerState`` of this trainer: see
        :func:`~mogradient_llm.reward_context.trainer_state`), ``log_extra`` and ``log_metric``
        (what they log is in :attr:`reward_log` until the step reports it)."""
        rows = as_prompt_rows(prompts)
        repeated = [row for row in rows for _ in range(self.config.num_generations)]
        prompts = [row["prompt"] for row in repeated]
        completions = [completion_for_reward(p, c) for p, c in zip(prompts, rollout.completions)]
        ids = [
            row[: int(n)].tolist()
            for row, n in zip(rollout.response_ids, rollout.response_mask.sum(1))
        ]
        self.reward_log = RewardLog(len(completions))
        state = trainer_state(
            self.step_count,
            self.config.max_steps,
            self.step_count * self.prompts_per_step / len(self.rows),
            self.config.batch_size,
            is_main_process=self.accelerator.is_main_process,
            is_local_main_process=self.accelerator.is_local_main_process,
        )
        return score_all(
            self.rewards,
            prompts,
            completions,
            reward_columns(repeated),
            completion_ids=ids,
            extra_kwargs={"trainer_state": state, **self.reward_log.kwargs()},
        )

    # ------------------------------------------------------------------ advantages
    def _forward_chunks(
        self, rollout: Rollout
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """What the estimator needs before the updates, without grad: the policy's log-probs,
        the reference's and the values ``[k, B, T]`` (``None`` for what it does not need).

        The reference runs under the policy's autocast, so that two identical models give a KL
        of exactly 0 in mixed precision too; with LoRA it is the prepared model itself with its
        adapters disabled (so FSDP/ZeRO-3 gather its shards).
        """
        est = self.estimator
        need_ref = est.needs_reference
        # the KL's two sides, unless the loss alone reads it from its own forward (GRPO)
        need_kl = need_ref and not est.kl_in_loss_only
        need_policy = est.needs_old_logprobs or est.value_heads or need_kl
        if not (need_policy or need_ref):
            return None, None, None
        logprobs, ref_logprobs, values = [], [], []
        q = rollout.query_ids.shape[1]
        step = self.config.mini_batch_size
        for start in range(0, len(rollout.prompts), step):
            chunk = rollout[start : start + step]
            if need_policy:
                logits, v, _ = self.model(chunk.input_ids, chunk.attention_mask)
                logprobs.append(response_logprobs(logits, chunk.input_ids, q, self.temperature))
                if v is not None:
                    values.append(v[:, q - 1 : -1].float())
            if need_ref:
                ref_logprobs.append(self._reference_logprobs(chunk, q))
        return (
            torch.cat(logprobs) if logprobs else None,
            torch.cat(ref_logprobs) if ref_logprobs else None,
            torch.cat(values).permute(2, 0, 1) if values else None,
        )

    def _reference_logprobs(self, chunk: Rollout, query_length: int) -> torch.Tensor:
        """The KL reference's response log-probabilities of ``chunk``."""
        if self._ref_is_base:
            with cast("PeftModel", self.policy).disable_adapter():
                logits, _, _ = self.model(chunk.input_ids, chunk.attention_mask)
            return response_logprobs(logits, chunk.input_ids, query_length, self.temperature)
        assert self.ref_model is not None  # needs_reference: a reference was loaded
        with self.accelerator.autocast():
            return lm_response_logprobs(self.ref_model, chunk, self.temperature)

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (on this rank's device)."""
        return self.accelerator.reduce(tensor.to(self.accelerator.device), "sum")

    @torch.no_grad()
    def prepare_batch(self, rollout: Rollout, scores: torch.Tensor) -> RolloutBatch:
        """Everything the updates need: old log-probs (and values), combined advantages.

        The estimator's pipeline (PPO: normalisation → KL penalty → GAE → [loss weightings:
        ``Σ wᵢ Aᵢ``] → whitening; GRPO: group-relative advantages) → Noon clip → advantage
        combiners (PAMA). Raises :class:`NonFiniteError` naming the first non-finite objective.
        """
        mask = rollout.response_mask.float()
        logprobs, ref_logprobs, values = self._forward_chunks(rollout)
        scores = scores.to(self.accelerator.device)
        objective_losses = self.combiner.objective_losses(scores, self._sum)
        agg = self.combiner.aggregator  # a loss weighting checks the means even if unread
        reads_losses = isinstance(agg, LossWeighting) or getattr(agg, "uses_loss_values", False)
        for name, loss in zip(self.names, objective_losses):
            if reads_losses and not torch.isfinite(loss):  # finite scores, overflowing mean
                raise NonFiniteError(
                    f"the mean score of objective {name!r} is not finite in float32 "
                    f"({-float(loss)}); rescale that reward"
                )
        stats: dict[str, float] = {}
        inputs = EstimatorInputs(
            scores, mask, self.config.num_generations, logprobs, ref_logprobs, values, self._sum
        )
        estimate = self.estimator.estimate(
            inputs, self.combiner.scalarizer(objective_losses, stats, self.estimator.weight_total)
        )
        advantages = noon_clip(estimate.advantages) if self.config.noon else estimate.advantages
        self._check_finite(advantages, estimate.returns, logprobs)
        combined, combine_stats = self.combiner.combine_advantages(
            advantages, mask, self._sum, inputs.valid
        )
        stats.update(estimate.stats)
        stats.update(combine_stats)
        if not self.combiner.gradient_level and len(self.names) > 1:
            if len(advantages) == len(self.names):
                stats.update(advantage_diagnostics(advantages, mask, self.names))
            else:
                stats.update(score_diagnostics(scores, self.names))
        return RolloutBatch(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            query_length=rollout.query_ids.shape[1],
            mask=mask,
            scores=scores,
            objective_losses=objective_losses,
            objective_advantages=advantages,
            advantages=combined,
            old_logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            kl=estimate.kl,
            old_values=values,
            returns=estimate.returns,
            value_mask=estimate.value_mask,
            stats=stats,
            live_logprobs=mask.new_full(mask.shape, math.nan) if logprobs is None else None,
        )

    def _check_finite(
        self,
        advantages: torch.Tensor,
        returns: torch.Tensor | None,
        logprobs: torch.Tensor | None,
    ) -> None:
        """Raise :class:`NonFiniteError` naming the first objective with NaN/inf values
        (advantages of one row: the scalarised advantage of a loss weighting)."""
        rows = self.names if len(advantages) == len(self.names) else ["combined (Σ wᵢ Aᵢ)"]
        checks = [("advantages", rows, advantages)]
        if returns is not None:
            checks.insert(0, ("returns", self.names, returns))
        for kind, names, values in checks:
            for name, row in zip(names, values):
                if not torch.isfinite(row).all():
                    raise NonFiniteError(f"the {kind} of objective {name!r} are not finite")
        if logprobs is not None and not torch.isfinite(logprobs).all():
            raise NonFiniteError("the policy's log-probabilities are not finite")

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
        if prompts is not None and not len(prompts):
            raise ValueError("the prompt batch is empty; pass at least one prompt")
        rows = self.sample_prompts() if prompts is None else as_prompt_rows(prompts)
        if len(rows) != self.prompts_per_step:  # a step is batch_size completions, no other
            raise ValueError(
                f"step(prompts) takes batch_size / num_generations = {self.prompts_per_step} "
                f"prompts ({self.config.batch_size} completions), got {len(rows)}; pass that "
                "many, or change batch_size"
            )
        rollout = self.generate(rows)
        snapshot = self.estimator.state_dict()  # restored if the step is abandoned
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
                batch = self.prepare_batch(rollout, scores)
            except NonFiniteError as exc:
                problem = str(exc)
        problem = self.guard.agree(problem)
        reward_metrics = self._reward_metrics()  # every rank, skipped step or not
        if problem is not None:
            self.estimator.load_state_dict(snapshot)  # the bad scores must not count
            return self._skip_step(problem, start)
        assert scores is not None and batch is not None  # no rank met a problem
        stats = {
            f"objective/scores/{name}": float(s.nanmean()) for name, s in zip(self.names, scores)
        }
        stats["env/response_length"] = float(batch.mask.sum(1).mean())
        stats.update(self.estimator.stats())
        stats.update(batch.stats)
        stats.update(self.updater.optimize(batch, self.step_count + 1))
        stats.update(reward_metrics)
        logprobs = batch.old_logprobs
        if logprobs is None and batch.live_logprobs is not None:
            # no forward before the update: its first forward's log-probs are the rollout's
            logprobs = batch.live_logprobs if batch.live_logprobs.isfinite().all() else None
            if logprobs is not None and batch.ref_logprobs is not None and batch.kl is None:
                batch.kl = kl_estimate(logprobs, batch.ref_logprobs, "k3") * batch.mask
        mean_kl = self._mean_kl(batch)
        if mean_kl is not None:
            stats["objective/kl"] = mean_kl
        if logprobs is not None:
            entropy = (-logprobs * batch.mask).sum(1).mean()
            stats["objective/entropy"] = float(entropy)
        if mean_kl is not None:
            self.estimator.after_step(mean_kl, batch.size * self.accelerator.num_processes)
        self.step_count += 1
        extra = self.reward_log.extra
        self.last_samples = [
            {
                "prompt": p,
                "completion": c,
                **{n: float(s) for n, s in zip(self.names, col)},
                **{column: values[i] for column, values in extra.items()},
            }
            for i, (p, c, col) in enumerate(zip(rollout.prompts, rollout.completions, scores.T))
        ]
        stats["train/learning_rate"] = float(self.scheduler.get_last_lr()[0])
        stats["train/skipped"] = 0.0
        stats["time/step_s"] = time.perf_counter() - start
        return stats

    def _reward_metrics(self) -> dict[str, float]:
        """What the rewards logged with ``log_metric`` this step, averaged over the calls and
        the processes (TRL's way)."""
        if self.accelerator.num_processes == 1:
            return self.reward_log.metrics()
        return self.reward_log.metrics(gather_object, self._all_reduce_sum)

    def _mean_kl(self, batch: RolloutBatch) -> float | None:
        """The per-sequence KL to the reference averaged over every process's batch."""
        if batch.kl is None:
            return None
        local = batch.kl.sum(1).mean().reshape(1).to(self.accelerator.device)
        return float(self.accelerator.reduce(local, "mean"))

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
        steps = self.config.max_steps if steps is None else steps
        acc = self.accelerator
        if acc.is_main_process:  # a launch that silently runs one process shows here
            print(
                f"training on {acc.num_processes} process(es) ({acc.distributed_type.value}, "
                f"{acc.device.type}); {self.config.batch_size} completions per process and step",
                flush=True,
            )
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        writer = None
        if output_dir and self.accelerator.is_main_process:
            keep = self.step_count if resume_from is not None else None
            writer = MetricsWriter(output_dir, keep_until=keep)
        if self.accelerator.log_with:
            self.accelerator.init_trackers("mogradient_llm", config=self.config.to_dict())
        history = []
        bar = tqdm(
            range(self.step_count, steps),
            disable=not progress or not self.accelerator.is_main_process,
        )
        for _ in bar:
            stats = self.step()
            history.append(stats)
            bar.set_postfix(
                {
                    n: f"{stats[f'objective/scores/{n}']:.3f}"
                    for n in self.names
                    if f"objective/scores/{n}" in stats
                }
            )
            self.accelerator.log(stats, step=self.step_count)
            if writer is not None:
                writer.log(self.step_count, stats)
                writer.log_samples(self.step_count, self.last_samples[:n_samples])
            if output_dir and save_steps and self.step_count % save_steps == 0:
                self.save(Path(output_dir) / f"checkpoint-{self.step_count}", extra_state)
        if output_dir:
            self.save(Path(output_dir) / "final", extra_state)
        if self.accelerator.log_with:
            self.accelerator.end_training()
        return history

    def save(self, directory: str | Path, extra_state: dict[str, Any] | None = None) -> None:
        """Write a checkpoint atomically (see :mod:`mogradient_llm.checkpoint`).

        ``policy/``: the policy (adapters only with LoRA) and tokenizer, ``save_pretrained``;
        the value heads (PPO); ``resume/``: ``accelerator.save_state`` (model, optimizer,
        scheduler, RNG states of every rank), each rank's prompt order and the aggregator's
        state; ``trainer_state.json`` (step, the estimator's state, config) last. The parent's
        ``LATEST`` then points at it.
        """
        directory = Path(directory)
        tmp = directory.parent / f"{TMP_PREFIX}{directory.name}"
        acc = self.accelerator
        if acc.is_main_process:
            temporary_dir(directory)
        acc.wait_for_everyone()
        acc.save_state(str(tmp / RESUME_DIR))
        sampler = {"rng": self._prompt_rng.get_state(), "order": list(self._prompt_order)}
        torch.save(sampler, tmp / RESUME_DIR / f"prompt_sampler_{acc.process_index}.pt")
        if acc.is_main_process:  # every rank decides alike, so one copy of its state serves all
            torch.save(self.combiner.aggregator.state_dict(), tmp / RESUME_DIR / AGGREGATOR_FILE)
        acc.wait_for_everyone()
        if acc.is_main_process:
            # a transformers model or its peft wrapper: both implement PushToHubMixin's method
            cast("PushToHubMixin", self.policy).save_pretrained(tmp / "policy")
            self.tokenizer.save_pretrained(tmp / "policy")
            acc.unwrap_model(self.model).save_heads(tmp)
            state = {
                "step": self.step_count,
                "algorithm": self.config.algorithm,
                "objectives": self.names,
                "aggregator": repr(self.combiner.aggregator),
                "estimator": self.estimator.state_dict(),
                "config": self.config.to_dict(),
                **(extra_state or {}),
            }
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
            commit_dir(tmp, directory)
            write_latest(directory.parent, directory)
        acc.wait_for_everyone()

    def load_checkpoint(self, checkpoint: str | Path) -> Path:
        """Restore everything :meth:`save` wrote; returns the checkpoint directory used."""
        path = resolve_resume(checkpoint)
        state = json.loads((path / STATE_FILE).read_text())
        if state["objectives"] != self.names:
            raise ValueError(
                f"checkpoint {path} was trained on objectives {state['objectives']}, this trainer "
                f"has {self.names}; pass the same --reward list to resume"
            )
        if state.get("algorithm", "ppo") != self.config.algorithm:
            raise ValueError(
                f"checkpoint {path} was trained with --algorithm {state.get('algorithm', 'ppo')}, "
                f"this trainer runs {self.config.algorithm}; resume with the same algorithm"
            )
        self.accelerator.load_state(str(path / RESUME_DIR))
        rank = self.accelerator.process_index
        sampler = torch.load(path / RESUME_DIR / f"prompt_sampler_{rank}.pt")
        self._prompt_rng.set_state(sampler["rng"])
        self._prompt_order = list(sampler["order"])
        # our own pickle (numpy random streams, histories), written by save() above
        aggregator_state = torch.load(path / RESUME_DIR / AGGREGATOR_FILE, weights_only=False)
        self.combiner.aggregator.load_state_dict(aggregator_state)
        self.step_count = int(state["step"])
        self.estimator.load_state_dict(state["estimator"])
        return path
