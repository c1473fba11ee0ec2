"""The loss of Gramian weightings inside TRL's ``_compute_loss``: one forward, one policy loss
per objective (TRL's own formula, with its ratios, clipping and token normalisation), the
weights decided from their Gramian, ``Σ wᵢ Lᵢ`` plus the shared regulariser once.

TRL's ``_compute_loss`` is called with each objective's advantages in turn; its forward
(``_get_per_token_logps_and_entropies``) runs once and is reused. The regulariser (GRPO's
``β·KL``, the entropy bonus, a MoE router's aux loss) does not depend on the advantages, so the
k policy losses are taken with it switched off and it is added once:
``R = L(A_w) − L_policy(A_w)`` at the decided combination ``A_w = Σ wᵢ Aᵢ``, whose call also
logs TRL's usual metrics once. The returned loss goes through TRL's backward, loss scaling and
accumulation unchanged.

At both levels the Gramian is factorised through TRL's fused LM head
(:mod:`~mogradient_llm.integrations.trl.factorised`): no backward through the head per
objective, the k losses evaluated again on a float64 copy of the log-probs instead; at the
parameters level each objective's cotangent at the backbone's output is backpropagated once and
the head's gradient is formed in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from mogradient_llm.integrations.trl.factorised import logprob_gramian
from mogradient_llm.integrations.trl.forward import one_forward
from mogradient_llm.integrations.trl.hidden import last_hidden_state
from mogradient_llm.integrations.trl.metrics import log_stats, metrics_discarded
from mogradient_llm.objectives.advantages import Advantages

ComputeLoss = Callable[[nn.Module, dict[str, Any]], torch.Tensor]
#: The trainer attributes that switch the regulariser on, and their "off" values.
REGULARISERS = {"beta": 0.0, "_entropy_bonus_enabled": False, "aux_loss_enabled": False}
#: The key of the per-objective advantages ``[B, k]`` in TRL's batch.
KEY = "objective_advantages"


@contextmanager
def regulariser_off(trainer: Any) -> Iterator[None]:
    """TRL's ``_compute_loss`` without β·KL, the entropy bonus and the aux loss."""
    saved = {name: getattr(trainer, name) for name in REGULARISERS if hasattr(trainer, name)}
    try:
        for name in saved:
            setattr(trainer, name, REGULARISERS[name])
        yield
    finally:
        for name, value in saved.items():
            setattr(trainer, name, value)


def has_regulariser(trainer: Any, algorithm: str) -> bool:
    """Whether TRL's loss adds a term that does not depend on the advantages (RLOO's β is in
    the reward, not the loss)."""
    beta = algorithm == "grpo" and getattr(trainer, "beta", 0.0) != 0.0
    others = ("_entropy_bonus_enabled", "aux_loss_enabled")
    return beta or any(getattr(trainer, name, False) for name in others)


def gramian_loss(
    trainer: Any, model: nn.Module, inputs: dict[str, Any], compute_loss: ComputeLoss
) -> torch.Tensor:
    """``Σ wᵢ Lᵢ + R`` for the micro-batch ``inputs`` with weights decided from the Gramian of
    the ``Lᵢ``'s gradients (``trainer.mo_objective``'s level), averaged over the ranks."""
    objective = trainer.mo_objective
    mode = "train" if trainer.model.training else "eval"
    per_objective = inputs[KEY]  # [b, k]
    ones = per_objective.new_ones(per_objective.shape[0], 1)
    advantages = Advantages.of(per_objective.T, objective.names)
    unwrapped = _unwrapped(trainer, model)
    features = objective.level == "features"
    params: list[torch.Tensor] | None = None
    if not features:
        params = [p for p in model.parameters() if p.requires_grad]
    with one_forward(trainer) as forward, _hidden_state(unwrapped, features) as hidden:
        prepared, stats = objective.prepare(advantages, ones)
        rows = prepared.values[..., 0]  # [k, b]
        with regulariser_off(trainer):
            factorised = logprob_gramian(
                trainer, model, unwrapped, inputs, rows, compute_loss, forward, hidden, params
            )
        if factorised is None:
            with regulariser_off(trainer), metrics_discarded(trainer._metrics):
                losses = torch.stack(
                    [compute_loss(model, {**inputs, "advantages": a}) for a in rows]
                )
            gramian = objective.gramian(losses, _hidden(hidden) if params is None else params)
        elif features:
            gramian = objective.logprob_gramian(factorised.local)
        else:
            gramian = objective.jacobian_gramian(factorised.local, factorised.scale)
        weights, decided = objective.decide(gramian, trainer._mo_losses.get(mode))
        stats.update(decided)
        if factorised is None:
            loss = objective.reduce(losses, weights.to(losses))
        else:
            loss = factorised.reduce(weights)
        combined = {**inputs, "advantages": weights.detach().to(rows) @ rows}
        full = compute_loss(model, combined)  # logs TRL's metrics once
        if has_regulariser(trainer, trainer.mo_algorithm):
            with regulariser_off(trainer), metrics_discarded(trainer._metrics):
                loss = loss + (full - compute_loss(model, combined))
    log_stats(trainer._metrics[mode], stats)
    return loss


def _unwrapped(trainer: Any, model: nn.Module) -> nn.Module:
    """``model`` without its DDP wrapper, unwrapped once per wrapper (accelerate's
    ``unwrap_model`` looks DeepSpeed up on every call: about 1 ms)."""
    cached = getattr(trainer, "_mo_unwrapped", None)
    if cached is None or cached[0] is not model:
        cached = (model, trainer.accelerator.unwrap_model(model))
        trainer._mo_unwrapped = cached
    return cached[1]


@contextmanager
def _hidden_state(unwrapped: nn.Module, features: bool) -> Iterator[dict[str, torch.Tensor]]:
    """:func:`last_hidden_state`; at the parameters level an empty record (the parameters are
    differentiated instead) for a model without a backbone under its head."""
    with ExitStack() as stack:
        try:
            captured = stack.enter_context(last_hidden_state(unwrapped))
        except TypeError:
            if features:
                raise
            captured = {}
        yield captured


def _hidden(hidden: dict[str, torch.Tensor]) -> torch.Tensor:
    """The recorded hidden state the features Gramian differentiates."""
    if "hidden" not in hidden:
        raise RuntimeError(
            "the backbone's forward hook did not fire during TRL's forward (a model whose "
            "forward bypasses base_model); use gramian_level='parameters'"
        )
    return hidden["hidden"]
