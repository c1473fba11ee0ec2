"""The correctness section of the device check (``benchmarks.device_check``), on the check's
device: bf16 autocast gives a step-0 KL of exactly 0 (full model and LoRA), the fp16 loss
scaler's path gives the unscaled gradients, and a LoRA step trains the adapters only.

Each check is one row with ``result`` ``pass`` or ``FAIL`` and the measured value; a check that
raises is an ``error`` row, and the later checks still run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.device_sections import Sizes, device_name, row

#: Largest relative gradient difference of the fp16-scaler path: the scale is a power of two
#: (exact), so only the order of floating-point accumulation differs (CUDA's atomic adds in
#: the embedding backward), a few float32 roundings of the largest gradient entry.
SCALER_TOLERANCE = 1e-4


def correctness_rows(policy: str, sizes: Sizes, deadline: float) -> list[dict[str, Any]]:
    """The checks in turn while the deadline allows (one row each; a row says where it cut)."""
    checks: list[tuple[str, Callable[[str, Sizes], tuple[bool, float, str]]]] = [
        ("bf16 step-0 KL", lambda p, s: _kl_at_step0(p, s, lora=False)),
        ("bf16 step-0 KL (LoRA)", lambda p, s: _kl_at_step0(p, s, lora=True)),
        ("fp16 scaler gradients", _scaler_gradients),
        ("LoRA trains", _lora_trains),
    ]
    rows = []
    last = 0.0
    for i, (name, check) in enumerate(checks):
        if time.perf_counter() + last > deadline:
            rows.append(
                row(
                    "correctness",
                    "(budget)",
                    result="cut short",
                    note=f"{i} of {len(checks)} checks in the time budget",
                )
            )
            break
        started = time.perf_counter()
        try:
            ok, value, note = check(policy, sizes)
        except Exception as error:  # noqa: BLE001 - one failing check must not end the others
            rows.append(row("correctness", name, result="error", note=repr(error)[:160]))
        else:
            rows.append(
                row(
                    "correctness",
                    name,
                    device=device_name(),
                    seconds=round(time.perf_counter() - started, 3),
                    result="pass" if ok else "FAIL",
                    note=f"{note}: {value:.3g}",
                )
            )
        finally:
            _reset_accelerate()
        last = time.perf_counter() - started
    return rows


def _reset_accelerate() -> None:
    """accelerate keeps one state per process (its mixed precision included)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _trainer(policy: str, sizes: Sizes, accelerator: Any, **overrides: Any) -> Any:
    """Our GRPO trainer on the check's policy (two rewards, a reference: beta > 0)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks import grpo_cells
    from mogradient_llm import MOGRPOConfig, MOTrainer

    config = MOGRPOConfig(
        **{
            "learning_rate": 1e-3,
            "batch_size": sizes.batch_size,
            "mini_batch_size": sizes.batch_size,
            "num_generations": sizes.num_generations,
            "num_iterations": 2,
            "beta": 0.1,
            "seed": 0,
            "generation_kwargs": grpo_cells.generation_kwargs(sizes.completion_length),
            **overrides,
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    return MOTrainer(
        config,
        AutoModelForCausalLM.from_pretrained(policy),
        tokenizer,
        rewards=[grpo_cells.length_reward, grpo_cells.vowel_reward],
        prompts=grpo_cells.load_prompts(None, Path(policy), 8),
        accelerator=accelerator,
    )


def _batch(trainer: Any) -> Any:
    prompts = trainer.sample_prompts()
    rollout = trainer.generate(prompts)
    return trainer.prepare_batch(rollout, trainer.score(prompts, rollout))


def _cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


#: LoRA on the attention's input projection, rank 4.
LORA = {"lora_r": 4, "lora_target_modules": ["c_attn"]}


def _kl_at_step0(policy: str, sizes: Sizes, *, lora: bool) -> tuple[bool, float, str]:
    """Under bf16 autocast the reference (a copy, or the adapters switched off) runs the same
    kernels on the same weights as the policy: every token's KL is exactly 0."""
    from accelerate import Accelerator

    extra = LORA if lora else {}
    accelerator = Accelerator(cpu=_cpu(), mixed_precision="bf16")
    batch = _batch(_trainer(policy, sizes, accelerator, **extra))
    worst = float(batch.kl.abs().max())
    return worst == 0.0, worst, "largest KL of a token, in absolute value"


def _scaler_gradients(policy: str, sizes: Sizes) -> tuple[bool, float, str]:
    """One update of MGDA (parameter level) behind a loss scaler of 2^16 and one without,
    on the same batch: the gradients the optimiser steps on agree."""
    import torch
    from accelerate import Accelerator

    common = {"aggregator": "mgda", "gramian_level": "parameters", "max_grad_norm": None}
    device = "cpu" if _cpu() else "cuda"
    plain = _trainer(policy, sizes, Accelerator(cpu=_cpu()), **common)
    batch = _batch(plain)
    expected = _gradients_at_step(plain, batch)
    _reset_accelerate()
    accelerator = Accelerator(cpu=_cpu())
    accelerator.scaler = torch.amp.GradScaler(device, init_scale=2.0**16)
    got = _gradients_at_step(_trainer(policy, sizes, accelerator, **common), batch)
    scale = max(float(e.abs().max()) for e in expected)
    worst = max(float((g - e).abs().max()) for g, e in zip(got, expected)) / scale
    return (
        worst <= SCALER_TOLERANCE,
        worst,
        "largest gradient difference over the largest gradient entry",
    )


def _gradients_at_step(trainer: Any, batch: Any) -> list[Any]:
    """The (unscaled) gradients the optimiser steps on for one update on the whole batch."""
    import torch

    captured: list[list[torch.Tensor]] = []

    def record(optimizer: Any, args: Any, kwargs: Any) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        captured.append([p.grad.detach().clone() for p in params if p.grad is not None])

    handle = trainer.optimizer.optimizer.register_step_pre_hook(record)
    trainer.updater.update(batch, torch.arange(batch.input_ids.shape[0]), 1)
    handle.remove()
    return captured[0]


def _lora_trains(policy: str, sizes: Sizes) -> tuple[bool, float, str]:
    """One LoRA step moves the adapters and leaves every base weight as it was."""
    import torch
    from accelerate import Accelerator

    # the weighted sum without Noon: a non-zero loss whatever the signs of the advantages
    linear = {"aggregator": "linear", "noon": False}
    trainer = _trainer(policy, sizes, Accelerator(cpu=_cpu()), **linear, **LORA)
    named = dict(trainer.policy.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    trainer.step()
    moved = {n: not torch.equal(p.detach(), before[n]) for n, p in named.items()}
    adapters = [n for n in moved if "lora_" in n]
    base_moved = sum(moved[n] for n in moved if "lora_" not in n)
    adapters_moved = sum(moved[n] for n in adapters)
    ok = adapters_moved > 0 and base_moved == 0
    return ok, float(adapters_moved), f"adapters moved (base weights moved: {base_moved})"
