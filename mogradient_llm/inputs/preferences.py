"""Preference conditioning: the preferences a conditioned policy trains on, and how it sees them.

One policy for the whole front (Rewards-in-Context, Yang et al. 2024): every prompt gets its own
preference ``p`` on the simplex, drawn from a Dirichlet (:class:`PreferenceSampler`); the policy
reads it through an injection (:class:`PreferenceInjection`; :class:`TextPrefix`, a text prefix
of the prompt, is the one built in), and the multi-objective loss weighs that prompt's
completions by ``p`` (:mod:`mogradient_llm.objectives.conditioned`).

The drawn preferences lie on a grid of step ``1 / RESOLUTION`` (largest-remainder rounding, so
each still sums to 1): the text the policy reads is then exactly the preference the loss uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

#: The grid step of the drawn preferences is 1 / RESOLUTION (two decimals in the prefix).
RESOLUTION = 100
#: Mixed into the stream's seed so the preferences do not share the prompt order's stream.
_STREAM = 0x5EED_0F_9EF


def on_grid(preferences: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """Rows ``[n, k]`` on the simplex → the nearest rows of multiples of ``1 / resolution``
    that still sum to 1 (largest remainder: floor, then one unit more to the largest
    fractional parts)."""
    p = np.asarray(preferences, dtype=np.float64)
    scaled = p * resolution
    units = np.floor(scaled).astype(np.int64)
    missing = resolution - units.sum(1)
    order = np.argsort(-(scaled - units), axis=1, kind="stable")
    for row, m in enumerate(missing):
        units[row, order[row, :m]] += 1
    return units / resolution


def normalize_preference(values: Sequence[float], n_objectives: int) -> tuple[float, ...]:
    """``values`` divided by their sum; raises on a wrong length, negative or all-zero values."""
    p = np.asarray(values, dtype=np.float64)
    if p.shape != (n_objectives,):
        raise ValueError(
            f"preference {list(values)} has {p.size} entries for {n_objectives} rewards; "
            "give one entry per --reward"
        )
    if not np.isfinite(p).all() or (p < 0).any() or not p.sum() > 0:
        raise ValueError(f"preference {list(values)} must be non-negative and not all zero")
    return tuple(float(x) for x in p / p.sum())


class PreferenceSampler:
    """Preferences for a conditioned policy: one per prompt, Dirichlet with every
    concentration equal to ``concentration`` (1: uniform on the simplex; below 1: more near the
    corners, the front's ends), rounded onto the ``1 / RESOLUTION`` grid.

    Each rank draws from its own stream, seeded by ``(seed, rank)``, like its prompts: the
    weights are per sample and the loss values every method reads are summed over the ranks
    first, so no rank needs another's preferences. The stream's state is checkpointed
    (:meth:`state_dict`), so a resumed run draws what an uninterrupted one draws.
    """

    def __init__(self, n_objectives: int, concentration: float, seed: int, rank: int = 0):
        if n_objectives < 2:
            raise ValueError(
                f"a conditioned policy needs at least 2 objectives to trade off, got {n_objectives}"
            )
        if not concentration > 0:
            raise ValueError(f"the Dirichlet concentration must be positive, got {concentration}")
        self.n_objectives = n_objectives
        self.concentration = float(concentration)
        self._rng = np.random.default_rng([_STREAM, rank, seed % 2**32])

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` preferences ``[n, k]`` (rows on the grid, summing to 1)."""
        alpha = np.full(self.n_objectives, self.concentration)
        return on_grid(self._rng.dirichlet(alpha, size=n))

    def state_dict(self) -> dict[str, Any]:
        """The stream's state (JSON-serialisable: the generator's integers)."""
        return dict(self._rng.bit_generator.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state


class PreferenceInjection(Protocol):
    """How a conditioned policy sees its preference: the prompt texts it generates from, given
    each text's preference. Swappable: the trainer and the evaluation call only this."""

    def apply(self, texts: Sequence[str], preferences: np.ndarray) -> list[str]:
        """``texts`` as the policy reads them under ``preferences`` ``[len(texts), k]``."""
        ...


class TextPrefix:
    """Rewards-in-Context's injection: the preference written before the prompt,
    ``"<0.80|0.20> "`` (two decimals, the objectives in order). No new parameters: it works
    unchanged with LoRA, several processes, resuming and any saved policy; the reference model
    reads the same prefix, so the KL compares like with like."""

    def __init__(self, template: str = "<{weights}> ", separator: str = "|"):
        if "{weights}" not in template:
            raise ValueError(f"the template must contain '{{weights}}', got {template!r}")
        self.template = template
        self.separator = separator

    def prefix(self, preference: Sequence[float]) -> str:
        """The text put before a prompt read under ``preference``."""
        weights = self.separator.join(f"{float(w):.2f}" for w in preference)
        return self.template.format(weights=weights)

    def apply(self, texts: Sequence[str], preferences: np.ndarray) -> list[str]:
        if len(texts) != len(preferences):
            raise ValueError(f"{len(texts)} texts and {len(preferences)} preferences")
        return [self.prefix(p) + text for text, p in zip(texts, preferences)]


def conditioning(
    preference: Sequence[float], injection: PreferenceInjection | None = None
) -> Callable[[list[str]], list[str]]:
    """``texts -> texts`` as a conditioned policy reads them under one ``preference`` (for
    evaluation: :func:`~mogradient_llm.policy.evaluation.evaluate_policy`'s ``condition``)."""
    injection = injection or TextPrefix()
    p = np.asarray(preference, dtype=np.float64)

    def condition(texts: list[str]) -> list[str]:
        return injection.apply(texts, np.tile(p, (len(texts), 1)))

    return condition
