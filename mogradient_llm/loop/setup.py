"""What the trainer sets up once: the accelerator, the tokenizer's padding, the KL reference,
and the checks a distributed setup must pass."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin
from torch import nn

from mogradient import Aggregator
from mogradient_llm.config import MOConfig
from mogradient_llm.objectives.building import aggregator_from
from mogradient_llm.objectives.constraints import lagrangian_from
from mogradient_llm.objectives.loss import MultiObjectiveLoss
from mogradient_llm.policy.lora import apply_lora


def objective_loss(
    config: MOConfig, names: list[str], aggregator: Aggregator | None = None
) -> MultiObjectiveLoss:
    """The multi-objective loss of ``names`` with ``aggregator`` (default: the one the config
    names, ``reward_weights`` as its preference) at the config's level, with the config's
    constraints; with ``conditioned``, each preference's aggregator is the config's method
    built for that preference."""
    if aggregator is None:
        aggregator = aggregator_from(
            config.aggregator,
            config.aggregator_kwargs,
            config.reward_weights,
            preference_name="reward_weights",
        )
    constraints = lagrangian_from(config, names)
    per_preference = None
    if config.conditioned:

        def per_preference(preference: Sequence[float]) -> Aggregator:
            return aggregator_from(config.aggregator, config.aggregator_kwargs, preference)

    objective = MultiObjectiveLoss(
        aggregator,
        names,
        level=config.gramian_level,
        normalize_weights=config.normalize_weights,
        noon=config.noon,
        constraints=constraints,
        per_preference=per_preference,
    )
    if objective.decides_direction and config.parameter_gramian != "jacobian":
        raise ValueError(
            f"{objective.aggregator!r} decides from the k×d Jacobian over the parameters, which "
            f"parameter_gramian={config.parameter_gramian!r} never forms: set "
            "parameter_gramian='jacobian' (--parameter-gramian jacobian)"
        )
    return objective


def check_sharding(objective: MultiObjectiveLoss, accelerator: Accelerator) -> None:
    """Parameter-level Gramians need every objective's full gradient: not under FSDP/ZeRO."""
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and objective.gradient_level and objective.level == "parameters":
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


def accumulating_accelerator(accelerator: Accelerator | None, config: MOConfig) -> Accelerator:
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


def padding_tokenizer(tokenizer: Any) -> Any:
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


def policy_and_reference(
    config: MOConfig,
    model: nn.Module,
    ref_model: nn.Module | None,
    needs_reference: bool,
    accelerator: Accelerator,
) -> tuple[nn.Module, nn.Module | None, bool]:
    """The policy to train (LoRA-wrapped with ``lora_r``), the frozen KL reference on the
    device (``None`` when none is needed or LoRA's base serves), and whether the reference is
    the policy with its adapters disabled."""
    ref_is_base = False
    if config.lora_r:
        model = apply_lora(model, config)
        ref_is_base = ref_model is None and needs_reference
    elif ref_model is None and needs_reference:
        ref_model = copy.deepcopy(model)
    if ref_model is None or not needs_reference:
        return model, None, ref_is_base
    return model, ref_model.eval().requires_grad_(False).to(accelerator.device), ref_is_base
