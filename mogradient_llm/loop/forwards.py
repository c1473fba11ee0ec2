"""The forwards a step runs before its updates, without grad: the sampling policy's
log-probabilities, the KL reference's and the value heads' values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from accelerate import Accelerator
from torch import nn

from mogradient_llm.estimators import Estimator
from mogradient_llm.policy.rollout import Rollout, lm_response_logprobs, response_logprobs

if TYPE_CHECKING:
    from peft import PeftModel

Forwards = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


@dataclass
class RolloutForwards:
    """Runs, in chunks of ``chunk`` completions, what ``estimator`` needs before the updates.

    The reference runs under the policy's autocast, so that two identical models give a KL of
    exactly 0 in mixed precision too; with LoRA (``ref_is_base``) it is the prepared model
    itself with its adapters disabled (so FSDP/ZeRO-3 gather its shards).
    """

    accelerator: Accelerator
    model: nn.Module  #: the prepared policy with value heads
    policy: Callable[[], nn.Module]  #: the unwrapped causal LM
    ref_model: nn.Module | None
    ref_is_base: bool
    estimator: Estimator
    temperature: float
    chunk: int

    def __call__(self, rollout: Rollout) -> Forwards:
        """The policy's log-probs ``[B, T]``, the reference's ``[B, T]`` and the values
        ``[k, B, T]`` (``None`` for what the estimator does not need)."""
        est = self.estimator
        need_ref = est.needs_reference
        # the KL's two sides, unless the loss alone reads it from its own forward (GRPO)
        need_kl = need_ref and not est.kl_in_loss_only
        need_policy = est.needs_old_logprobs or est.value_heads or need_kl
        if not (need_policy or need_ref):
            return None, None, None
        logprobs, ref_logprobs, values = [], [], []
        q = rollout.query_ids.shape[1]
        for start in range(0, len(rollout.prompts), self.chunk):
            chunk = rollout[start : start + self.chunk]
            if need_policy:
                logits, v, _ = self.model(chunk.input_ids, chunk.attention_mask)
                logprobs.append(response_logprobs(logits, chunk.input_ids, q, self.temperature))
                if v is not None:
                    values.append(v[:, q - 1 : -1].float())
            if need_ref:
                ref_logprobs.append(self.reference_logprobs(chunk, q))
        return (
            torch.cat(logprobs) if logprobs else None,
            torch.cat(ref_logprobs) if ref_logprobs else None,
            torch.cat(values).permute(2, 0, 1) if values else None,
        )

    def reference_logprobs(self, chunk: Rollout, query_length: int) -> torch.Tensor:
        """The KL reference's response log-probabilities of ``chunk``."""
        if self.ref_is_base:
            with cast("PeftModel", self.policy()).disable_adapter():
                logits, _, _ = self.model(chunk.input_ids, chunk.attention_mask)
            return response_logprobs(logits, chunk.input_ids, query_length, self.temperature)
        assert self.ref_model is not None  # needs_reference: a reference was loaded
        with self.accelerator.autocast():
            return lm_response_logprobs(self.ref_model, chunk, self.temperature)
