"""``mogradient.backward`` under DDP (two gloo processes): every rank writes the gradient of the
mean of the ranks' losses, the same one a single process computes on the whole batch; under
FSDP2 the loss and features paths do too (the same two processes run both)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import mogradient
from mogradient.gramian.recorder import GramianRecorder

SETTINGS = {
    "mgda-parameters": {"aggregator": "mgda"},
    "mgda-through-backward": {"aggregator": "mgda", "through_backward": True},
    "cagrad-through-backward": {"aggregator": "cagrad", "through_backward": True},
    "upgrad-recorder": {"aggregator": "upgrad", "recorder": True},
    "mgda-features": {"aggregator": "mgda", "features": True},
    "pcgrad-parameters": {"aggregator": "pcgrad"},
    "pcgrad-features": {"aggregator": "pcgrad", "features": True},
    "cagrad-features": {"aggregator": "cagrad", "features": True},
    "pama": {"aggregator": "pama"},
    "linear": {"aggregator": "linear"},
    "moco-parameters": {"aggregator": "moco"},
    "excess-mtl-parameters": {"aggregator": "excess-mtl"},
    "db-mtl-through-backward": {"aggregator": "db-mtl", "through_backward": True},
}
WORLD = 2


class TwoHeads(torch.nn.Module):
    """A shared trunk and one head per objective; returns the losses and the shared features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Linear(4, 6)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(6, 1) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = torch.tanh(self.trunk(x))
        return [self.heads[0](h).pow(2).mean(), (self.heads[1](h) - 1).abs().mean()], h


def _data() -> torch.Tensor:
    return torch.randn(8 * WORLD, 4, generator=torch.Generator().manual_seed(1))


def _grads(model: torch.nn.Module, x: torch.Tensor, setting: dict) -> dict[str, torch.Tensor]:
    """Two steps' worth of gradients: the second checks that DDP accepts the next iteration."""
    out = {}
    for step in range(2):
        model.zero_grad(set_to_none=True)
        params = [p for p in model.parameters()]
        recorder = None
        if setting.get("recorder"):  # the parameters' Gramian layer by layer
            with GramianRecorder(model, params) as recorder:
                losses, h = model(x + step)
        else:
            losses, h = model(x + step)
        features = h if setting.get("features") else None
        weights = mogradient.backward(
            losses,
            params,
            features=features,
            aggregator=setting["aggregator"],
            through_backward=setting.get("through_backward", False),
            recorder=recorder,
        )
        out[f"grad{step}"] = torch.cat([p.grad.flatten() for p in params])
        if weights is not None:
            out[f"weights{step}"] = weights.clone()
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    """Every DDP setting, then the FSDP2 ones, in the same two processes (one start each)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    shard = _data().chunk(WORLD)[rank]
    results: dict[str, object] = {}
    for name, setting in SETTINGS.items():
        model = torch.nn.parallel.DistributedDataParallel(TwoHeads())
        results[name] = _grads(model, shard, setting)
    results["fsdp"] = _fsdp_results(shard)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


FSDP_SETTINGS = ["linear", "mgda-features", "pcgrad-features", "cagrad-features"]


def _fsdp_results(shard: torch.Tensor) -> dict[str, object]:
    """FSDP2 (``fully_shard`` per block, then the root) on CPU: the loss and features paths
    work, parameter mode refuses."""
    from torch.distributed.fsdp import fully_shard

    results: dict[str, object] = {}
    for name in FSDP_SETTINGS:
        model = TwoHeads()
        fully_shard(model.trunk)
        fully_shard(model)
        losses, h = model(shard)
        features = h if SETTINGS[name].get("features") else None
        aggregator = SETTINGS[name]["aggregator"]
        mogradient.backward(losses, features=features, aggregator=aggregator)  # params: the graph's
        results[name] = torch.cat([p.grad.full_tensor().flatten() for p in model.parameters()])
    model = TwoHeads()
    fully_shard(model.trunk)
    fully_shard(model)
    losses, _ = model(shard)
    try:
        mogradient.backward(losses, list(model.parameters()), aggregator="mgda")
    except ValueError as exc:
        results["parameters-error"] = str(exc)
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_rank_gets_the_whole_batch_gradient(ranks, name) -> None:
    expected = _grads(TwoHeads(), _data(), SETTINGS[name])
    for rank in ranks:
        got = rank[name]
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    for key in ranks[0][name]:
        assert torch.equal(ranks[0][name][key], ranks[1][name][key]), key


def test_fsdp_features_and_loss_paths_match_one_process_and_parameter_mode_refuses(
    ranks,
) -> None:
    for rank in ranks:
        got = rank["fsdp"]
        for name in FSDP_SETTINGS:
            expected = _grads(TwoHeads(), _data(), SETTINGS[name])["grad0"]
            torch.testing.assert_close(got[name], expected, rtol=1e-5, atol=1e-6)
        assert "sharded" in got["parameters-error"] and "features=" in got["parameters-error"]
