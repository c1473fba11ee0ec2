"""Trimmed mean against TorchJD's ``TrimmedMean`` and against the rule written out by hand.

Tolerance: both sides average the same kept values, summed in possibly different orders, so
they differ by at most ``2·γₙ·max|Jᵢⱼ|`` per coordinate (Higham §3.1: a sum of n terms is off by
γₙ·Σ|terms|, and the mean divides by the count exactly up to one more rounding, inside γₙ₊₁).
"""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import TrimmedMean as TorchJDTrimmedMean

from mogradient.aggregators.trimmed_mean import TrimmedMean
from tests.bounds import U32, U64, gamma


def _hand(values: list[float], t: int) -> float:
    """Sort, drop min(t, ⌊(m−1)/2⌋) at each end, average the rest."""
    m = len(values)
    k = min(t, (m - 1) // 2)
    kept = sorted(values)[k : m - k]
    return sum(kept) / len(kept)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("n", "t"), [(1, 0), (3, 1), (5, 2), (6, 1), (7, 3)])
def test_agrees_with_torchjd(n: int, t: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(n * 10 + t)
    jac = torch.randn(n, 9, generator=gen, dtype=torch.float64).to(dtype)
    jac[:, 0] = 0.5  # ties
    got = TrimmedMean(t)(jac)
    expected = TorchJDTrimmedMean(t)(jac)
    u = U64 if dtype == torch.float64 else U32
    bound = 2 * gamma(n + 1, u) * jac.abs().amax(dim=0)
    assert got.dtype == dtype
    assert bool(((got - expected).abs() <= bound).all())


@pytest.mark.parametrize(("n", "t"), [(2, 1), (4, 2), (5, 3), (1, 4)])
def test_too_few_values_trim_to_the_middle(n: int, t: int) -> None:
    """Where TorchJD refuses (n < 2t + 1): the median, or the mean of the middle two."""
    gen = torch.Generator().manual_seed(n)
    jac = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    got = TrimmedMean(t)(jac)
    for j in range(6):
        expected = _hand(jac[:, j].tolist(), t)
        assert abs(float(got[j]) - expected) <= 2 * gamma(n + 1, U64) * float(jac.abs().max())


def test_valid_and_mask_per_sample() -> None:
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)
    valid = torch.rand(5, 4, 3, generator=gen) < 0.7
    valid[:, 0, 0] = False
    mask = (torch.rand(4, 3, generator=gen) < 0.8).double()
    combined, weights, s = TrimmedMean(1).combine(a, mask, valid=valid)
    assert bool((weights[~valid] == 0).all())
    for b in range(4):
        for t in range(3):
            values = [float(a[i, b, t]) for i in range(5) if valid[i, b, t]]
            expected = _hand(values, 1) if values else 0.0
            assert abs(float(s[b, t]) - expected) <= 2 * gamma(6, U64) * 5.0
            assert float(combined[b, t]) == float(s[b, t]) * float(mask[b, t])
            if values:
                assert abs(float(weights[:, b, t].sum()) - 1.0) <= gamma(6, U64)


def test_an_outlier_is_ignored() -> None:
    jac = torch.tensor([[1.0, 2.0], [1.5, 2.5], [1e12, -1e12]], dtype=torch.float64)
    assert torch.equal(TrimmedMean(1)(jac), torch.tensor([1.5, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_bad_trim_number(bad: object) -> None:
    with pytest.raises(ValueError, match="trim_number must be an integer >= 0"):
        TrimmedMean(bad)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="objective 1 contain"):
        TrimmedMean()(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="objective 1 contain NaN"):
        TrimmedMean().combine(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="one mask entry per sample"):
        TrimmedMean().combine(torch.zeros(3, 4), torch.ones(5))
