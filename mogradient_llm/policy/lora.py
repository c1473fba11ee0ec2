"""LoRA through peft: the policy trains adapters only, and the KL reference is the same model
with its adapters disabled (the trainer's forward inside ``disable_adapter()``), so no second
copy of the base model is kept in memory."""

from __future__ import annotations

from torch import nn

from mogradient_llm.config import MOConfig


def apply_lora(model: nn.Module, config: MOConfig) -> nn.Module:
    """``model`` wrapped by ``peft.get_peft_model`` with the config's ``lora_*`` settings."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ImportError("lora_r > 0 needs peft: pip install 'mogradient[llm]' or peft") from exc
    lora = LoraConfig(
        r=config.lora_r,
        # peft annotates lora_alpha as int but only divides by it: a float alpha works.
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # peft names the modules it could not find
        raise ValueError(
            f"cannot apply LoRA with target modules {config.lora_target_modules}: {exc}; pass "
            "names of the model's Linear/Conv1D layers (e.g. c_attn for GPT-2, q_proj,v_proj for "
            "LLaMA)"
        ) from exc
