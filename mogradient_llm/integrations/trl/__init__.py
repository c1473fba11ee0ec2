"""mogradient inside TRL 1.16's ``GRPOTrainer`` and ``RLOOTrainer`` (``docs/trl.md``).

``MOGRPOTrainer(args=MOGRPOConfig(aggregator="upgrad", ...), reward_funcs=[f, g], ...)``
trains with every aggregator of the registry: each reward function is one objective;
advantage-level methods (PAMA, ``linear``, GDPO) combine the per-objective group advantages,
Gramian weightings (MGDA, UPGrad, …) weigh the per-objective policy losses by the Gramian of
their gradients at ``gramian_level``. Everything else is TRL's.
"""

from mogradient_llm.integrations.trl.version import SUPPORTED, check_trl_version

check_trl_version()

from mogradient_llm.integrations.trl.configs import MOGRPOConfig, MORLOOConfig  # noqa: E402
from mogradient_llm.integrations.trl.trainers import MOGRPOTrainer, MORLOOTrainer  # noqa: E402

__all__ = ["SUPPORTED", "MOGRPOConfig", "MOGRPOTrainer", "MORLOOConfig", "MORLOOTrainer"]
