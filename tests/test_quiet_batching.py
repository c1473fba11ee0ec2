"""Torch's "no batching rule" performance warning (raised by the Gramian engine's vectorised
backward through SDPA attention) does not escape the library, while other warnings raised
inside the same block still do."""

from __future__ import annotations

import warnings

import pytest
import torch

from mogradient._vmap import NO_BATCHING_RULE, quiet_batching_fallback
from mogradient.gramian.recorder import module_gramian

transformers = pytest.importorskip("transformers")


def _tiny_gpt2() -> torch.nn.Module:
    """A 1-layer GPT-2 in eval mode (no dropout): its attention runs SDPA's flash kernel on CPU,
    whose backward has no batching rule."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    model.config._attn_implementation = "sdpa"
    return model.eval()


def _losses(model: torch.nn.Module) -> list[torch.Tensor]:
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    logits = model(ids).logits
    return [logits[..., 0].mean(), logits[..., 1].mean()]


def _batching_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "batching rule" in str(w.message)]


def test_parameter_gramian_of_gpt2_does_not_warn_about_batching_rules() -> None:
    model = _tiny_gpt2()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gramian, _ = module_gramian(model, lambda: _losses(model))
    assert _batching_warnings(caught) == []
    assert torch.isfinite(gramian).all()


def test_only_that_warning_is_silenced() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_batching_fallback():
            warnings.warn(
                "There is a performance drop because we have not yet implemented the batching "
                "rule for aten::x",
                UserWarning,
                stacklevel=1,
            )
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
    assert NO_BATCHING_RULE.startswith("There is a performance drop")
