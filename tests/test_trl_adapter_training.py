"""The TRL adapter trains wherever TRL's trainers do: PAMA (with ``None`` rewards), Gramian
weightings under LoRA and gradient accumulation, TRL-style reward functions (``**kwargs``, extra
dataset columns, ``None``) on a conversational dataset; its metrics reach TRL's logs; bad
settings are refused by name."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tests.trl_adapter_fixtures import (
    G,
    dataset,
    length_reward,
    parameters,
    train,
    trainer,
    trl_args,
    vowel_reward,
)


def _adapter() -> Any:
    from mogradient_llm.integrations import trl as adapter

    return adapter


def sometimes_none(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Vowels, but unscored (``None``) for every third completion."""
    return [None if i % 3 == 0 else v for i, v in enumerate(vowel_reward(completions))]


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def _logged(t: Any, prefix: str) -> dict[str, float]:
    return {k: v for h in t.state.log_history for k, v in h.items() if k.startswith(prefix)}


def test_pama_trains_with_unscored_samples() -> None:
    """PAMA (Noon on by default) combines the objectives that scored each completion: its
    weights are on the simplex, the policy moves, nothing is NaN."""
    a = _adapter()
    t = trainer(
        a.MOGRPOTrainer,
        trl_args(a.MOGRPOConfig, aggregator="pama", max_steps=2),
        reward_funcs=[length_reward, sometimes_none],
    )
    assert t.mo_objective.noon and t.mo_objective.kind == "advantages"
    before = parameters(t)
    train(t)
    assert _changed(before, parameters(t))
    for h in t.state.log_history[:-1]:
        weights = [h["mo/weight/length_reward"], h["mo/weight/sometimes_none"]]
        assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-6)
        assert math.isfinite(h["loss"])


def test_gramian_method_trains_under_lora_and_logs_cosines() -> None:
    """RLOO (β = 0.05: the reference is the base model under the disabled adapter) with UPGrad
    at the features level: the hook finds the backbone through PEFT's wrapper; only the LoRA
    weights move; the gradient cosine and the conflict rate are logged."""
    from peft import LoraConfig

    a = _adapter()
    t = trainer(
        a.MORLOOTrainer,
        trl_args(a.MORLOOConfig, aggregator="upgrad", max_steps=2),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0),
    )
    before = parameters(t)
    train(t)
    changed = _changed(before, parameters(t))
    assert changed and all("lora_" in n for n in changed)
    logged = _logged(t, "mo/")
    assert {"mo/grad_cos/length_reward/vowel_reward", "mo/conflict_rate"} <= set(logged)
    assert "kl" in t.state.log_history[0]  # TRL's own metrics still there, once


def test_gramian_method_trains_with_gradient_accumulation() -> None:
    """Two micro-batches per optimiser step at the parameters level: each decides its weights
    and TRL accumulates ``Σ wᵢ Lᵢ`` (already divided by the accumulation steps)."""
    a = _adapter()
    args = trl_args(
        a.MOGRPOConfig,
        aggregator="mgda",
        gramian_level="parameters",
        per_device_train_batch_size=G,
        gradient_accumulation_steps=2,
        max_steps=2,
        beta=0.04,
    )
    t = trainer(a.MOGRPOTrainer, args)
    before = parameters(t)
    train(t)
    assert _changed(before, parameters(t))
    first = t.state.log_history[0]
    assert first["mo/weight/length_reward"] + first["mo/weight/vowel_reward"] == pytest.approx(1)
    assert math.isfinite(first["kl"]) and math.isfinite(first["loss"])


def test_trl_reward_functions_on_a_conversational_dataset_run_unchanged() -> None:
    """Rewards that read a dataset column through ``**kwargs``, return ``None`` for what they
    cannot score, and receive conversational completions (lists of messages)."""
    a = _adapter()
    seen: dict[str, Any] = {}

    def wants_target(completions: list[Any], target: list[str], **kwargs: Any) -> list[Any]:
        seen.update(kwargs, target=target, completion=completions[0])
        return [None if t == "skip" else float(len(c[0]["content"]) > 3) for c, t in
                zip(completions, target)]  # fmt: skip

    prompts = [[{"role": "user", "content": p}] for p in ("hello", "the movie", "it was", "ok")]
    data = dataset(prompts, target=["a", "skip", "b", "c"])
    t = trainer(
        a.MOGRPOTrainer,
        trl_args(a.MOGRPOConfig, aggregator="upgrad", max_steps=2),
        reward_funcs=[wants_target, length_reward],
        train_dataset=data,
    )
    train(t)
    assert isinstance(seen["completion"], list) and seen["completion"][0]["role"] == "assistant"
    assert "trainer_state" in seen and len(seen["target"]) == 2 * G
    assert math.isfinite(t.state.log_history[0]["loss"])


def test_an_aggregator_instance_is_used_as_it_is_and_evaluation_runs_without_grad() -> None:
    """An instance in the config is the aggregator; TRL's evaluation (``prediction_step``,
    under ``no_grad``) of a Gramian method gives TRL's own loss instead of failing."""
    from mogradient import get_aggregator

    a = _adapter()
    instance = get_aggregator("cagrad")
    args = trl_args(a.MOGRPOConfig, aggregator=instance, eval_strategy="no", max_steps=1)
    t = trainer(a.MOGRPOTrainer, args, eval_dataset=dataset())
    assert t.mo_objective.aggregator is instance
    metrics = t.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    assert "eval_mo/weight_sum" not in metrics  # no Gramian without grad


def test_bad_settings_are_refused_by_name() -> None:
    from trl import GRPOConfig

    a = _adapter()
    with pytest.raises(ValueError, match="gramian_level"):
        trl_args(a.MOGRPOConfig, gramian_level="layers")
    with pytest.raises(ValueError, match="reward_clip_range"):
        trl_args(a.MORLOOConfig, reward_clip_range=(-1.0, 1.0))
    with pytest.raises(TypeError, match="MOGRPOConfig"):
        trainer(a.MOGRPOTrainer, trl_args(GRPOConfig))
    with pytest.raises(TypeError, match="reward_weights"):
        trainer(a.MOGRPOTrainer, trl_args(a.MOGRPOConfig, aggregator="mgda", reward_weights=[1, 2]))


def test_another_trl_version_is_refused_naming_the_supported_ones() -> None:
    from mogradient_llm.integrations.trl.version import check_trl_version

    assert check_trl_version("1.16.3") == "1.16.3"
    for version in ("1.17.0", "0.16.1", "2.0"):
        with pytest.raises(ImportError, match=r">=1\.16,<1\.17"):
            check_trl_version(version)


def test_the_configs_parse_from_trls_command_line() -> None:
    """TRL's scripts build their configs with ``TrlParser`` (an ``HfArgumentParser``): every
    added field parses, ``aggregator_kwargs`` as a JSON object."""
    from trl import TrlParser

    a = _adapter()
    argv = ["--output_dir", "unused", "--use_cpu", "--bf16", "False", "--aggregator", "upgrad",
            "--aggregator_kwargs", '{"norm_eps": 0.001}', "--gramian_level", "parameters",
            "--preference", "0.3", "0.7"]  # fmt: skip
    for config_class in (a.MOGRPOConfig, a.MORLOOConfig):
        (args,) = TrlParser(config_class).parse_args_and_config(argv)
        assert (args.aggregator, args.gramian_level) == ("upgrad", "parameters")
        assert args.aggregator_kwargs == {"norm_eps": 0.001} and args.preference == [0.3, 0.7]
