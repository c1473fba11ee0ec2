"""Krum and Multi-Krum against TorchJD's ``KrumWeighting`` on the same Gramian.

Both compute the distances from G, D²ᵢⱼ = Gᵢᵢ + Gⱼⱼ − 2Gᵢⱼ, each off by at most γ₃·4·max Gᵢᵢ, so
a distance is off by at most δ = √(γ₃·4·max Gᵢᵢ) (the square root of an absolute error) and a
score, a sum of m distances, by m·δ (plus γₘ relative). Where the k-th and (k+1)-th smallest
scores are closer than twice that, the selection is not decided by the data and the example is
discarded; elsewhere the weights must be equal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchjd.aggregation import KrumWeighting

from mogradient.aggregators import gramian_of
from mogradient.aggregators.krum import Krum
from tests.bounds import U64, gamma


def _decided(g: np.ndarray, f: int, k: int) -> bool:
    n = g.shape[0]
    m = n - f - 2
    delta = math.sqrt(gamma(3, U64) * 4 * float(np.max(np.diag(g))))
    d = np.sqrt(np.maximum(np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g, 0.0))
    np.fill_diagonal(d, np.inf)
    scores = np.sort(np.sort(d, axis=1)[:, :m].sum(axis=1))
    margin = 2 * (m * delta + gamma(m, U64) * float(scores.max()))
    return k >= n or scores[k] - scores[k - 1] > margin


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("f", "k"), [(0, 1), (1, 1), (1, 3), (2, 2)])  # m = n − f − 2 ≥ 2
def test_agrees_with_torchjd(seed: int, f: int, k: int) -> None:
    n = f + 4 + seed % 3  # m ≥ 2: with one neighbour, mutual nearest pairs tie exactly
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    jac[seed % n] *= 30.0  # an outlier
    gram = gramian_of(jac)
    if not _decided(gram.numpy(), f, k):
        pytest.skip("the selection is within rounding of a tie: not decided by the data")
    expected = KrumWeighting(n_byzantine=f, n_selected=k)(gram).numpy()
    got = Krum(n_byzantine=f, n_selected=k).weights(gram.numpy())
    np.testing.assert_array_equal(got, expected)


def test_the_outlier_is_never_selected() -> None:
    jac = torch.tensor(
        [[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [1.0, 0.2], [-50.0, 80.0]], dtype=torch.float64
    )
    w = Krum(n_byzantine=1, n_selected=4).weights(gramian_of(jac).numpy())
    assert w[4] == 0.0
    np.testing.assert_allclose(w[:4], 0.25, rtol=0, atol=4 * U64)


def test_ties_at_the_cut_share_the_places() -> None:
    """The vertices of a regular simplex: every score ties, so every gradient gets 1/n
    (TorchJD would pick one); the same for any order of the objectives."""
    jac = torch.eye(4, dtype=torch.float64)
    w = Krum(n_selected=2).weights(gramian_of(jac).numpy())
    np.testing.assert_array_equal(w, np.full(4, 0.25))


def test_too_few_objectives_give_the_mean_with_a_warning() -> None:
    agg = Krum(n_byzantine=1)
    jac = torch.tensor([[1.0, 2.0], [3.0, -2.0], [5.0, 0.0]], dtype=torch.float64)
    with pytest.warns(UserWarning, match="at least n_byzantine \\+ 3 = 4"):
        d = agg(jac)
    torch.testing.assert_close(d, jac.mean(dim=0), rtol=0, atol=4 * U64 * 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_byzantine": -1}, "n_byzantine must be an integer >= 0"),
        ({"n_selected": 0}, "n_selected must be an integer >= 1"),
        ({"n_selected": 1.0}, "n_selected must be an integer >= 1"),
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Krum(**kwargs)
