"""The TRL versions the adapter supports: it overrides internals that change between releases."""

from __future__ import annotations

from importlib import metadata

#: The ``trl`` extra's pin (``pyproject.toml``); the adapter refuses any other version.
SUPPORTED = ">=1.16,<1.17"


def check_trl_version(version: str | None = None) -> str:
    """The installed TRL version (or ``version``), or an ImportError naming the supported range.

    The adapter overrides ``GRPOTrainer``/``RLOOTrainer`` methods whose signatures and return
    values are TRL's internals, so another release may silently train something else."""
    if version is None:
        try:
            version = metadata.version("trl")
        except metadata.PackageNotFoundError:
            raise ImportError(
                f"mogradient_llm.integrations.trl needs TRL {SUPPORTED}: "
                "pip install 'mogradient[trl]'"
            ) from None
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        major, minor = -1, -1
    if (major, minor) != (1, 16):
        raise ImportError(
            f"mogradient_llm.integrations.trl supports TRL {SUPPORTED} (1.16.x), found {version}: "
            "pip install 'mogradient[trl]' (or 'trl>=1.16,<1.17')"
        )
    return version
