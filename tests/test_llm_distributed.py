"""Two CPU processes (gloo) through accelerate: PAMA needs only DDP's gradient all-reduce."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mogradient_llm.rewards import LengthReward, VaderReward
from tests.llm_fixtures import make_trainer, tiny_lm_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, lm_dir: Path) -> None:
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
    trainer = make_trainer(
        [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()],
        accelerator=accelerator,
        lm_dir=lm_dir,
    )
    module = accelerator.unwrap_model(trainer.model)
    before = torch.cat([p.detach().flatten().clone() for p in module.parameters()])
    trainer.step()
    after = torch.cat([p.detach().flatten() for p in module.parameters()])
    torch.save(
        {"before": before, "after": after, "prompts": trainer.last_samples[0]["prompt"]},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    accelerator.end_training()


def test_two_gloo_processes_end_with_identical_weights(tmp_path) -> None:
    lm_dir = tiny_lm_dir()  # saved here: under torch.distributed only rank 0 would write it
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), lm_dir), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(ranks[0]["before"], ranks[1]["before"])
    assert not torch.equal(ranks[0]["before"], ranks[0]["after"])
    torch.testing.assert_close(ranks[0]["after"], ranks[1]["after"], rtol=0, atol=0)
