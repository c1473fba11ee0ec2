"""Generation from an FSDP2-sharded policy on two CPU processes (gloo): the parameters are
gathered the library's way and every rank samples exactly what the unsharded policy samples.

accelerate's FSDP runs on GPUs only, so this applies ``fully_shard`` (FSDP2) by hand, as
accelerate's ``fsdp_version: 2`` does: each transformer block, then the root.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.llm_fixtures import tiny_lm_dir

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample(model, tokenizer, prompts, sharded: bool) -> torch.Tensor:
    from mogradient_llm.policy.rollout import generate_rollout
    from mogradient_llm.policy.sampling import sampling_config
    from mogradient_llm.policy.sharding import generation_context

    config = sampling_config({"max_new_tokens": 6, "do_sample": True}, model.policy, tokenizer)
    torch.manual_seed(1234)
    with generation_context(model) as synced_gpus:
        assert synced_gpus is (True if sharded else None)
        rollout = generate_rollout(model.policy, tokenizer, prompts, config, "cpu", synced_gpus)
    return rollout.response_ids


def _worker(rank: int, port: int, lm_dir: Path, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard

    from mogradient_llm.estimators.value_heads import PolicyWithValueHeads
    from tests.llm_fixtures import load_tiny_lm, tiny_prompts

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    policy, tokenizer = load_tiny_lm(lm_dir)
    tokenizer.padding_side = "left"
    # Different prompts (and so response lengths) per rank: generation must stay in lockstep.
    prompts = tiny_prompts(tokenizer)[4 * rank : 4 * rank + 4]
    torch.manual_seed(0)
    model = PolicyWithValueHeads(policy, 2)
    expected = _sample(model, tokenizer, prompts, sharded=False)
    for block in model.policy.transformer.h:
        fully_shard(block)
    fully_shard(model)
    got = _sample(model, tokenizer, prompts, sharded=True)
    torch.save({"expected": expected, "got": got}, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_fsdp2_sharded_policy_generates_what_the_unsharded_one_does(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), tiny_lm_dir(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(result["got"], result["expected"]), rank
