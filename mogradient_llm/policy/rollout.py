"""Sampling completions with ``generate`` and scoring their tokens' log-probabilities (the
sampled distribution is the scored one: see :mod:`mogradient_llm.policy.sampling`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers import GenerationConfig

from mogradient_llm.policy.sampling import as_sampling_config, neutral_generation_config

if TYPE_CHECKING:
    from transformers import GenerationMixin


@dataclass
class Rollout:
    """Prompts and sampled completions (left-padded queries, right-padded responses).

    ``response_mask`` is 1 on the response tokens up to and including the first EOS, i.e. the
    first of any of ``eos_token_ids`` (all those the tokenizer and the model declare).
    """

    prompts: list[str]
    completions: list[str]
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    eos_token_ids: tuple[int, ...]

    def __getitem__(self, index: slice) -> Rollout:
        return Rollout(
            self.prompts[index],
            self.completions[index],
            self.query_ids[index],
            self.query_mask[index],
            self.response_ids[index],
            self.response_mask[index],
            self.eos_token_ids,
        )

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], 1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, torch.ones_like(self.response_ids)], 1)


@torch.no_grad()
def generate_rollout(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    generation: GenerationConfig | Mapping[str, Any],
    device: torch.device | str,
    synced_gpus: bool | None = None,
) -> Rollout:
    """One completion per prompt, sampled from softmax(logits / temperature) (``tokenizer`` must
    pad on the left).

    ``generation`` is a config from :func:`~mogradient_llm.policy.sampling.sampling_config` (build
    it once) or the generation kwargs to build it from; the model's own ``generation_config`` is
    ignored but for its EOS ids. Responses end at the first of any EOS id. Prompts longer than the
    model's context minus ``max_new_tokens`` are truncated from the left (their end, which the
    completion continues, is kept) with a warning. ``synced_gpus`` goes to ``generate`` (needed when
    the model is sharded across ranks)."""
    generation = as_sampling_config(generation, model, tokenizer)
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    lengths = enc["attention_mask"].sum(1)
    if bool((lengths == 0).any()):
        i = int((lengths == 0).nonzero()[0])
        raise ValueError(f"prompt {i} ({prompts[i]!r}) is empty after tokenisation; drop it")
    limit = _prompt_token_limit(model, generation.max_new_tokens)
    if limit is not None and enc["input_ids"].shape[1] > limit:
        warnings.warn(
            f"{int((lengths > limit).sum())} prompt(s) longer than {limit} tokens (the model's "
            f"context minus max_new_tokens) truncated from the left",
            stacklevel=2,
        )
        enc = {key: value[:, -limit:] for key, value in enc.items()}  # left-padded rows
    enc = {key: value.to(device) for key, value in enc.items()}
    was_training = model.training
    model.eval()
    try:
        with neutral_generation_config(model):
            # nn.Module types attributes as Tensor | Module: the model is a causal LM (or its
            # peft wrapper).
            output = cast("GenerationMixin", model).generate(
                **enc, generation_config=generation, synced_gpus=synced_gpus
            )
    finally:
        model.train(was_training)
    eos = tuple(generation.eos_token_id)
    response = output[:, enc["input_ids"].shape[1] :]
    mask = response_mask(response, eos)
    # The text stops before the first EOS, which need not be a special token.
    first_eos = torch.isin(response, torch.tensor(eos, device=response.device)) & mask.bool()
    completions = [
        tokenizer.decode(row[: int(n)], skip_special_tokens=True)
        for row, n in zip(response, mask.sum(1) - first_eos.sum(1))
    ]
    return Rollout(
        list(prompts),
        completions,
        enc["input_ids"],
        enc["attention_mask"],
        response,
        mask,
        eos,
    )


def response_mask(response_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """1 on the response tokens up to and including the first of any of ``eos_token_ids``."""
    eos = torch.tensor(list(eos_token_ids), dtype=response_ids.dtype, device=response_ids.device)
    is_eos = torch.isin(response_ids, eos).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).long()


def _prompt_token_limit(model: nn.Module, new_tokens: int) -> int | None:
    """How many prompt tokens fit before ``max_new_tokens`` (``None``: no known limit)."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if context is None:
        return None
    if new_tokens >= context:
        raise ValueError(
            f"max_new_tokens={new_tokens} leaves no room for a prompt in the model's context of "
            f"{context} tokens; lower max_new_tokens"
        )
    return context - new_tokens


def response_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, query_length: int, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probabilities ``[batch, T]`` of the response tokens (those after ``query_length``)
    under softmax(logits / temperature).

    Gathered logit minus logsumexp, one sequence at a time in float32: without grad the fp32
    temporaries are one ``[T, vocab]`` row, not three ``[batch, T, vocab]`` copies (with grad,
    each row's fp32 copy is kept for backward, as log_softmax's output was). bf16 logits and
    their fp32 conversion take the same path and give bit-identical results.
    """
    targets = input_ids[:, query_length:]
    rows = []
    for row_logits, row_targets in zip(logits[:, query_length - 1 : -1], targets):
        scaled = row_logits.float()
        if temperature != 1.0:  # x / 1 == x exactly: skipping it only saves a copy
            scaled = scaled / temperature
        picked = scaled.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(scaled, -1))
        del scaled
    return torch.stack(rows)


def lm_response_logprobs(
    model: nn.Module, rollout: Rollout, temperature: float = 1.0
) -> torch.Tensor:
    """Response log-probabilities under a plain causal LM (e.g. the reference model)."""
    input_ids, attention_mask = rollout.input_ids, rollout.attention_mask
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=False,
    ).logits
    return response_logprobs(logits, input_ids, rollout.query_ids.shape[1], temperature)
