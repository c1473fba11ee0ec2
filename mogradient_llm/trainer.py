"""Multi-objective PPO: rollouts → k rewards → KL penalty → k GAEs → Noon → aggregation → PPO."""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from mogradient import GramianAccumulator
from mogradient.gramian_engine import GramianRecorder
from mogradient_llm.advantages import (
    RunningMeanStd,
    gae,
    masked_mean,
    masked_whiten,
    noon_clip,
    normalize_scores,
    token_rewards,
)
from mogradient_llm.aggregation import ObjectiveCombiner
from mogradient_llm.checkpoint import (
    COMPLETE_FILE,
    TMP_PREFIX,
    commit_dir,
    resolve_resume,
    temporary_dir,
    write_latest,
)
from mogradient_llm.config import MOPPOConfig
from mogradient_llm.data import as_prompt_list
from mogradient_llm.dropout import disable_dropout
from mogradient_llm.kl import AdaptiveKLController, FixedKLController, KLController, kl_estimate
from mogradient_llm.lora import apply_lora
from mogradient_llm.loss import policy_losses, value_loss
from mogradient_llm.metrics import MetricsWriter
from mogradient_llm.rewards import NonFiniteRewardError, Reward, RewardFn, as_reward, score_all
from mogradient_llm.rollout import (
    Rollout,
    generate_rollout,
    lm_response_logprobs,
    response_logprobs,
)
from mogradient_llm.sampling import sampling_config
from mogradient_llm.sharding import generation_context
from mogradient_llm.value_heads import PolicyWithValueHeads

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers.utils import PushToHubMixin

STATE_FILE = COMPLETE_FILE
#: ``accelerator.save_state`` output inside a checkpoint: model, optimizer, RNG states per rank.
RESUME_DIR = "resume"
#: The aggregator's state (GradVac's EMA, FAMO's logits, a random stream...) inside RESUME_DIR.
AGGREGATOR_FILE = "aggregator.pt"


class NonFiniteError(FloatingPointError):
    """A reward, advantage or loss of one objective is NaN or infinite."""


def _check_sharding(combiner: ObjectiveCombiner, accelerator: Accelerator) -> None:
    """Parameter-level Gramians need every objective's full gradient: not under FSDP/ZeRO."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and combiner.gradient_level and combiner.config.gramian_level == "parameters":
        raise ValueError(
            f"gramian_level='parameters' needs each objective's full gradient, which "
            f"{accelerator.distributed_type.value} shards; use gramian_level='features' "
            "(--gramian-level features) or a PAMA / loss-level aggregator"
        )


def _with_accumulation(accelerator: Accelerator | None, steps: int) -> Accelerator:
    """``accelerator`` (or a new one) accumulating gradients over ``steps`` micro-batches."""
    if accelerator is None:
        return Accelerator(gradient_accumulation_steps=steps)
    if accelerator.gradient_accumulation_steps not in (1, steps):
        raise ValueError(
            f"the accelerator accumulates over {accelerator.gradient_accumulation_steps} steps "
            f"and the config over gradient_accumulation_steps={steps}; set one of them"
        )
    accelerator.gradient_accumulation_steps = steps
    return accelerator


class MOPPOTrainer:
    """PPO with k objectives, combined by any ``mogradient`` aggregator.

    Args:
        config: hyper-parameters.
        model: a causal LM (any ``AutoModelForCausalLM``); trained in place.
        tokenizer: its tokenizer (set to left padding; pad = EOS when it has no pad token).
        rewards: reward functions ``(prompts, completions) -> list[float]``, one per objective.
        prompts: the prompt dataset: strings, or a ``datasets.Dataset`` with a ``prompt``,
            ``query`` or ``text`` column.
        ref_model: the KL reference; by default a frozen copy of ``model``, or with LoRA
            (``config.lora_r > 0``) the base model with its adapters disabled (no second copy).
        accelerator: an ``accelerate.Accelerator``; a default one (with the config's
            ``gradient_accumulation_steps``) is made if omitted.
    """

    def __init__(
        self,
        config: MOPPOConfig,
        model: nn.Module,
        tokenizer: Any,
        rewards: Sequence[RewardFn | Reward],
        prompts: Sequence[str] | Any,
        ref_model: nn.Module | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.config = config
        self.accelerator = _with_accumulation(accelerator, config.gradient_accumulation_steps)
        set_seed(config.seed + self.accelerator.process_index)
        self.rewards = [as_reward(r) for r in rewards]
        self.names = [r.name for r in self.rewards]
        if not self.rewards:
            raise ValueError("pass at least one reward function")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"reward names must be unique, got {self.names}")
        self.prompts = as_prompt_list(prompts)
        if len(self.prompts) < config.batch_size:
            raise ValueError(
                f"need at least batch_size={config.batch_size} prompts, got {len(self.prompts)}"
            )
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the tokenizer has neither a pad token nor an EOS token; set one, e.g. "
                    "tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the model's "
                    "embeddings"
                )
            tokenizer.pad_token = tokenizer.eos_token
        self.combiner = ObjectiveCombiner(config, self.names)
        _check_sharding(self.combiner, self.accelerator)

        disable_dropout(model)
        self.sampling = sampling_config(config.generation_kwargs, model, tokenizer)
        if config.lora_r:
            model = apply_lora(model, config)
        elif ref_model is None:
            ref_model = copy.deepcopy(model)
        self.ref_model = (
            None
            if ref_model is None
            else ref_model.eval().requires_grad_(False).to(self.accelerator.device)
        )
        wrapped = PolicyWithValueHeads(model, len(self.rewards))
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
        self.model, self.optimizer = self.accelerator.prepare(wrapped, optimizer)
        self.model.train()

        self.kl_ctl: KLController
        if config.adap_kl_ctrl:
            self.kl_ctl = AdaptiveKLController(config.kl_coef, config.target, config.horizon)
        else:
            self.kl_ctl = FixedKLController(config.kl_coef)
        self.score_stats = RunningMeanStd(len(self.rewards))
        self._sum = self._all_reduce_sum if self.accelerator.num_processes > 1 else None
        self.temperature = float(self.sampling.temperature)
        self.step_count = 0
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

    def sample_prompts(self) -> list[str]:
        """The next ``batch_size`` prompts of a reshuffled pass over the prompt dataset."""
        out: list[str] = []
        while len(out) < self.config.batch_size:
            if not self._prompt_order:
                self._prompt_order = torch.randperm(
                    len(self.prompts), generator=self._prompt_rng
                ).tolist()
            out.append(self.prompts[self._prompt_order.pop()])
        return out

    def generate(self, prompts: Sequence[str]) -> Rollout:
        """Sample one completion per prompt from softmax(logits / temperature) — exactly what
        PPO scores (:mod:`mogradient_llm.sampling`) — under the policy's autocast, gathering
        sharded parameters the libraries' way (:mod:`mogradient_llm.sharding`)."""
        with self.accelerator.autocast(), generation_context(self.model) as synced_gpus:
            return generate_rollout(
                self.policy,
                self.tokenizer,
                prompts,
                self.sampling,
                self.accelerator.device,
                synced_gpus=synced_gpus,
            )

    # ------------------------------------------------------------------ advantages
    def _forward_chunks(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs of the policy and reference, and values ``[k, B, T]``, without grad.

        The reference runs under the policy's autocast (``accelerator.autocast``), so that two
        identical models give a KL of exactly 0 in mixed precision too; with LoRA it is the
        prepared model itself with its adapters disabled (so FSDP/ZeRO-3 gather its shards).
        """
        logprobs, ref_logprobs, values = [], [], []
        q = rollout.query_ids.shape[1]
        step = self.config.mini_batch_size
        for start in range(0, len(rollout.prompts), step):
            chunk = rollout[start : start + step]
            logits, v, _ = self.model(chunk.input_ids, chunk.attention_mask)
            logprobs.append(response_logprobs(logits, chunk.input_ids, q, self.temperature))
            values.append(v[:, q - 1 : -1].float())
            if self.ref_model is None:  # LoRA: the same prepared model, adapters off
                with cast("PeftModel", self.policy).disable_adapter():
                    ref_logits, _, _ = self.model(chunk.input_ids, chunk.attention_mask)
                ref = response_logprobs(ref_logits, chunk.input_ids, q, self.temperature)
            else:
                with self.accelerator.autocast():
                    ref = lm_response_logprobs(self.ref_model, chunk, self.temperature)
            ref_logprobs.append(ref)
        return torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values).permute(2, 0, 1)

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (on this rank's device)."""
        return self.accelerator.reduce(tensor.to(self.accelerator.device), "sum")

    @torch.no_grad()
    def prepare_batch(self, rollout: Rollout, scores: torch.Tensor) -> dict[str, Any]:
        """Everything PPO needs: old log-probs and values, returns, combined advantages.

        Pipeline: scores ``[k, B]`` → running normalisation (moments over all processes) →
        KL penalty on every objective's token rewards → GAE per objective → (loss weightings:
        ``Σ wᵢ Aᵢ``, MORLHF) → whitening → Noon clip → (PAMA: its combine).
        """
        cfg = self.config
        device = self.accelerator.device
        mask = rollout.response_mask.float()
        logprobs, ref_logprobs, values = self._forward_chunks(rollout)
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator) * mask
        scores = scores.to(device)
        objective_losses = self.combiner.objective_losses(scores, self._sum)
        if cfg.use_score_scaling:
            self.score_stats.update(scores, self._sum)
            scores = normalize_scores(
                scores,
                self.score_stats,
                use_score_norm=cfg.use_score_norm,
                clip=cfg.score_clip,
                std_floor=cfg.score_std_floor,
            )
        rewards = token_rewards(scores, kl, mask, self.kl_ctl.value)
        objective_advantages, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
        stats = {}
        for name, adv in zip(self.names, objective_advantages):
            stats[f"advantages/{name}/positive_frac"] = float(masked_mean((adv > 0).float(), mask))
        advantages, agg_stats = self.combiner.scalarize(objective_advantages, objective_losses)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        if cfg.noon:
            advantages = noon_clip(advantages)
        self._check_finite(advantages, returns, logprobs)
        combined, pama_stats = self.combiner.combine_advantages(advantages, mask, self._sum)
        stats.update(agg_stats)
        stats.update(pama_stats)
        return {
            "input_ids": rollout.input_ids,
            "attention_mask": rollout.attention_mask,
            "query_length": rollout.query_ids.shape[1],
            "mask": mask,
            "old_logprobs": logprobs,
            "old_values": values,
            "returns": returns,
            "objective_advantages": advantages,
            "objective_losses": objective_losses,
            "advantages": combined,
            "kl": kl,
            "stats": stats,
        }

    def _check_finite(
        self, advantages: torch.Tensor, returns: torch.Tensor, logprobs: torch.Tensor
    ) -> None:
        """Raise :class:`NonFiniteError` naming the first objective with NaN/inf values
        (advantages of one row: the scalarised advantage of a loss weighting)."""
        rows = self.names if len(advantages) == len(self.names) else ["combined (Σ wᵢ Aᵢ)"]
        for kind, names, values in (
            ("returns", self.names, returns),
            ("advantages", rows, advantages),
        ):
            for name, row in zip(names, values):
                if not torch.isfinite(row).all():
                    raise NonFiniteError(f"the {kind} of objective {name!r} are not finite")
        if not torch.isfinite(logprobs).all():
            raise NonFiniteError("the policy's log-probabilities are not finite")

    # ------------------------------------------------------------------ optimisation
    def minibatch_losses(
        self, batch: dict[str, Any], index: torch.Tensor, token_count: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Per-objective policy losses ``[m]``, value loss, hidden states, stats of a minibatch.

        ``token_count``: what the token sums are divided by (default: the tokens of ``index``).
        """
        q = batch["query_length"]
        ids = batch["input_ids"][index]
        logits, values, hidden = self.model(ids, batch["attention_mask"][index])
        logprobs = response_logprobs(logits, ids, q, self.temperature)
        values = values[:, q - 1 : -1].float().permute(2, 0, 1)
        mask = batch["mask"][index]
        p_losses, p_stats = policy_losses(
            logprobs,
            batch["old_logprobs"][index],
            batch["advantages"][:, index],
            mask,
            self.config.cliprange,
            token_count,
        )
        v_loss, v_stats = value_loss(
            values,
            batch["old_values"][:, index],
            batch["returns"][:, index],
            mask,
            self.config.cliprange_value,
            token_count,
        )
        return p_losses, v_loss, hidden, {**p_stats, **v_stats}

    def optimize(self, batch: dict[str, Any]) -> dict[str, float]:
        """``ppo_epochs`` passes of minibatch updates; returns the averaged statistics.

        A minibatch whose losses are not finite raises :class:`NonFiniteError`, or with
        ``skip_nonfinite`` is skipped (no update) with a warning.
        """
        cfg = self.config
        n = batch["input_ids"].shape[0]
        totals: dict[str, float] = {}
        count = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, device=batch["input_ids"].device)
            for start in range(0, n, cfg.mini_batch_size):
                stats = self._update(batch, order[start : start + cfg.mini_batch_size])
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                count += bool(stats)
        return {key: value / max(count, 1) for key, value in totals.items()}

    def _update(self, batch: dict[str, Any], index: torch.Tensor) -> dict[str, float]:
        """One optimiser step on the minibatch ``index``, split into the config's micro-batches.

        The weights are decided first (Gramian methods: from the Gramian accumulated over the
        micro-batches and all-reduced over the processes), then every micro-batch runs one
        ``accelerator.backward`` of ``Σ wᵢ Lᵢ + vf_coef · value loss`` inside
        ``accelerator.accumulate``, so DDP, loss scaling and accumulation see a single kind of
        backward. With one micro-batch its graph serves both; with several, Gramian methods
        run each micro-batch's forward twice (the weights must be known before the first
        backward). Returns ``{}`` for a skipped minibatch.
        """
        acc, cfg = self.accelerator, self.config
        micro = index.chunk(cfg.gradient_accumulation_steps)
        token_count = float(batch["mask"][index].sum().clamp(min=1)) / len(micro)
        held = None
        weights: torch.Tensor | None = None
        stats: dict[str, float] = {}
        if self.combiner.gradient_level:
            decided = self._policy_gramian(batch, micro, token_count)
            if decided is None:
                return {}
            gramian, held = decided
            weights, stats = self.combiner.gramian_weights(gramian, batch["objective_losses"])
        totals: dict[str, float] = {}
        skipped = False
        for idx in micro:
            with acc.accumulate(self.model):
                if skipped:
                    continue
                p_losses, v_loss, _, micro_stats = held or self.minibatch_losses(
                    batch, idx, token_count
                )
                if held is None and self._skip_nonfinite(p_losses, v_loss):
                    skipped = True
                    continue
                loss = self.combiner.policy_loss(p_losses, weights) + cfg.vf_coef * v_loss
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm is not None:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                micro_stats["loss/policy_avg"] = p_losses.detach().mean()
                micro_stats["loss/value_avg"] = v_loss.detach()
                for key, value in micro_stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value) / len(micro)
        if skipped:  # what the earlier micro-batches accumulated must not reach the next step
            self.model.zero_grad(set_to_none=True)
            return {}
        return {**totals, **stats}

    def _policy_gramian(
        self, batch: dict[str, Any], micro: Sequence[torch.Tensor], token_count: float
    ) -> tuple[torch.Tensor, Any] | None:
        """The global Gramian of the minibatch's per-objective policy losses, and the outputs of
        its forward when there is one micro-batch (its graph then serves the update too);
        ``None`` when a loss is not finite and the minibatch is skipped.

        Parameters level with one micro-batch and ``parameter_gramian="layers"``: accumulated
        layer by layer during one backward (:class:`mogradient.gramian_engine.GramianRecorder`),
        never holding the k×d Jacobian. With several micro-batches the Gramian is that of the
        summed gradients, which needs every layer's k gradients at once: the Jacobian path
        (:class:`mogradient.GramianAccumulator`), as at the features level.
        """
        cfg = self.config
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if cfg.gramian_level == "parameters" and len(micro) == 1:
            if cfg.parameter_gramian == "layers":
                with GramianRecorder(self.policy, params=params) as recorder:
                    out = self.minibatch_losses(batch, micro[0], token_count)
                if self._skip_nonfinite(*out[:2]):
                    return None
                return recorder.gramian(list(out[0].unbind())), out
        accumulator = GramianAccumulator(cfg.gramian_level, len(micro))
        held = None
        for idx in micro:
            with self.accelerator.no_sync(self.model) if len(micro) > 1 else nullcontext():
                out = self.minibatch_losses(batch, idx, token_count)
            if self._skip_nonfinite(*out[:2]):
                return None
            inputs = [out[2]] if cfg.gramian_level == "features" else params
            accumulator.add(out[0].unbind(), inputs, retain_graph=len(micro) == 1)
            held = out if len(micro) == 1 else None
        return accumulator.gramian(), held

    def _skip_nonfinite(self, p_losses: torch.Tensor, v_loss: torch.Tensor) -> bool:
        """Whether any rank met a non-finite loss (then raise, or warn with ``skip_nonfinite``)."""
        problem = self._agree(self._nonfinite_loss(p_losses, v_loss))
        if problem is not None:
            self._nonfinite(problem)
        return problem is not None

    def _nonfinite_loss(self, p_losses: torch.Tensor, v_loss: torch.Tensor) -> str | None:
        """A description of the first non-finite loss, or ``None``."""
        names = self.names if len(p_losses) == len(self.names) else ["combined"]
        for name, loss in zip(names, p_losses.detach()):
            if not torch.isfinite(loss):
                return f"the policy loss of objective {name!r} is {float(loss)}"
        if not torch.isfinite(v_loss.detach()):
            return f"the value loss (sum over objectives' heads) is {float(v_loss)}"
        return None

    def _agree(self, problem: str | None) -> str | None:
        """``problem`` if any rank has one: every rank must skip (or stop) together, or the
        others would wait forever in the next collective."""
        if self.accelerator.num_processes == 1:
            return problem
        flag = torch.tensor([float(problem is not None)], device=self.accelerator.device)
        if float(self.accelerator.reduce(flag, "sum")) == 0:
            return None
        return problem or "another rank met a non-finite value"

    def _nonfinite(self, problem: str) -> None:
        """Raise, or warn when ``skip_nonfinite`` is set."""
        step = self.step_count + 1
        if not self.config.skip_nonfinite:
            raise NonFiniteError(
                f"step {step}: {problem}; check that objective's reward scale (or turn on "
                "use_score_scaling), lower the learning rate, or pass skip_nonfinite=True "
                "(--skip-nonfinite) to skip such steps"
            )
        warnings.warn(f"step {step}: {problem}; skipping it (skip_nonfinite)", stacklevel=3)

    def step(self, prompts: Sequence[str] | None = None) -> dict[str, float]:
        """One PPO step on ``prompts`` (default: the next batch); returns TRL-style metrics.

        Rewards, advantages and returns are computed and checked before anything is updated,
        so a failing or non-finite reward leaves the model, the heads, the statistics and the
        step counter untouched (with ``skip_nonfinite``, the step is counted and skipped:
        ``train/skipped`` is 1).
        """
        start = time.perf_counter()
        prompts = self.sample_prompts() if prompts is None else list(prompts)
        if not prompts:
            raise ValueError("the prompt batch is empty; pass at least one prompt")
        rollout = self.generate(prompts)
        normaliser = self.score_stats.state_dict()
        scores: torch.Tensor | None = None
        batch: dict[str, Any] | None = None
        problem: str | None = None
        try:
            scores = score_all(self.rewards, rollout.prompts, rollout.completions)
        except NonFiniteRewardError as exc:
            problem = str(exc)
        if self._agree(problem) is None:  # every rank runs prepare_batch's forwards, or none
            assert scores is not None  # no problem on this rank: score_all returned
            try:
                batch = self.prepare_batch(rollout, scores)
            except NonFiniteError as exc:
                problem = str(exc)
        problem = self._agree(problem)
        if problem is not None:
            self.score_stats.load_state_dict(normaliser)  # the bad scores must not count
            return self._skip_step(problem, start)
        assert scores is not None and batch is not None  # no rank met a problem
        stats = {f"objective/scores/{name}": float(s.mean()) for name, s in zip(self.names, scores)}
        local_kl = batch["kl"].sum(1).mean().reshape(1)
        mean_kl = float(self.accelerator.reduce(local_kl.to(self.accelerator.device), "mean"))
        stats["objective/kl"] = mean_kl
        stats["objective/kl_coef"] = self.kl_ctl.value
        stats["objective/non_score_reward"] = -self.kl_ctl.value * mean_kl
        stats["objective/entropy"] = float((-batch["old_logprobs"] * batch["mask"]).sum(1).mean())
        stats["env/response_length"] = float(batch["mask"].sum(1).mean())
        stats.update(batch["stats"])
        stats.update(self.optimize(batch))
        self.kl_ctl.update(mean_kl, len(prompts) * self.accelerator.num_processes)
        self.step_count += 1
        self.last_samples = [
            {"prompt": p, "completion": c, **{n: float(s) for n, s in zip(self.names, col)}}
            for p, c, col in zip(rollout.prompts, rollout.completions, scores.T)
        ]
        stats["train/skipped"] = 0.0
        stats["time/step_s"] = time.perf_counter() - start
        return stats

    def _skip_step(self, problem: str, start: float) -> dict[str, float]:
        """Raise on ``problem``, or (``skip_nonfinite``) count the step with no update."""
        self._nonfinite(problem)
        self.step_count += 1
        self.last_samples = []
        return {"train/skipped": 1.0, "time/step_s": time.perf_counter() - start}

    # ------------------------------------------------------------------ loop and checkpoints
    def train(
        self,
        steps: int,
        output_dir: str | Path | None = None,
        save_steps: int = 0,
        n_samples: int = 4,
        progress: bool = True,
        extra_state: dict[str, Any] | None = None,
        resume_from: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Train until ``steps`` PPO steps are done; with ``output_dir``, log metrics and samples
        and checkpoint every ``save_steps`` steps and at the end (``output_dir/final``).

        ``resume_from``: a checkpoint, or a run's ``output_dir`` (its newest complete
        checkpoint); training continues from that checkpoint's step, and the metrics logged
        after it are dropped. ``extra_state`` goes into the checkpoints' ``trainer_state.json``.
        """
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        writer = None
        if output_dir and self.accelerator.is_main_process:
            keep = self.step_count if resume_from is not None else None
            writer = MetricsWriter(output_dir, keep_until=keep)
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
            if writer is not None:
                writer.log(self.step_count, stats)
                writer.log_samples(self.step_count, self.last_samples[:n_samples])
            if output_dir and save_steps and self.step_count % save_steps == 0:
                self.save(Path(output_dir) / f"checkpoint-{self.step_count}", extra_state)
        if output_dir:
            self.save(Path(output_dir) / "final", extra_state)
        return history

    def save(self, directory: str | Path, extra_state: dict[str, Any] | None = None) -> None:
        """Write a checkpoint atomically (see :mod:`mogradient_llm.checkpoint`).

        ``policy/``: the policy (adapters only with LoRA) and tokenizer, ``save_pretrained``;
        the value heads; ``resume/``: ``accelerator.save_state`` (model, optimizer, RNG states of
        every rank), each rank's prompt order and the aggregator's state;
        ``trainer_state.json`` (step, KL coefficient, reward normalisers, config) last. The
        parent's ``LATEST`` then points at it.
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
                "kl_coef": self.kl_ctl.value,
                "objectives": self.names,
                "aggregator": repr(self.combiner.aggregator),
                "score_stats": self.score_stats.state_dict(),
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
        self.accelerator.load_state(str(path / RESUME_DIR))
        rank = self.accelerator.process_index
        sampler = torch.load(path / RESUME_DIR / f"prompt_sampler_{rank}.pt")
        self._prompt_rng.set_state(sampler["rng"])
        self._prompt_order = list(sampler["order"])
        # our own pickle (numpy random streams, histories), written by save() above
        aggregator_state = torch.load(path / RESUME_DIR / AGGREGATOR_FILE, weights_only=False)
        self.combiner.aggregator.load_state_dict(aggregator_state)
        self.step_count = int(state["step"])
        self.kl_ctl.value = float(state["kl_coef"])
        self.score_stats.load_state_dict(state["score_stats"])
        return path
