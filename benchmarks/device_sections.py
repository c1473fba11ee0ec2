"""The timed sections of the device check (``benchmarks.device_check``): one RL step against
TRL, and the parameter-level step against TorchJD. Each returns rows of the check's table and
stops at its deadline, saying so in a row."""

from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Our cells of the RL section (TRL's ``trl`` is added when TRL imports).
RL_CELLS = ("linear", "pama", "mgda", "upgrad", "ppo-linear")
#: The parameter-level methods of :mod:`benchmarks.backward_step` the device check times;
#: TorchJD's autogram last, since its engine hooks into the model.
BACKWARD_METHODS = ("mg_loop", "mg_layers", "mg_features", "tjd_autojac", "tjd_autogram")


@dataclass(frozen=True)
class Sizes:
    """What the check runs: the device sizes, or the smoke mode's tiny ones."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    model_vocab: int | None
    tokenizer_vocab: int
    batch_size: int
    num_generations: int
    completion_length: int
    warmup: int
    steps: int
    backward_size: str
    ks: tuple[int, ...]


DEVICE = Sizes(12, 768, 12, 1024, 50257, 2000, 64, 8, 128, 1, 5, "device", (2, 4, 8))
SMOKE = Sizes(1, 16, 2, 64, None, 300, 4, 2, 4, 1, 1, "tiny", (2,))


def row(section: str, name: str, **fields: Any) -> dict[str, Any]:
    """One row of the check's CSV (every row has every column; empty where not measured)."""
    keys = ("k", "device", "seconds", "ratio", "reference", "peak_mb", "result", "note")
    return {"section": section, "name": name, **{key: fields.get(key, "") for key in keys}}


def missing(module: str) -> str | None:
    """Why ``module`` cannot be imported (``None`` when it can)."""
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure skips the cells needing it
        return f"{type(error).__name__}: {error}"
    return None


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def rl_rows(policy: str, sizes: Sizes, deadline: float) -> list[dict[str, Any]]:
    """One GRPO step (and one PPO step with a value head per objective), ours against TRL's
    ``GRPOTrainer``, bf16 autocast, the cells built in this process and stepped in rotated
    rounds (:func:`benchmarks.grpo_step.time_cells`); a ratio is the median over rounds of the
    cell's step over the reference's in the same round."""
    from accelerate.state import AcceleratorState

    from benchmarks import grpo_cells, grpo_step

    cells = list(RL_CELLS)
    rows = []
    why = missing("trl.trainer.grpo_trainer")  # trl itself imports lazily
    if why is None:
        cells.insert(0, "trl")
    else:
        rows.append(row("rl", "trl", result="skipped", note=f"TRL not importable ({why})"))
    reference = cells[0]
    n_prompts = sizes.batch_size // sizes.num_generations * (sizes.warmup + sizes.steps)
    settings = {
        "policy": policy,
        "prompts": grpo_cells.load_prompts(None, Path(policy), max(n_prompts, 8)),
        "batch_size": sizes.batch_size,
        "num_generations": sizes.num_generations,
        "completion_length": sizes.completion_length,
        "threads": 1,
        "warmup": sizes.warmup,
        "steps": sizes.steps,
        "bf16": True,
        "second_reward": "vowels",
    }
    peaks: dict[str, float] = {}
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        times = grpo_step.time_cells(cells, settings, deadline=deadline, peaks=peaks)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    device = device_name()
    for cell in cells:
        t = times[cell]
        if not t:
            rows.append(row("rl", cell, device=device, result="cut short", note="no timed step"))
            continue
        paired = statistics.median(a / b for a, b in zip(t, times[reference]))
        rows.append(
            row(
                "rl",
                cell,
                k=2,
                device=device,
                seconds=round(statistics.median(t), 4),
                ratio=round(paired, 3),
                reference=reference,
                peak_mb=round(peaks[cell], 1) if cell in peaks else "",
                result="ok",
                note=f"{len(t)} timed rounds",
            )
        )
    if len(times[reference]) < sizes.steps:
        rows.append(
            row(
                "rl",
                "(budget)",
                result="cut short",
                note=f"{len(times[reference])} of {sizes.steps} timed rounds in the time budget",
            )
        )
    return rows


def backward_rows(sizes: Sizes, deadline: float) -> list[dict[str, Any]]:
    """The parameter-level step of :mod:`benchmarks.backward_step` (forward + MGDA backward)
    for each model and k, against one plain backward of ``Σ Lᵢ``: median ms, the ratio, and on
    CUDA the peak allocated memory beyond what was allocated before the steps."""
    import torch

    from benchmarks.backward_models import MODELS, build_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = device_name()
    no_torchjd = missing("torchjd.autogram")
    rows: list[dict[str, Any]] = []
    groups = [(model, k) for model in MODELS for k in sizes.ks]
    last = 0.0
    for done, (model_name, k) in enumerate(groups):
        if time.perf_counter() + last > deadline:
            rows.append(
                row(
                    "backward",
                    "(budget)",
                    result="cut short",
                    note=f"{done} of {len(groups)} model/k groups in the time budget",
                )
            )
            break
        started = time.perf_counter()
        model, forward, _ = build_model(model_name, k, size=sizes.backward_size, device=device)
        params = [p for p in model.parameters() if p.requires_grad]

        def plain(m: Any = model, f: Any = forward) -> None:
            losses, _ = f(m)
            torch.stack(losses).sum().backward()

        plain_ms, _ = _timed(plain, params, sizes, device)
        rows.append(
            row("backward", f"{model_name}/plain", k=k, device=name, seconds=plain_ms / 1e3)
        )
        for method in BACKWARD_METHODS:
            if method.startswith("tjd") and no_torchjd:
                rows.append(
                    row("backward", f"{model_name}/{method}", k=k, result="skipped",
                        note=f"torchjd not importable ({no_torchjd})")
                )  # fmt: skip
                continue
            rows.append(
                _method_row(method, model_name, k, model, forward, params, sizes, device, plain_ms)
            )
        last = time.perf_counter() - started
        del model, params
    return rows


def _method_row(
    method: str,
    model_name: str,
    k: int,
    model: Any,
    forward: Any,
    params: list[Any],
    sizes: Sizes,
    device: str,
    plain_ms: float,
) -> dict[str, Any]:
    from benchmarks.backward_step import _method_step

    engine = None
    if method == "tjd_autogram":
        from torchjd.autogram import Engine

        engine = Engine(model, batch_dim=None)
    name = f"{model_name}/{method}"
    try:
        ms, peak = _timed(
            lambda: _method_step(method, model, forward, params, engine), params, sizes, device
        )
    except Exception as error:  # noqa: BLE001 - one method failing must not end the check
        return row("backward", name, k=k, result="error", note=repr(error)[:160])
    return row(
        "backward",
        name,
        k=k,
        device=device_name(),
        seconds=round(ms / 1e3, 6),
        ratio=round(ms / plain_ms, 3),
        reference="plain",
        peak_mb="" if peak is None else round(peak, 1),
        result="ok",
    )


def _timed(fn: Any, params: list[Any], sizes: Sizes, device: str) -> tuple[float, float | None]:
    """Median ms of ``fn`` over the timed steps (gradients cleared before each), and on CUDA
    the peak MB allocated during them beyond what was allocated before."""
    import torch

    cuda = device == "cuda"
    out = []
    peak = None
    for i in range(sizes.warmup + sizes.steps):
        for p in params:
            p.grad = None
        if cuda:
            torch.cuda.synchronize()
            if i == sizes.warmup:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= sizes.warmup:
            out.append((time.perf_counter() - start) * 1e3)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    for p in params:
        p.grad = None
    return statistics.median(out), peak
