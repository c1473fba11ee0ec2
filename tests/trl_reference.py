"""TRL 1.16's GRPO and RLOO run on fixed completions next to ours, for the parity tests.

Both sides get the same tiny policy (the saved tiny GPT-2 with a seeded perturbation: the
sampling policy π_old), the same reference (the saved model itself), the same prompt and
completion token ids and the same rewards. TRL's own ``_generate_and_score_completions`` computes
its advantages (its ``_generate`` is replaced by one that returns the fixed completions), then
the policy moves by a second seeded perturbation (π ≠ π_old: the ratio and its clip matter) and
TRL's ``_compute_loss`` gives its loss and gradients; ours come from ``MOTrainer.prepare_batch``
and one ``Updater.update`` on the same batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from mogradient_llm.policy.rollout import Rollout
from tests.llm_fixtures import load_tiny_lm, tiny_lm_dir

G = 4
MAX_TOKENS = 6
#: One prompt per group, all three tokens long (no left padding: both sides place every token
#: at the same position).
PROMPTS = ([5, 17, 42], [8, 9, 100], [31, 64, 77], [12, 250, 7])
#: Completion lengths (EOS included); MAX_TOKENS without an EOS is a truncated completion.
LENGTHS = (2, 6, 4, 3, 5, 1, 6, 2, 3, 3, 6, 4, 2, 5, 6, 1)
#: Seeds of the two perturbations: the sampling policy, then the policy being updated.
OLD_SEED, NEW_SEED = 1, 2


def completion_ids(prompts: int) -> list[list[int]]:
    """``G`` fixed completions per prompt: seeded tokens other than EOS (id 0), then EOS unless
    the completion fills ``MAX_TOKENS``."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for length in LENGTHS[: prompts * G]:
        body = torch.randint(10, 390, (length,), generator=gen).tolist()
        out.append(body if length == MAX_TOKENS else body[:-1] + [0])
    return out


def rewards(prompts: int) -> torch.Tensor:
    """Two objectives' fixed rewards ``[2, prompts × G]``, spread within every group."""
    gen = torch.Generator().manual_seed(3)
    return torch.randn(2, prompts * G, generator=gen).mul(2).round(decimals=2)


def perturb(model: torch.nn.Module, seed: int, size: float = 0.05) -> None:
    """Add seeded noise to every parameter (in ``named_parameters`` order, the same on both
    sides: they are the same class)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * size)


def fixed_reward(index: int, values: torch.Tensor, start: int = 0):
    """A TRL reward function returning objective ``index``'s fixed values (``start``: the rank's
    first completion)."""

    def reward(completions, **kwargs):
        rows = values[index, start : start + len(completions)]
        return [float(v) for v in rows]

    reward.__name__ = f"r{index}"
    return reward


def trl_trainer(
    algorithm: str, prompts: int, classes: tuple[type, type] | None = None, **args: Any
) -> Any:
    """TRL's ``GRPOTrainer``/``RLOOTrainer`` (or ``classes``: a config and a trainer class
    built on them) on the tiny policy (perturbed by ``OLD_SEED``) whose generation returns the
    fixed completions of ``prompts`` prompts."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = (
        classes
        or {
            "grpo": (GRPOConfig, GRPOTrainer),
            "rloo": (RLOOConfig, RLOOTrainer),
        }[algorithm]
    )
    values = rewards(prompts)
    config = config_class(
        **{
            "output_dir": tempfile.mkdtemp(prefix="trl-parity-"),
            "per_device_train_batch_size": prompts * G,
            "num_generations": G,
            "max_completion_length": MAX_TOKENS,
            "use_cpu": True,
            "bf16": False,
            "report_to": "none",
            "disable_dropout": True,
            "seed": 0,
            **args,
        }
    )
    path = tiny_lm_dir()
    _, tokenizer = load_tiny_lm(path)
    trainer = trainer_class(
        model=str(path),
        processing_class=tokenizer,
        reward_funcs=[fixed_reward(0, values), fixed_reward(1, values)],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["x"] * prompts}),
    )
    perturb(trainer.model, OLD_SEED)
    ids = completion_ids(prompts)
    prompt_ids = [list(PROMPTS[i // G]) for i in range(prompts * G)]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    if algorithm == "grpo":
        trainer._generate = lambda p: (prompt_ids, ids, None, texts, None, {}, None, None)
    else:
        trainer._generate = lambda p: (prompt_ids, ids, texts)
    trainer.model.train()
    # set by training_step, which we skip
    trainer.current_gradient_accumulation_steps = config.gradient_accumulation_steps
    return trainer


def trl_step(trainer: Any, prompts: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TRL's advantages ``[B]`` and, after the policy moves by ``NEW_SEED``, the gradients of its
    loss by parameter name, summed over ``gradient_accumulation_steps`` consecutive micro-batches
    as its ``training_step`` accumulates them (GRPO's loss is already scaled for accumulation)."""
    inputs = [{"prompt": "x"} for _ in range(prompts * G)]
    output = trainer._generate_and_score_completions(inputs)
    perturb(trainer.model, NEW_SEED)
    trainer.model.zero_grad()
    micro = trainer.current_gradient_accumulation_steps
    rows = len(inputs) // micro
    for start in range(0, len(inputs), rows):
        part = {
            k: v[start : start + rows] if torch.is_tensor(v) and v.ndim > 0 else v
            for k, v in output.items()
        }
        trainer._compute_loss(trainer.model, part).backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()}
    return output["advantages"].detach(), grads


def our_rollout(prompts: int, first: int = 0, lm_dir: Path | None = None) -> Rollout:
    """The fixed completions of prompts ``first … first + prompts − 1`` as our rollout."""
    ids = completion_ids(first + prompts)[first * G :]
    _, tokenizer = load_tiny_lm(lm_dir)
    response = torch.zeros(len(ids), MAX_TOKENS, dtype=torch.long)  # padded with EOS
    for row, c in enumerate(ids):
        response[row, : len(c)] = torch.tensor(c)
    query = torch.tensor([PROMPTS[first + i // G] for i in range(len(ids))])
    mask = torch.zeros_like(response)
    for row, c in enumerate(ids):
        mask[row, : len(c)] = 1
    return Rollout(
        ["x"] * len(ids),
        tokenizer.batch_decode(ids, skip_special_tokens=True),
        query,
        torch.ones_like(query),
        response,
        mask,
        (tokenizer.eos_token_id,),
    )


def our_trainer(
    algorithm: str,
    prompts: int,
    accelerator: Any = None,
    lm_dir: Path | None = None,
    **overrides: Any,
) -> Any:
    """Our ``MOTrainer`` on the same perturbed policy and reference (``lm_dir``: the saved tiny
    model, for processes that did not build it), ``linear`` over the two rewards unless
    ``overrides`` say otherwise."""
    from mogradient_llm.estimators import estimator_class
    from mogradient_llm.loop.trainer import MOTrainer

    values = rewards(prompts)
    model, tokenizer = load_tiny_lm(lm_dir)
    perturb(model, OLD_SEED)
    ref, _ = load_tiny_lm(lm_dir)
    generation = {"max_new_tokens": MAX_TOKENS, "do_sample": True, "top_k": 0, "top_p": 1.0}
    config = estimator_class(algorithm).config_class(
        **{
            "batch_size": prompts * G,
            "mini_batch_size": prompts * G,
            "num_generations": G,
            "aggregator": "linear",
            "max_grad_norm": None,
            "generation_kwargs": generation,
            **overrides,
        }
    )
    funcs = [fixed_reward(0, values), fixed_reward(1, values)]
    return MOTrainer(
        config, model, tokenizer, funcs, ["x"] * 8, ref_model=ref, accelerator=accelerator
    )


def our_step(
    trainer: Any, scores: torch.Tensor, rollout: Rollout
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Our combined advantages ``[B]`` and, after the policy moves by ``NEW_SEED``, the
    gradients our optimiser steps on, by parameter name (DDP-averaged over the processes)."""
    batch = trainer.prepare_batch(rollout, scores)
    policy = trainer.policy
    perturb(policy, NEW_SEED)
    names = {id(p): n for n, p in policy.named_parameters()}
    grads: dict[str, torch.Tensor] = {}

    def record(optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                grads[names[id(p)]] = p.grad.detach().clone()

    handle = trainer.optimizer.optimizer.register_step_pre_hook(record)
    trainer.updater.update(batch, torch.arange(batch.input_ids.shape[0]), 1)
    handle.remove()
    return batch.advantages[0, :, 0], grads


def assert_grads_close(ours: dict, theirs: dict, tokens: int) -> None:
    """Every gradient within the float32 rounding of the same formula: each parameter's gradient
    sums ``tokens`` per-token terms computed in float32 (each within a few ulps of the other
    side's: the same operations, another order), so the sums agree to ``tokens × 16 ε₃₂`` of the
    largest gradient entry (ε₃₂ = 1.19e-7)."""
    assert set(ours) == set(theirs)
    scale = max(float(g.abs().max()) for g in theirs.values())
    atol = tokens * 16 * torch.finfo(torch.float32).eps * scale
    for name, g in theirs.items():
        torch.testing.assert_close(ours[name], g, rtol=0, atol=atol, msg=name)
