"""The last hidden state of TRL's policy forward, for the Gramian at the features level.

TRL patches the model's forward with a fused LM head (``trl.trainer.utils.add_fused_lm_head``):
it runs the backbone (``base_model``) and multiplies the head's weight itself, so a hook on the
LM head never fires; a forward hook on the backbone does, once per ``_compute_loss``, with
``last_hidden_state`` ``[B, P + C, d]`` (the prompt's positions get no gradient from the loss).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def backbone(model: nn.Module) -> nn.Module:
    """The transformer under the LM head of ``model`` (unwrapped: no DDP), through a PEFT
    wrapper: GPT-2's ``transformer``, Llama's ``model``."""
    get_base_model = getattr(model, "get_base_model", None)
    if callable(get_base_model):  # peft's PeftModel: its own base_model is the tuner
        model = get_base_model()
    inner = getattr(model, "base_model", None)
    if not isinstance(inner, nn.Module) or inner is model:
        raise TypeError(
            f"{type(model).__name__} has no backbone (base_model) under its LM head; "
            "gramian_level='features' needs one: use gramian_level='parameters'"
        )
    return inner


@contextmanager
def last_hidden_state(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Records the backbone's ``last_hidden_state`` under ``"hidden"`` while the block runs
    (the hook is removed on exit, so generation and the no-grad passes never see it)."""
    captured: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None and isinstance(output, tuple):
            hidden = output[0]
        if isinstance(hidden, torch.Tensor):
            captured["hidden"] = hidden

    handle = backbone(model).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
