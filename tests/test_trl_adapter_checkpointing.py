"""Activation checkpointing and the TRL adapter's parameters level: the k gradients are taken
with ``torch.autograd.grad``, which reentrant checkpointing leaves empty without an error (its
backward writes the checkpointed parameters' gradients to ``.grad`` only), so that setting is
refused; TRL's default (non-reentrant with transformers 5) and the features level train."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from tests.trl_adapter_fixtures import trainer, trl_args

REENTRANT = {
    "gradient_checkpointing": True,
    "gradient_checkpointing_kwargs": {"use_reentrant": True},
}


def test_autograd_grad_gets_nothing_through_reentrant_checkpointing() -> None:
    """Why the setting is refused (torch's behaviour, which the refusal relies on): the
    parameter's gradient through a reentrant checkpoint is ``None`` under ``autograd.grad``
    while ``backward`` fills ``.grad``."""
    layer = torch.nn.Linear(3, 3)
    x = torch.randn(4, 3, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (grad,) = torch.autograd.grad(
            checkpoint(layer, x, use_reentrant=True).sum(), [layer.weight], allow_unused=True
        )
        assert grad is None
        checkpoint(layer, x, use_reentrant=True).sum().backward()
    assert layer.weight.grad is not None and bool(layer.weight.grad.abs().sum() > 0)


def test_the_parameters_level_refuses_reentrant_checkpointing() -> None:
    from mogradient_llm.integrations.trl import MOGRPOConfig, MOGRPOTrainer

    args = trl_args(MOGRPOConfig, aggregator="mgda", gramian_level="parameters", **REENTRANT)
    with pytest.raises(ValueError, match=r"use_reentrant=False.*gramian_level='features'"):
        trainer(MOGRPOTrainer, args)


@pytest.mark.parametrize(
    "settings",
    [
        {"aggregator": "mgda", "gramian_level": "features", **REENTRANT},
        {"aggregator": "mgda", "gramian_level": "parameters", "gradient_checkpointing": True},
        {"aggregator": "pama", **REENTRANT},
    ],
    ids=["features-reentrant", "parameters-default-checkpointing", "advantage-level-reentrant"],
)
def test_the_other_settings_are_accepted(settings: dict) -> None:
    from mogradient_llm.integrations.trl import MOGRPOConfig, MOGRPOTrainer

    trainer(MOGRPOTrainer, trl_args(MOGRPOConfig, **settings))
