"""Rewarded Soups (Ramé et al. 2023): the cheap front, from interpolating the weights of
policies trained one objective each."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from mogradient_llm.loop.checkpoint import TMP_PREFIX


def interpolate_policies(sources: Sequence[Path], weights: Sequence[float], target: Path) -> None:
    """Write ``Σᵢ wᵢ θᵢ`` of saved policies of one architecture into ``target`` (Rewarded
    Soups, Ramé et al. 2023): every floating-point tensor of their ``*.safetensors`` files is
    interpolated — with LoRA the adapters' A and B matrices, as the paper does — and the other
    files (configs, tokenizer) are copied from the first source. Written aside, then renamed."""
    from safetensors.torch import load_file, save_file

    if len(sources) != len(weights) or not sources:
        raise ValueError(f"got {len(sources)} policies and {len(weights)} weights; give one each")
    first = Path(sources[0])
    files = sorted(p.name for p in first.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {first}; pass saved policies")
    tmp = target.parent / f"{TMP_PREFIX}{target.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(first, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for name in files:
        tensors = [load_file(Path(source) / name) for source in sources]
        for source, other in zip(sources[1:], tensors[1:]):
            if set(other) != set(tensors[0]) or any(
                other[key].shape != value.shape for key, value in tensors[0].items()
            ):
                raise ValueError(
                    f"{Path(source) / name} does not hold the same tensors as {first / name}; "
                    "Rewarded Soups mixes policies of one architecture (and one LoRA config)"
                )
        mixed = {}
        for key, value in tensors[0].items():
            if not value.is_floating_point():
                mixed[key] = value
                continue
            total = torch.zeros_like(value, dtype=torch.float64)
            for weight, other in zip(weights, tensors):
                total += weight * other[key].to(torch.float64)
            mixed[key] = total.to(value.dtype)
        save_file(mixed, str(tmp / name), metadata={"format": "pt"})
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
