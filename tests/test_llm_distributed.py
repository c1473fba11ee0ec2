"""Two CPU processes (gloo) through accelerate: every rank ends a step with the same weights
and the same state (KL coefficient, reward normalisers, PAMA's batch weights), also after a
resume from rank 0's checkpoint.

PAMA needs only DDP's gradient all-reduce; the Gramian aggregators all-reduce the Gramian
(hidden-state level) or the per-objective gradients (parameter level) so that every rank
solves the same problem, then run one ordinary backward that DDP averages — also on a model
whose LM head is not tied to its embeddings, over several minibatches per step.

The same two processes also train the group estimators (GRPO with MGDA and with PAMA under a
KL term, RLOO with GDPO's normalise-then-sum) on two plain reward functions: both ranks end with
the same update (one run for every check: each process start imports the whole stack).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from accelerate.utils import DistributedType

from mogradient_llm.inputs.builtin_rewards import LengthReward, VaderReward
from mogradient_llm.inputs.rewards import Reward
from tests.llm_fixtures import make_trainer, tiny_lm_dir, untied_lm_dir

SETTINGS = {
    "pama": {"aggregator": "pama"},
    "pama-batch": {"aggregator": "pama", "aggregator_kwargs": {"granularity": "batch"}},
    "mgda-features": {"aggregator": "mgda", "gramian_level": "features"},
    "pcgrad-parameters": {  # the layer path under gloo (the default "auto" takes the Jacobian)
        "aggregator": "pcgrad",
        "gramian_level": "parameters",
        "parameter_gramian": "layers",
    },
    "mgda-parameters-auto": {"aggregator": "mgda", "gramian_level": "parameters"},
    "mgda-parameters-untied": {
        "aggregator": "mgda",
        "gramian_level": "parameters",
        "mini_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "untied": True,
    },
}
STEPS = 3
#: The group estimators, with two plain reward functions and the tiny config's batch.
GROUP_SETTINGS = {
    "grpo-mgda-features-batch-scale": {
        "algorithm": "grpo",
        "aggregator": "mgda",
        "gramian_level": "features",
        "scale_rewards": "batch",
    },
    "grpo-pama-beta": {"algorithm": "grpo", "aggregator": "pama", "noon": True, "beta": 0.1},
    "rloo-gdpo": {
        "algorithm": "rloo",
        "aggregator": "linear",
        "multi_objective_aggregation": "normalize_then_sum",
    },
}


def _chars(completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def _vowels(completions, **kwargs):
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


def _state(trainer) -> dict:
    """What every rank must agree on besides the parameters."""
    return {
        "kl_coef": trainer.estimator.kl_ctl.value,
        "score_stats": trainer.estimator.score_stats.state_dict(),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world_size: int, port: int, out_dir: str, lm_dir: Path, untied_dir: Path
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == world_size
    results = {}
    for name, setting in SETTINGS.items():
        overrides = {"batch_size": 4, "mini_batch_size": 4, **setting}
        untied = overrides.pop("untied", False)
        # One accelerator per trainer: save_state/load_state cover every model it prepared.
        trainer = make_trainer(
            [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()],
            accelerator=Accelerator(cpu=True),
            lm_dir=untied_dir if untied else lm_dir,
            kl_controller="adaptive",
            target_kl=0.01,  # far from the KL seen, so the coefficient moves every step
            kl_horizon=10.0,
            **overrides,
        )
        module = accelerator.unwrap_model(trainer.model)
        before = torch.cat([p.detach().flatten().clone() for p in module.parameters()])
        weights = []
        for _ in range(STEPS):
            stats = trainer.step()
            weights.append([stats["agg/weight/length"], stats["agg/weight/vader"]])
        after = torch.cat([p.detach().flatten() for p in module.parameters()])
        results[name] = {
            "before": before,
            "after": after,
            "weights": weights,
            "state": _state(trainer),
            "prompt": trainer.last_samples[0]["prompt"],
        }
        if name == "pama-batch":  # rank 0's checkpoint restores every rank
            trainer.save(Path(out_dir) / "checkpoint")
            resumed = make_trainer(
                [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()],
                accelerator=Accelerator(cpu=True),
                lm_dir=lm_dir,
                kl_controller="adaptive",
                target_kl=0.01,
                kl_horizon=10.0,
                **overrides,
            )
            resumed.load_checkpoint(Path(out_dir) / "checkpoint")
            loaded = _state(resumed)
            stats = resumed.step()
            results["resumed"] = {
                "loaded": loaded,
                "state": _state(resumed),
                "weights": [stats["agg/weight/length"], stats["agg/weight/vader"]],
            }
    results["group"] = {}
    for name, setting in GROUP_SETTINGS.items():
        trainer = make_trainer(
            [_chars, _vowels], accelerator=Accelerator(cpu=True), lm_dir=lm_dir, **setting
        )
        module = accelerator.unwrap_model(trainer.model)
        before = torch.cat([p.detach().flatten().clone() for p in module.parameters()])
        weights = [trainer.step()["agg/weight/_chars"] for _ in range(2)]
        after = torch.cat([p.detach().flatten() for p in module.parameters()])
        results["group"][name] = {"before": before, "after": after, "weights": weights}
    nan_on_rank1 = Reward(lambda p, c: [math.nan if rank else 0.0] * len(c), name="nan")
    trainer = make_trainer(
        [VaderReward(), nan_on_rank1],
        accelerator=Accelerator(cpu=True),
        lm_dir=lm_dir,
        batch_size=4,
        mini_batch_size=4,
        skip_nonfinite=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipped = trainer.step()["train/skipped"]
    warned = any("step 1" in str(w.message) for w in caught)
    results["skip"] = {"skipped": skipped, "warned": warned}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    # Both ranks leave their collectives before either tears gloo down: a rank that exits
    # while the other still talks to it can abort ("terminate called without an active
    # exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_end_with_identical_weights(tmp_path) -> None:
    lm_dir = tiny_lm_dir()  # saved here: under torch.distributed only rank 0 would write it
    untied_dir = untied_lm_dir()
    mp.spawn(
        _worker, args=(2, _free_port(), str(tmp_path), lm_dir, untied_dir), nprocs=2, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in SETTINGS:
        first, second = ranks[0][name], ranks[1][name]
        torch.testing.assert_close(first["before"], second["before"])
        assert not torch.equal(first["before"], first["after"]), name
        torch.testing.assert_close(first["after"], second["after"], rtol=0, atol=0)
        if name != "pama":  # PAMA's logged weights are per-token averages of each rank's batch
            assert first["weights"] == second["weights"], name
        assert first["state"] == second["state"], name
        assert first["state"]["kl_coef"] != 0.2, name  # the controller did move
    first, second = ranks[0]["resumed"], ranks[1]["resumed"]
    assert first["loaded"] == second["loaded"] == ranks[0]["pama-batch"]["state"]
    assert first["state"] == second["state"] and first["weights"] == second["weights"]
    for rank in ranks:  # a NaN reward on rank 1 only: both ranks skip the step together
        assert rank["skip"] == {"skipped": 1.0, "warned": True}
    for name in GROUP_SETTINGS:  # the group estimators: both ranks end with the same update
        first, second = ranks[0]["group"][name], ranks[1]["group"][name]
        assert not torch.equal(first["before"], first["after"]), f"{name}: no update"
        torch.testing.assert_close(
            first["after"], second["after"], rtol=0, atol=0, msg=f"{name}: the ranks differ"
        )
        if name != "grpo-pama-beta":  # PAMA's logged weights are means over each rank's batch
            assert first["weights"] == second["weights"], f"{name}: logged weights differ"


def test_cli_trains_and_resumes_under_accelerate_launch_with_two_cpu_processes(tmp_path) -> None:
    """MGDA over the parameters of an untied-head (Llama-style) model, two minibatches a step:
    DDP used to stop on the second minibatch (the LM head got no gradient in its backward)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    # accelerate's multi-process launcher is named --multi_gpu; with `train --cpu` the ranks
    # run on the CPU over gloo (its own --cpu flag starts several processes only through MPI).
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "mogradient_llm", "--threads", "1",
        "train", "--cpu", "--policy", str(untied_lm_dir()),
        "--reward", "length", "--reward", "vader",
        "--aggregator", "mgda", "--gramian-level", "parameters",
        "--batch-size", "4", "--mini-batch-size", "2", "--num-ppo-epochs", "1",
        "--max-new-tokens", "6", "--no-progress", "--save-steps", "1",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    first = subprocess.run([*command, "--steps", "1"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = subprocess.run(
        [*command, "--steps", "2", "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming from") == 1  # printed by the main process only
    state = tmp_path / "final" / "resume"
    assert sorted(p.name for p in state.glob("prompt_sampler_*.pt")) == [
        "prompt_sampler_0.pt",
        "prompt_sampler_1.pt",
    ]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]


@pytest.mark.parametrize("kind", [DistributedType.FSDP, DistributedType.DEEPSPEED])
def test_parameter_level_gramian_is_refused_under_sharding(kind: DistributedType) -> None:
    from mogradient_llm.loop.setup import check_sharding, objective_loss
    from tests.llm_fixtures import tiny_config

    sharded = SimpleNamespace(distributed_type=kind)
    parameters = objective_loss(tiny_config(aggregator="mgda"), ["a", "b"])
    with pytest.raises(ValueError, match="gramian_level='features'"):
        check_sharding(parameters, sharded)
    for allowed in ({"aggregator": "mgda", "gramian_level": "features"}, {"aggregator": "pama"}):
        check_sharding(objective_loss(tiny_config(**allowed), ["a", "b"]), sharded)
