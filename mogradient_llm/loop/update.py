"""The updates of one step: minibatch epochs over a
:class:`~mogradient_llm.loop.batch.RolloutBatch`.

For each minibatch the weights are decided first (Gramian methods: from the Gramian of the
per-objective policy losses, accumulated over the micro-batches and all-reduced over the
processes), then every micro-batch runs one ``accelerator.backward`` of
``Σ wᵢ Lᵢ + extra loss`` inside ``accelerator.accumulate``, so DDP, loss scaling and
accumulation see a single kind of backward. With one micro-batch its graph serves both; with
several, Gramian methods run each micro-batch's forward twice (the weights must be known before
the first backward). Jacobian weightings decide a direction d from the minibatch's global k×d
Jacobian the same way, and each micro-batch backwards ``Σ_p ⟨d_p, p⟩ + extra loss`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, cast

import torch
from accelerate import Accelerator
from torch import nn

from mogradient.gramian.accumulator import GramianAccumulator
from mogradient.gramian.path import choose_parameter_path
from mogradient.gramian_engine import GramianRecorder
from mogradient_llm.config import MOConfig
from mogradient_llm.estimators import Estimator, Minibatch
from mogradient_llm.loop.batch import RolloutBatch
from mogradient_llm.loop.nonfinite import NonFiniteGuard
from mogradient_llm.objectives.logprob_gramian import head_transform, logprob_slopes, token_gramian
from mogradient_llm.objectives.logprob_jacobian import factorised_jacobian, plain_head
from mogradient_llm.objectives.loss import MultiObjectiveLoss
from mogradient_llm.objectives.surrogate import token_weights
from mogradient_llm.policy.rollout import response_logprobs

#: A minibatch's policy losses ``[m]``, the extra loss, the hidden states and the stats.
Losses = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class LossScale:
    """What a micro-batch's token losses are averaged over: the minibatch's sequences and
    response tokens divided by the number of micro-batches (accumulate divides again)."""

    rows: float
    tokens: float

    @classmethod
    def of(
        cls,
        batch: RolloutBatch,
        index: torch.Tensor,
        micro_batches: int = 1,
        tokens: float | None = None,
    ) -> LossScale:
        """``tokens``: what the minibatch's token count is taken to be (default: its own)."""
        if tokens is None:
            tokens = float(batch.mask[index].sum().clamp(min=1))
        return cls(len(index) / micro_batches, tokens / micro_batches)


def global_token_count(accelerator: Accelerator, batch: RolloutBatch, rows: int) -> float:
    """DAPO's normaliser as TRL's: the step's response tokens summed over every process, divided
    by the process count (DDP averages the gradients over them) and by the minibatches of the step
    (``batch.size / rows``), so every rank and minibatch divides by the same global count."""
    total = accelerator.reduce(batch.mask.sum().reshape(1).float(), "sum")
    per_process = float(total.sum()) / accelerator.num_processes
    return max(per_process * rows / batch.size, 1.0)


def build_optimizer(module: nn.Module, config: MOConfig) -> torch.optim.AdamW:
    """AdamW over ``module``'s trainable parameters as transformers' ``Trainer`` builds it (TRL's
    optimiser): ``weight_decay`` on every weight except biases and normalisation layers."""
    from transformers import Trainer

    decayed = set(Trainer.get_decay_parameter_names(cast(Trainer, None), module))
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decayed], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.learning_rate, weight_decay=0.0
    )


def build_scheduler(optimizer: Any, config: MOConfig) -> Any:
    """The config's learning-rate schedule over every optimiser step of the run (``max_steps``
    steps × epochs × minibatches), with its warm-up."""
    from transformers import get_scheduler

    updates = config.max_steps * config.epochs * (config.batch_size // config.mini_batch_size)
    return get_scheduler(
        config.lr_scheduler_type,
        optimizer,
        num_warmup_steps=config.warmup_steps or math.ceil(config.warmup_ratio * updates),
        num_training_steps=updates,
    )


@dataclass
class Updater:
    """Runs the minibatch epochs of a step for a prepared model, optimiser and scheduler."""

    config: MOConfig
    accelerator: Accelerator
    model: nn.Module
    optimizer: Any
    scheduler: Any
    estimator: Estimator
    objective: MultiObjectiveLoss
    guard: NonFiniteGuard
    temperature: float
    max_length: int
    policy: Callable[[], nn.Module]

    def optimize(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        """``epochs`` passes of minibatch updates; returns the averaged statistics.

        A minibatch whose losses are not finite raises ``NonFiniteError``, or with
        ``skip_nonfinite`` is skipped (no update) with a warning.
        """
        cfg = self.config
        totals: dict[str, float] = {}
        count = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(batch.size, device=batch.input_ids.device)
            for start in range(0, batch.size, cfg.mini_batch_size):
                stats = self.update(batch, order[start : start + cfg.mini_batch_size], step)
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                count += bool(stats)
        return {key: value / max(count, 1) for key, value in totals.items()}

    def minibatch_losses(
        self, batch: RolloutBatch, index: torch.Tensor, scale: LossScale | None = None
    ) -> Losses:
        """Per-objective policy losses ``[m]``, the extra loss (value loss, KL term), the last
        hidden states and the stats of the rows ``index``.

        ``scale``: what token losses are averaged over (default: the rows of ``index``).
        """
        return self._forward(batch, index, scale)[0]

    def _forward(
        self, batch: RolloutBatch, index: torch.Tensor, scale: LossScale | None = None
    ) -> tuple[Losses, Minibatch]:
        """:meth:`minibatch_losses` and what its policy losses read (:class:`Minibatch`)."""
        q = batch.query_length
        ids = batch.input_ids[index]
        logits, values, hidden = self.model(ids, batch.attention_mask[index])
        logprobs = response_logprobs(logits, ids, q, self.temperature)
        if values is not None:
            values = values[:, q - 1 : -1].float().permute(2, 0, 1)
        mask = batch.mask[index]
        scale = scale or LossScale.of(batch, index)
        weights = token_weights(
            mask, self.estimator.normalization, scale.rows, scale.tokens, self.max_length
        )
        old = logprobs.detach() if batch.old_logprobs is None else batch.old_logprobs[index]
        if batch.live_logprobs is not None:
            batch.live_logprobs[index] = logprobs.detach().to(batch.live_logprobs.dtype)
        p_losses, stats = self.estimator.policy_losses(
            logprobs, old, batch.advantages[:, index], weights
        )
        ref = None if batch.ref_logprobs is None else batch.ref_logprobs[index]
        rows = Minibatch(index, logprobs, old, weights, ref, values)
        extra, extra_stats = self.estimator.extra_loss(batch.estimate, rows)
        return (p_losses, extra, hidden, {**stats, **extra_stats}), rows

    def update(self, batch: RolloutBatch, index: torch.Tensor, step: int) -> dict[str, float]:
        """One optimiser step on the minibatch ``index``, split into the config's micro-batches.
        Returns ``{}`` for a skipped minibatch."""
        acc, cfg = self.accelerator, self.config
        micro = index.chunk(cfg.gradient_accumulation_steps)
        tokens = None
        if self.estimator.normalization == "global_token":
            tokens = global_token_count(acc, batch, len(index))
        scale = LossScale.of(batch, index, len(micro), tokens)
        held: Losses | None = None
        weights: torch.Tensor | None = None
        direction: torch.Tensor | None = None
        stats: dict[str, float] = {}
        if self.objective.gradient_level:
            decided = self._policy_gramian(batch, micro, scale, step)
            if decided is None:
                return {}
            statistic, held = decided
            if self.objective.decides_direction:
                direction, stats = self.objective.decide_direction(
                    statistic, batch.objective_losses
                )
            else:
                weights, stats = self.objective.decide(statistic, batch.objective_losses)
        totals: dict[str, float] = {}
        skipped = False
        for idx in micro:
            with acc.accumulate(self.model):
                if skipped:
                    continue
                p_losses, extra, _, micro_stats = held or self.minibatch_losses(batch, idx, scale)
                if held is None and self._skip_nonfinite(batch, p_losses, extra, step):
                    skipped = True
                    continue
                if direction is None:
                    policy_loss = self.objective.reduce(p_losses, weights)
                else:
                    policy_loss = self.objective.along(direction, self._trainable())
                acc.backward(policy_loss + extra)
                if acc.sync_gradients and cfg.max_grad_norm is not None:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                if acc.sync_gradients and not acc.optimizer_step_was_skipped:
                    self.scheduler.step()
                self.optimizer.zero_grad()
                micro_stats["loss/policy_avg"] = p_losses.detach().mean()
                for key, value in micro_stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value) / len(micro)
        if skipped:  # what the earlier micro-batches accumulated must not reach the next step
            self.model.zero_grad(set_to_none=True)
            return {}
        return {**totals, **stats}

    def _policy_gramian(
        self,
        batch: RolloutBatch,
        micro: Sequence[torch.Tensor],
        scale: LossScale,
        step: int,
    ) -> tuple[torch.Tensor, Losses | None] | None:
        """The global Gramian of the minibatch's per-objective policy losses (their global k×d
        Jacobian for a Jacobian weighting), and the outputs of its forward when there is one
        micro-batch (its graph then serves the update too); ``None`` when a loss is not finite
        and the minibatch is skipped.

        Parameters level with one micro-batch and ``parameter_gramian="layers"`` (or ``"auto"``
        when the k×d Jacobian would exceed the memory budget,
        :func:`mogradient.gramian.path.choose_parameter_path`): accumulated layer by layer
        during one backward (:class:`mogradient.gramian_engine.GramianRecorder`), never holding
        the k×d Jacobian (block products in float32, summed in float64 with their
        rounding bound). With several micro-batches the Gramian is that of the
        summed gradients, which needs every layer's k gradients at once: the Jacobian path
        (:meth:`MultiObjectiveLoss.accumulator`, float64 products).

        With a plain linear LM head each micro-batch is factorised through the head
        (:meth:`_factorised`): at the features level its Gramian, no backward per objective; at
        the parameters level (Jacobian path) its Jacobian, one backward of the hidden states per
        objective with the head's gradient formed in float64. Otherwise (a soft-capped or scaled
        head, none at all, LoRA on the head) the hidden states' or the parameters' Jacobian.
        """
        cfg = self.config
        policy = self.policy()
        params = self._trainable()
        jacobian = self.objective.decides_direction
        if cfg.gramian_level == "parameters" and len(micro) == 1 and not jacobian:
            requested = {"jacobian": "loop"}.get(cfg.parameter_gramian, cfg.parameter_gramian)
            k = batch.advantages.shape[0]
            if choose_parameter_path(k, params, requested=requested, can_record=True) == "layers":
                with GramianRecorder(policy, params=params) as recorder:
                    out = self.minibatch_losses(batch, micro[0], scale)
                if self._skip_nonfinite(batch, out[0], out[1], step):
                    return None
                return recorder.gramian(list(out[0].unbind())), out
        accumulator = self.objective.accumulator(len(micro))
        head = None if jacobian else self._linear_head()
        held = None
        for idx in micro:
            with self.accelerator.no_sync(self.model) if len(micro) > 1 else nullcontext():
                out, rows = self._forward(batch, idx, scale)
            if self._skip_nonfinite(batch, out[0], out[1], step):
                return None
            if head is not None:
                self._factorised(accumulator, batch, rows, out[2], head, len(micro) == 1)
            else:
                inputs = [out[2]] if cfg.gramian_level == "features" else params
                accumulator.add(out[0].unbind(), inputs, retain_graph=len(micro) == 1)
            held = out if len(micro) == 1 else None
        return (accumulator.jacobian() if jacobian else accumulator.gramian()), held

    def _linear_head(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The policy's LM head ``(W, b)`` when its logits are ``W h + b`` of the hidden states
        the features level differentiates (at the parameters level also a plain ``nn.Linear``
        whose gradient joins its weight's row, :func:`plain_head`); ``None`` (differentiate the
        hidden states or the parameters) otherwise."""
        policy = self.policy()
        head = getattr(policy, "get_output_embeddings", lambda: None)()
        if not isinstance(head, nn.Linear) or head_transform(policy.config) is not None:
            return None
        if self.config.gramian_level == "parameters" and not plain_head(policy):
            return None
        return head.weight, head.bias

    def _factorised(
        self,
        accumulator: GramianAccumulator,
        batch: RolloutBatch,
        rows: Minibatch,
        hidden: torch.Tensor,
        head: tuple[torch.Tensor, torch.Tensor | None],
        retain_graph: bool,
    ) -> None:
        """Fold this micro-batch in, factorised through the LM head: the policy losses read the
        hidden states only through the log-probs, so they are re-evaluated on a float64 copy of
        those for their slopes; the head then gives each token's ``‖∂ℓₜ/∂hₜ‖²`` (features
        level, :mod:`mogradient_llm.objectives.logprob_gramian`) or the parameters' Jacobian
        from one backward of the hidden states per objective plus the head's own gradient
        (:mod:`mogradient_llm.objectives.logprob_jacobian`)."""
        leaf = rows.logprobs.detach().to(torch.float64).requires_grad_()
        losses, _ = self.estimator.policy_losses(
            leaf, rows.old_logprobs, batch.advantages[:, rows.index], rows.weights
        )
        slopes = logprob_slopes(losses.unbind(), leaf)
        assert slopes is not None  # no other outputs to depend on
        q = batch.query_length
        positions, targets = hidden[:, q - 1 : -1], batch.input_ids[rows.index][:, q:]
        weight, bias = head
        if self.config.gramian_level == "features":
            accumulator.add_gramian(
                token_gramian(slopes, positions, targets, weight, self.temperature, bias)
            )
            return
        jacobian, scale = factorised_jacobian(
            slopes,
            positions,
            targets,
            weight,
            self._trainable(),
            self.temperature,
            bias,
            retain_graph,
        )
        accumulator.add_jacobian(jacobian, scale)

    def _trainable(self) -> list[torch.Tensor]:
        """The policy's trainable parameters, in the order of the Jacobian's columns."""
        return [p for p in self.policy().parameters() if p.requires_grad]

    def _skip_nonfinite(
        self, batch: RolloutBatch, p_losses: torch.Tensor, extra: torch.Tensor, step: int
    ) -> bool:
        """Whether any rank met a non-finite loss (then raise, or warn with ``skip_nonfinite``)."""
        problem = self.guard.agree(self._nonfinite_loss(batch.advantage_names, p_losses, extra))
        if problem is not None:
            self.guard.report(problem, step)
        return problem is not None

    def _nonfinite_loss(
        self, names: Sequence[str], p_losses: torch.Tensor, extra: torch.Tensor
    ) -> str | None:
        """A description of the first non-finite loss (``names``: the rows'), or ``None``."""
        for name, loss in zip(names, p_losses.detach()):
            if not torch.isfinite(loss):
                return f"the policy loss of objective {name!r} is {float(loss)}"
        if not torch.isfinite(extra.detach()):
            what = (
                "value loss (sum over objectives' heads)"
                if self.estimator.value_heads
                else ("KL loss")
            )
            return f"the {what} is {float(extra)}"
        return None
