"""Our GRPO and RLOO against TRL 1.16's own code on fixed completions (see
:mod:`tests.trl_reference`): the advantages and the gradient of one update, per loss type, KL
coefficient (with and without TRL's bias correction), ``scale_rewards``, GDPO, reward weights and
RLOO's defaults; the defaults themselves; the optimiser's weight decay; and, in two processes,
the normalisers that span them (DAPO's global token count, the batch std).

Tolerances are the float32 rounding of the same formula on both sides (nothing here is
observed): an advantage is a mean, a standard deviation and one division over at most 16 rewards
in float32, within ``32 ε₃₂ (1 + |A|)`` of the other side's (ε₃₂ = 1.19e-7, a few ulps per
operation); gradients as :func:`tests.trl_reference.assert_grads_close` says.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tests.trl_reference import (
    MAX_TOKENS,
    G,
    assert_grads_close,
    our_rollout,
    our_step,
    our_trainer,
    rewards,
    trl_step,
    trl_trainer,
)

EPS = torch.finfo(torch.float32).eps
PROMPTS = 2
TOKENS = PROMPTS * G * MAX_TOKENS


def _assert_advantages_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    atol = 32 * EPS * (1 + float(theirs.abs().max()))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=atol)


def _compare(algorithm: str, trl_args: dict[str, Any], ours: dict[str, Any]) -> None:
    """One update of each side from the same policy on the same completions and rewards.

    ``num_iterations=2`` on both sides makes TRL keep the rollout's log-probabilities as π_old
    (the policy then moves: the ratio is not 1); one update is compared."""
    trl_args = {"num_iterations": 2, **trl_args}
    theirs_a, theirs_g = trl_step(trl_trainer(algorithm, PROMPTS, **trl_args), PROMPTS)
    trainer = our_trainer(algorithm, PROMPTS, num_iterations=2, **ours)
    ours_a, ours_g = our_step(trainer, rewards(PROMPTS), our_rollout(PROMPTS))
    assert theirs_a.abs().max() > 0.1  # the rewards spread within every group
    _assert_advantages_close(ours_a, theirs_a)
    assert_grads_close(ours_g, theirs_g, TOKENS)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_grpo_matches_trl_for_every_loss_type(loss_type) -> None:
    _compare("grpo", {"loss_type": loss_type}, {"loss_type": loss_type})


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo"])
def test_grpo_matches_trl_under_gradient_accumulation(loss_type) -> None:
    """Two micro-batches of 4: ``bnpo`` averages their token means, the others normalise by the
    whole minibatch, as TRL's accumulated ``training_step`` does."""
    trl_args = {"loss_type": loss_type, "per_device_train_batch_size": G}
    trl_args["gradient_accumulation_steps"] = 2
    _compare("grpo", trl_args, {"loss_type": loss_type, "gradient_accumulation_steps": 2})


@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_matches_trl_with_the_kl_term(beta, bias_correction) -> None:
    args = {"beta": beta, "use_bias_correction_kl": bias_correction}
    _compare("grpo", args, args)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_trl_for_every_reward_scaling(scale) -> None:
    _compare("grpo", {"scale_rewards": scale}, {"scale_rewards": scale})


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_gdpo_matches_trl_whatever_the_reward_scaling(scale) -> None:
    """TRL's GDPO normalises each objective by its group's std whatever ``scale_rewards``."""
    args = {"scale_rewards": scale, "multi_objective_aggregation": "normalize_then_sum"}
    _compare("grpo", args, args)


@pytest.mark.parametrize("weights", [[1.0, 0.5], [2.0, 3.0]])
def test_linear_with_reward_weights_is_trls_weighted_sum(weights) -> None:
    """Without std scaling the weights' scale reaches the advantages: ``Σ wᵢ rᵢ`` as TRL."""
    args = {"scale_rewards": "none", "reward_weights": weights}
    _compare("grpo", args, args)


def test_rloo_matches_trl_with_its_defaults() -> None:
    """β = 0.05 (k1 summed per sequence, in the reward), the sequence-level ratio and clip."""
    _compare("rloo", {}, {})


@pytest.mark.parametrize(
    "args",
    [{"normalize_advantages": True}, {"beta": 0.0}, {"reward_weights": [1.0, 0.5], "beta": 0.2}],
    ids=["normalized", "no-kl", "weights"],
)
def test_rloo_matches_trl_with_its_options(args) -> None:
    _compare("rloo", args, args)


def _trl_config(algorithm: str) -> Any:
    from trl import GRPOConfig, RLOOConfig

    config_class = GRPOConfig if algorithm == "grpo" else RLOOConfig
    return config_class(output_dir="unused", use_cpu=True, bf16=False, report_to="none")


MIRRORED = {
    "grpo": (
        "learning_rate weight_decay max_grad_norm beta epsilon epsilon_high num_iterations "
        "loss_type scale_rewards use_bias_correction_kl multi_objective_aggregation reward_weights"
    ),
    "rloo": (
        "learning_rate weight_decay max_grad_norm beta epsilon epsilon_high num_iterations "
        "normalize_advantages reward_weights"
    ),
}


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_the_defaults_we_mirror_are_trls(algorithm) -> None:
    from mogradient_llm.estimators import estimator_class

    ours = estimator_class(algorithm).config_class()
    theirs = _trl_config(algorithm)
    for name in MIRRORED[algorithm].split():
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.aggregator != "linear" or ours.reward_weights is None


def test_weight_decay_spares_the_parameters_trl_spares() -> None:
    """transformers' ``Trainer.create_optimizer`` (TRL's optimiser) decays every weight but the
    biases and the normalisation layers; so does ours, and by 0 unless asked."""
    from mogradient_llm.loop.update import build_optimizer

    trainer = trl_trainer("grpo", PROMPTS, weight_decay=0.1)
    trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    theirs = {names[id(p)]: g["weight_decay"] for g in trainer.optimizer.param_groups
              for p in g["params"]}  # fmt: skip
    ours_trainer = our_trainer("grpo", PROMPTS, weight_decay=0.1)
    policy = ours_trainer.policy
    optimizer = build_optimizer(policy, ours_trainer.config)
    names = {id(p): n for n, p in policy.named_parameters()}
    ours = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert ours == theirs and {0.0, 0.1} == set(ours.values())
    default = our_trainer("grpo", PROMPTS).optimizer.optimizer
    assert {g["weight_decay"] for g in default.param_groups} == {0.0}


# ---------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TWO_PROCESS = {"loss_type": "dapo", "scale_rewards": "batch"}


def _worker(rank: int, port: int, out_dir: str, lm_dir: Path) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    trainer = our_trainer("grpo", 1, Accelerator(cpu=True), lm_dir, num_iterations=2, **TWO_PROCESS)
    scores = rewards(2)[:, rank * G : (rank + 1) * G]
    advantages, grads = our_step(trainer, scores, our_rollout(1, rank, lm_dir))
    torch.save({"advantages": advantages, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_two_processes_normalise_over_the_global_batch_as_trl(tmp_path) -> None:
    """Each process holds one group with another token count: DAPO divides by the tokens of
    both (TRL's ``num_items_in_batch``) and the batch std spans both, so the DDP-averaged update
    is TRL's on the whole batch (TRL's DAPO does not depend on the process count)."""
    from tests.llm_fixtures import tiny_lm_dir

    lm_dir = tiny_lm_dir()  # saved here: under torch.distributed only rank 0 would write it
    rollout = our_rollout(2)
    counts = rollout.response_mask.sum(1).view(2, G).sum(1)
    assert counts[0] != counts[1]  # per-rank token means would weigh the ranks' tokens apart
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), lm_dir), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    trl_args = {"num_iterations": 2, **TWO_PROCESS}
    theirs_a, theirs_g = trl_step(trl_trainer("grpo", 2, **trl_args), 2)
    ours_a = torch.cat([r["advantages"] for r in ranks])
    _assert_advantages_close(ours_a, theirs_a)
    assert_grads_close(ranks[0]["grads"], theirs_g, TOKENS)
    for name, g in ranks[0]["grads"].items():  # DDP: every rank steps on the same gradient
        torch.testing.assert_close(ranks[1]["grads"][name], g, rtol=0, atol=0)
