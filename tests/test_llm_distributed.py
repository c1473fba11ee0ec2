"""Two CPU processes (gloo) through accelerate: every rank ends a step with the same weights.

PAMA needs only DDP's gradient all-reduce; the Gramian aggregators all-reduce the Gramian
(hidden-state level) or the per-objective gradients (parameter level) so that every rank
solves the same problem.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from mogradient_llm.rewards import LengthReward, VaderReward
from tests.llm_fixtures import make_trainer, tiny_lm_dir

SETTINGS = {
    "pama": {"aggregator": "pama"},
    "mgda-features": {"aggregator": "mgda", "gramian_level": "features"},
    "pcgrad-parameters": {"aggregator": "pcgrad", "gramian_level": "parameters"},
}
STEPS = 2


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
    results = {}
    for name, overrides in SETTINGS.items():
        trainer = make_trainer(
            [LengthReward(scale=20.0, low=0.0, high=2.0), VaderReward()],
            accelerator=accelerator,
            lm_dir=lm_dir,
            batch_size=4,
            mini_batch_size=4,
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
            "prompt": trainer.last_samples[0]["prompt"],
        }
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    accelerator.end_training()


def test_two_gloo_processes_end_with_identical_weights(tmp_path) -> None:
    lm_dir = tiny_lm_dir()  # saved here: under torch.distributed only rank 0 would write it
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), lm_dir), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name in SETTINGS:
        first, second = ranks[0][name], ranks[1][name]
        torch.testing.assert_close(first["before"], second["before"])
        assert not torch.equal(first["before"], first["after"]), name
        torch.testing.assert_close(first["after"], second["after"], rtol=0, atol=0)
        if name != "pama":  # PAMA's logged weights are per-token averages of each rank's batch
            assert first["weights"] == second["weights"], name
