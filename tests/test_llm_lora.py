"""LoRA through peft: only adapters and value heads train; the reference is the base model."""

from __future__ import annotations

import pytest
import torch

from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from mogradient_llm.policy.rollout import lm_response_logprobs
from tests.llm_fixtures import load_tiny_lm, make_trainer


@pytest.mark.parametrize("aggregator", ["pama", "mgda"])
def test_lora_trains_adapters_and_heads_only(aggregator: str) -> None:
    trainer = make_trainer(
        [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()],
        aggregator=aggregator,
        lora_r=4,
        lora_alpha=8.0,
        lora_target_modules=["c_attn"],
    )
    assert trainer.ref_model is None  # no second copy of the model
    module = trainer.accelerator.unwrap_model(trainer.model)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k or k.startswith("value_head.") for k in changed), changed
    assert any("lora_B" in k for k in changed) and "value_head.weight" in changed

    base, _ = load_tiny_lm()
    rollout = trainer.generate(trainer.sample_prompts())
    with torch.no_grad():
        expected = lm_response_logprobs(base.eval(), rollout)
        tuned = lm_response_logprobs(trainer.policy, rollout)
        _, reference, _ = trainer.forwards(rollout)
    torch.testing.assert_close(reference, expected)
    assert not torch.allclose(tuned, expected)  # the adapters are back on afterwards


def test_lora_bad_target_module_is_named() -> None:
    with pytest.raises(ValueError, match=r"target modules \['q_proj'\].*c_attn for GPT-2"):
        make_trainer([VaderReward()], lora_r=4, lora_target_modules=["q_proj"])


def test_lora_checkpoint_resumes(tmp_path) -> None:
    settings = {"lora_r": 4, "lora_target_modules": ["c_attn"]}
    trainer = make_trainer([VaderReward()], **settings)
    trainer.train(1, tmp_path, progress=False)
    assert (tmp_path / "final" / "policy" / "adapter_model.safetensors").is_file()
    resumed = make_trainer([VaderReward()], **settings)
    resumed.load_checkpoint(tmp_path)
    assert resumed.step_count == 1
    expected = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    for key, value in resumed.accelerator.unwrap_model(resumed.model).state_dict().items():
        assert torch.equal(value, expected[key]), key
