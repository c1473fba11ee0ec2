"""The facts a method's class states about itself agree with its constructor and behaviour, and
the hand-written lists of methods (README, benchmarks) agree with the registry.

The facts (``preference_aware``, ``seeded``, ``needs_positive_losses``, ``needs_two_batches``,
``example_settings``)
are what the RL wing, the sweeps, the benchmarks and the contract test read instead of
inspecting signatures; these tests keep them from drifting.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mogradient.aggregation.preference import DRAWN_PREFERENCE, DRAWN_SPARSE_PREFERENCE
from mogradient.aggregators import (
    AdvantageCombiner,
    Aggregator,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
    Preference,
    registered,
)

METHODS = registered()
KINDS = {
    "GramianWeighting": GramianWeighting,
    "LossWeighting": LossWeighting,
    "AdvantageCombiner": AdvantageCombiner,
    "JacobianWeighting": JacobianWeighting,
}
ROOT = Path(__file__).resolve().parents[1]


def _parameters(cls: type[Aggregator]) -> list[str]:
    return list(inspect.signature(cls).parameters)


def _filled(kwargs: dict[str, Any], n: int) -> dict[str, Any]:
    """The setting with its drawn-preference placeholders replaced by fixed vectors."""
    fixed = {
        DRAWN_PREFERENCE: [0.25] + [0.75 / (n - 1)] * (n - 1),
        DRAWN_SPARSE_PREFERENCE: [1.0] + [0.0] * (n - 1),
    }
    return {k: fixed.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_preference_aware_iff_the_constructor_takes_a_preference(name: str) -> None:
    cls = METHODS[name]
    assert cls.preference_aware == ("preference" in _parameters(cls))
    if cls.preference_aware:  # one concept: the validated Preference
        agg = cls(preference=[1.0, 3.0])  # type: ignore[call-arg]
        assert isinstance(getattr(agg, "preference", None), Preference)
        with pytest.raises(ValueError, match="non-negative"):
            cls(preference=[1.0, -1.0])  # type: ignore[call-arg]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_seeded_iff_the_constructor_takes_a_seed(name: str) -> None:
    cls = METHODS[name]
    assert cls.seeded == ("seed" in _parameters(cls))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_example_settings_construct(name: str) -> None:
    cls = METHODS[name]
    for setting in cls.example_settings:
        assert set(setting) <= set(_parameters(cls)), (name, setting)
        assert setting, f"{name}: an empty example setting repeats the defaults"
        cls(**_filled(dict(setting), 3))


def _refuses_negative_losses(agg: Aggregator) -> bool:
    """Whether ``agg`` raises ``ValueError`` on loss values ``[1, -0.5]`` (and accepts
    ``[1, 0.5]``, so that it is the sign it refuses)."""
    gramian = np.eye(2)

    def weigh(losses: np.ndarray) -> object:
        if isinstance(agg, LossWeighting):
            return agg.weights(losses)
        if isinstance(agg, JacobianWeighting):
            return agg(torch.eye(2, dtype=torch.float64), losses=torch.from_numpy(losses))
        assert isinstance(agg, GramianWeighting)
        return agg.weights(gramian, losses=losses)

    weigh(np.array([1.0, 0.5]))
    agg.reset()
    try:
        weigh(np.array([1.0, -0.5]))
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("name", sorted(METHODS))
def test_needs_positive_losses_iff_negative_losses_are_refused(name: str) -> None:
    cls = METHODS[name]
    if issubclass(cls, AdvantageCombiner) or (
        issubclass(cls, (GramianWeighting, JacobianWeighting)) and not cls.uses_loss_values
    ):
        assert not cls.needs_positive_losses  # it never reads loss values
        return
    assert cls.needs_positive_losses == _refuses_negative_losses(cls())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_needs_two_batches_iff_refused_without_the_second_batch(name: str) -> None:
    """``needs_two_batches`` holds exactly for the cross-Gramian weightings, which
    ``mogradient.backward`` refuses without ``second_losses=`` and accepts with them."""
    import torch

    import mogradient
    from mogradient.aggregation.cross_gramian import CrossGramianWeighting

    cls = METHODS[name]
    assert cls.needs_two_batches == issubclass(cls, CrossGramianWeighting)
    if not cls.needs_two_batches:
        return
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="second_losses="):
        mogradient.backward([x.sum(), x.pow(2).sum()], [x], aggregator=name)
    second = [(2 * x).sum(), x.pow(3).sum()]
    assert (
        mogradient.backward([x.sum(), x.pow(2).sum()], [x], aggregator=name, second_losses=second)
        is not None
    )


def _readme_table() -> dict[str, set[str]]:
    """The README's kind table: kind → the method names in its row (aliases as written)."""
    rows: dict[str, set[str]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `(\w+)` \| [^|]+ \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`([\w-]+)`", m.group(2)))
    return rows


def test_the_readme_table_lists_every_registered_method_under_its_kind() -> None:
    from mogradient.aggregation.registry import aliases_of

    rows = _readme_table()
    assert set(rows) == set(KINDS)
    for kind, listed in rows.items():
        expected = {name for name, cls in METHODS.items() if issubclass(cls, KINDS[kind])}
        canonical = {name for name in listed if name in METHODS}
        assert canonical == expected, kind
        assert listed - canonical <= {a for n in expected for a in aliases_of(n)}, kind


def test_the_readme_lists_every_preference_aware_method() -> None:
    text = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"Preference-aware methods \(([^)]*)\)", text)
    assert m, "README: the sentence listing the preference-aware methods is missing"
    listed = set(re.findall(r"`([\w-]+)`", m.group(1)))
    assert listed == {name for name, cls in METHODS.items() if cls.preference_aware}


def test_the_pareto_sweep_runs_every_preference_aware_method() -> None:
    source = (ROOT / "benchmarks" / "pareto_sweep.py").read_text()
    m = re.search(r"PREFERENCE_METHODS = \[([^\]]*)\]", source)
    assert m
    listed = set(re.findall(r'"([\w-]+)"', m.group(1)))
    assert listed == {name for name, cls in METHODS.items() if cls.preference_aware}
