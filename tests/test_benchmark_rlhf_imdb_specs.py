"""The IMDb benchmark describes its runs with the RL wing's typed records: the configs it builds
are the ones it built from the demo's settings before (pinned here), its rewards are the
``--reward`` specs of the same objectives, and its prompt files give back the prompts."""

from __future__ import annotations

import json

import pytest

from benchmarks.rlhf_imdb.cli import QUICK, parse_args
from benchmarks.rlhf_imdb.runs import (
    EVAL_SEED,
    NOON,
    evaluation,
    reward_specs,
    run_config,
    write_prompts,
)
from benchmarks.rlhf_imdb.stages import sweep_weights
from mogradient_llm.estimators.grpo import MOGRPOConfig
from mogradient_llm.estimators.ppo import MOPPOConfig
from mogradient_llm.inputs.builtin_rewards import DistinctReward, LengthReward
from mogradient_llm.run import build_rewards, build_trainer, load_prompt_rows
from mogradient_llm.specs import DataSpec, RunSpec

#: The config of ``--quick``'s GRPO PAMA run, as the benchmark built it from
#: ``mogradient_llm.demo.demo_config`` (commit 3fb1409): the demo's settings, GRPO's demo
#: preset, then the run's own (16 steps of 16 completions in minibatches of 8, Noon for PAMA).
#: Since then: ``parameter_gramian`` defaults to ``"auto"`` (the measured path rule: the tiny
#: policy's Jacobian fits the memory budget, so MGDA/UPGrad take the Jacobian path where they
#: took the layer path, the same Gramian up to rounding), and the conditioned-policy fields exist.
QUICK_GRPO_PAMA = {
    "aggregator": "pama",
    "aggregator_kwargs": {},
    "algorithm": "grpo",
    "conditioned": False,
    "preference_concentration": 1.0,
    "batch_size": 16,
    "beta": 0.05,
    "epsilon": 0.2,
    "epsilon_high": None,
    "generation_kwargs": {"do_sample": True, "max_new_tokens": 48, "top_k": 0, "top_p": 1.0},
    "gradient_accumulation_steps": 1,
    "gramian_level": "parameters",
    "learning_rate": 0.0003,
    "lora_alpha": 16.0,
    "lora_dropout": 0.0,
    "lora_r": 0,
    "lora_target_modules": None,
    "loss_type": "dapo",
    "lr_scheduler_type": "constant",
    "max_grad_norm": 1.0,
    "max_steps": 16,
    "mini_batch_size": 8,
    "multi_objective_aggregation": "sum_then_normalize",
    "noon": True,
    "normalize_weights": True,
    "num_generations": 4,
    "num_iterations": 2,
    "parameter_gramian": "auto",
    "report_to": [],
    "reward_weights": None,
    "scale_rewards": "group",
    "seed": 0,
    "constraints": [],
    "constraint_lr": 0.05,
    "constraint_kp": 0.0,
    "constraint_kd": 0.0,
    "skip_nonfinite": False,
    "use_bias_correction_kl": True,
    "warmup_ratio": 0.0,
    "warmup_steps": 0,
    "weight_decay": 0.0,
}
#: How each other ``--quick`` run's config differed from PAMA's (same commit).
QUICK_DIFFERENCES = {
    "morlhf": {"aggregator": "morlhf", "noon": False, "reward_weights": [0.5, 0.5]},
    "mgda": {"aggregator": "mgda", "noon": False},
    "upgrad": {"aggregator": "upgrad", "noon": False},
}


@pytest.fixture
def quick(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    return parse_args(["--quick", "--data", str(tmp_path)])


def quick_config(args, method, preference=None):
    k = 2
    return run_config(
        args.algorithms, method, int(args.seeds), args.steps, args.batch_size, k,
        method in NOON and not args.no_noon, preference,
    )  # fmt: skip


def test_quick_runs_build_the_configs_they_built_from_the_demo(quick):
    assert quick.aggregators.split(",") == ["pama", "morlhf", "mgda", "upgrad"]
    assert quick_config(quick, "pama").to_dict() == QUICK_GRPO_PAMA
    for method, changes in QUICK_DIFFERENCES.items():
        assert quick_config(quick, method).to_dict() == {**QUICK_GRPO_PAMA, **changes}
    # the sweep's runs are MORLHF with the preference as reward weights
    assert sweep_weights(QUICK["sweep"]) == [0.2, 0.4, 0.6, 0.8]
    for w in sweep_weights(QUICK["sweep"]):
        preference = (w, round(1 - w, 4))
        config = quick_config(quick, "morlhf", preference).to_dict()
        assert config == {
            **QUICK_GRPO_PAMA,
            **QUICK_DIFFERENCES["morlhf"],
            "reward_weights": list(preference),
        }


def test_the_demo_preset_lives_on_each_config():
    """``MOConfig.demo``: the demo's shared settings, then the algorithm's ``demo_preset``,
    then the overrides."""
    ppo = MOPPOConfig.demo("mgda", 3, kl_coef=0.1)
    assert (ppo.aggregator, ppo.seed, ppo.learning_rate, ppo.batch_size) == ("mgda", 3, 3e-4, 32)
    assert (ppo.mini_batch_size, ppo.num_ppo_epochs, ppo.kl_coef) == (16, 2, 0.1)
    assert ppo.generation_kwargs["max_new_tokens"] == 48
    grpo = MOGRPOConfig.demo()
    assert (grpo.num_generations, grpo.num_iterations, grpo.beta, grpo.noon) == (4, 2, 0.05, True)


def test_the_objectives_are_reward_specs_of_the_same_rewards():
    """Sentiment (VADER or the classifier's path), length in characters, distinct-1 words,
    under the objective names of the CSV columns."""
    assert reward_specs("/cache/reward_model/ab12", 3) == (
        "sentiment=classifier:/cache/reward_model/ab12",
        "length:chars",
        "distinct",
    )
    rewards = build_rewards(reward_specs("vader", 3), tokenizer=None)
    assert [r.name for r in rewards] == ["sentiment", "length", "diversity"]
    assert isinstance(rewards[1].fn, LengthReward) and rewards[1].fn.unit == "chars"
    assert (rewards[1].fn.scale, rewards[1].fn.low, rewards[1].fn.high) == (140, 0.5, 1.5)
    assert isinstance(rewards[2].fn, DistinctReward) and rewards[2].fn.n == 1
    specs = evaluation("vader", 2, "test.jsonl", "train.jsonl", 64, 32)
    assert specs.test.rewards == reward_specs("vader", 2) and specs.test.ref_point == (-1.0, 0.5)
    assert (specs.test.num_prompts, specs.train.num_prompts) == (64, 32)
    assert specs.test.seed == specs.train.seed == EVAL_SEED


def test_a_prompt_file_gives_back_its_prompts(tmp_path):
    """The rows a ``DataSpec`` reads from the file are the prompts, in order, whatever they
    hold; the file is named by its content and written once."""
    prompts = ['"Quoted" start', "ünïcödé ✓", "a\nnew line", "  spaces  ", "back\\slash"] * 3
    path = write_prompts(tmp_path / "prompts", prompts)
    assert write_prompts(tmp_path / "prompts", list(prompts)) == path
    assert path != write_prompts(tmp_path / "prompts", prompts[:-1])
    rows = load_prompt_rows(DataSpec(dataset=str(path)), tokenizer=None, seed=0)
    assert rows == [{"prompt": p} for p in prompts]
    assert [json.loads(line)["prompt"] for line in path.read_text().splitlines()] == prompts


def test_build_trainer_names_the_fix_for_the_tiny_policy(tmp_path):
    run = RunSpec(output_dir=tmp_path, rewards=("length",))
    with pytest.raises(ValueError, match="save_tiny_policy"):
        build_trainer(run, MOPPOConfig.demo())
