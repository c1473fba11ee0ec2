"""GradDrop against TorchJD's ``GradDrop`` given the same uniforms, and the sign rule by hand.

The class documents its stream: ``numpy.random.default_rng(seed).random(shape)`` per call.
TorchJD draws its uniforms with ``torch.rand``; the test hands it the same ones. Both then keep
the same entries (the masks compare exact quantities), and sum them in different orders:
they differ by at most ``2·γₙ₊₁·Σᵢ|gᵢⱼ|`` per coordinate (Higham §3.1; the leak factor adds
one rounding per term).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchjd.aggregation import GradDrop as TorchJDGradDrop

from mogradient.aggregators.graddrop import GradDrop
from tests.bounds import U64, gamma


@pytest.mark.parametrize("leak", [None, [0.0, 0.5, 0.1, 1.0]])
@pytest.mark.parametrize("seed", [0, 3])
def test_agrees_with_torchjd_on_the_same_uniforms(
    leak: list[float] | None, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(4, 40, generator=gen, dtype=torch.float64)
    jac[:, :5] = jac[:, :5].abs()  # pure-sign columns
    u = torch.from_numpy(np.random.default_rng(seed).random(40))
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: u)
    torchjd_leak = None if leak is None else torch.tensor(leak, dtype=torch.float64)
    expected = TorchJDGradDrop(leak=torchjd_leak)(jac)
    monkeypatch.undo()
    got = GradDrop(leak=leak, seed=seed)(jac)
    bound = 2 * gamma(5, U64) * jac.abs().sum(dim=0)
    assert bool(((got - expected).abs() <= bound).all())


def test_pure_signs_keep_everything() -> None:
    """P = 1 where every value is ≥ 0 (kept: P > U for U < 1), P = 0 where every value is ≤ 0
    (kept: P < U for U > 0): the column sum, whatever the draw."""
    jac = torch.tensor([[1.0, -2.0, 0.0], [3.0, -0.5, 0.0]], dtype=torch.float64)
    for seed in range(5):
        assert torch.equal(GradDrop(seed=seed)(jac), torch.tensor([4.0, -2.5, 0.0]).double())


def test_one_sign_survives_per_coordinate() -> None:
    gen = torch.Generator().manual_seed(1)
    jac = torch.randn(5, 200, generator=gen, dtype=torch.float64)
    w = GradDrop(seed=2).combine(jac).weights
    kept_signs = torch.sign(jac) * (w > 0)
    assert bool(((kept_signs >= 0).all(dim=0) | (kept_signs <= 0).all(dim=0)).all())
    assert bool(((w == 0) | (w == 1)).all())


def test_unscored_objectives_take_no_part() -> None:
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64)
    valid = torch.rand(3, 6, 5, generator=gen) < 0.6
    noise = torch.where(valid, a, 1e9 * torch.randn(3, 6, 5, generator=gen, dtype=torch.float64))
    first = GradDrop(seed=7).combine(a, valid=valid)
    second = GradDrop(seed=7).combine(noise, valid=valid)
    assert torch.equal(first.combined, second.combined)
    assert bool((first.weights[~valid] == 0).all())


def test_the_stream_is_seeded_and_reset() -> None:
    jac = torch.randn(3, 30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    agg = GradDrop(seed=11)
    first, second = agg(jac), agg(jac)
    assert not torch.equal(first, second)  # a new draw per call
    agg.reset()
    assert torch.equal(agg(jac), first)
    assert not torch.equal(GradDrop(seed=12)(jac), first)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"leak": [0.5, 1.5]}, r"leak must be None or one number in \[0, 1\]"),
        ({"leak": [[0.5]]}, r"leak must be None or one number in \[0, 1\]"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"seed": 1.5}, "seed must be a non-negative int"),
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradDrop(**kwargs)  # type: ignore[arg-type]


def test_a_leak_per_objective() -> None:
    with pytest.raises(ValueError, match="one leak per objective"):
        GradDrop(leak=[0.1, 0.2])(torch.ones(3, 4))
