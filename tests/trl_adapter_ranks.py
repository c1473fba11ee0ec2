"""Run by ``tests/test_trl_adapter_distributed.py`` under ``accelerate launch`` (2 CPU
processes): the adapter trains with UPGrad at the features level, MGDA at the parameters level
and ``linear`` under a constraint; each rank saves its final parameters, logged weights and
constraint multipliers to ``argv[1]``.
``argv[2]``: the tiny policy (saved once, by the test)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mogradient_llm.integrations.trl import MOGRPOConfig, MOGRPOTrainer
from tests.trl_adapter_fixtures import G, train, trainer, trl_args

SETTINGS = {
    "upgrad-features": {"aggregator": "upgrad", "gramian_level": "features"},
    "mgda-parameters": {"aggregator": "mgda", "gramian_level": "parameters"},
    # a constraint no completion meets: λ grows on every rank alike
    "linear-constrained": {
        "aggregator": "linear",
        "constraints": ["vowel_reward>=100"],
        "constraint_lr": 0.1,
    },
}
MULTIPLIER = "constraint/vowel_reward/multiplier"


def main(out_dir: Path, lm_dir: Path) -> None:
    torch.set_num_threads(1)
    results = {}
    for name, setting in SETTINGS.items():
        args = trl_args(MOGRPOConfig, per_device_train_batch_size=G, max_steps=2, **setting)
        t = train(trainer(MOGRPOTrainer, args, lm_dir=lm_dir))
        module = t.accelerator.unwrap_model(t.model)
        weights = [[h[k] for k in sorted(h) if k.startswith("mo/weight/")]
                   for h in t.state.log_history if "mo/weight_sum" in h]  # fmt: skip
        results[name] = {
            "params": torch.cat([p.detach().flatten() for p in module.parameters()]),
            "weights": weights,
            "multipliers": [h[MULTIPLIER] for h in t.state.log_history if MULTIPLIER in h],
        }
        rank = t.accelerator.process_index
    torch.save(results, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
