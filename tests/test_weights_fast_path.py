"""The fast path of a Gramian method's ``weights()`` on a float64 CPU tensor
(:mod:`mogradient.solvers.checked`): one compiled validate-and-solve call that must give the
general path's weights bit for bit, raise the general path's errors, and leave the method's
state as the general path would.

The general path is reached with the same Gramian as a numpy array (the fast path takes torch
tensors only), so every comparison below is exact: both sides run the same compiled solver on
the same float64 entries, and the fast path only skips Python-level steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mogradient.aggregation.kinds as kinds
from mogradient.aggregation._scale import GRAMIAN_WINDOW, even_exponent_into_range
from mogradient.aggregation.kinds import GramianWeighting
from mogradient.aggregation.registry import get_aggregator
from mogradient.solvers.checked import (
    RESCALE,
    WINDOW,
    checked_status,
    imtl_g_into,
    outside_window,
)
from mogradient.solvers.validation import OK

#: (name, settings): every method with a fast path, and the settings it branches on.
CASES = [
    ("upgrad", {}),
    ("upgrad", {"preference": [0.7, 0.0, 0.3, 0.0, 0.0, 0.0]}),
    ("dualproj", {}),
    ("dualproj", {"preference": [0.1, 0.2, 0.3, 0.4, 0.0, 0.0]}),
    ("mgda", {}),
    ("mgda", {"warm_start": True}),
    ("imtl-g", {}),
    ("aligned-mtl", {}),
    ("aligned-mtl", {"scale_mode": "median"}),
    ("aligned-mtl", {"scale_mode": "rmse"}),
    ("pcgrad", {}),
    ("gradvac", {"beta": 0.5}),
]


def _weighting(name: str, **settings: object) -> GramianWeighting:
    agg = get_aggregator(name, **settings)
    assert isinstance(agg, GramianWeighting)
    return agg


def _gramians(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Full-rank, rank-deficient, conflicting, zero and one-zero-row Gramians, at gradient
    scales from 1e-30 to 1e30 (inside the window) and 2^±300 (outside: rescaled)."""
    out = []
    for rank in (n, max(1, n // 2)):
        j = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, 40))
        j *= 10.0 ** rng.uniform(-3, 3, size=(n, 1))
        out.append(j @ j.T)
    j = rng.normal(size=(n, 40))
    j[1:] -= 1.5 * j[0]  # every later gradient conflicts with the first
    out.append(j @ j.T)
    out.append(np.zeros((n, n)))
    j[0] = 0.0
    out.append(j @ j.T)
    base = out[0]
    out += [base * 1e-30, base * 1e30, base * 2.0**300, base * 2.0**-300]
    return out


def _settings(name: str, settings: dict, n: int) -> dict:
    pref = settings.get("preference")
    if pref is None:
        return settings
    return {**settings, "preference": (pref * n)[:n]}  # the pattern repeated, first entry > 0


@pytest.mark.parametrize(("name", "settings"), CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 17])
def test_torch_weights_equal_the_general_path_bit_for_bit(
    name: str, settings: dict, n: int
) -> None:
    """The same stream of calls (state included: GradVac's targets, the random orders, MGDA's
    warm start) on torch and on numpy Gramians gives identical weights."""
    rng = np.random.default_rng(n)
    kw = _settings(name, settings, n)
    fast, general = _weighting(name, **kw), _weighting(name, **kw)
    for g in _gramians(n, rng):
        w = fast.weights(torch.from_numpy(g.copy()))
        assert isinstance(w, torch.Tensor) and w.dtype == torch.float64
        np.testing.assert_array_equal(w.numpy(), general.weights(g.copy()))


@pytest.mark.parametrize(("name", "settings"), CASES)
def test_in_range_float64_tensor_skips_the_python_checks(
    name: str, settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An in-range float64 CPU tensor is validated in the compiled call, not by
    ``check_gramian`` (except with MGDA's warm start, which keeps the general path)."""
    agg = _weighting(name, **_settings(name, settings, 4))
    g = np.random.default_rng(0).normal(size=(4, 30))
    expected = _weighting(name, **_settings(name, settings, 4)).weights(g @ g.T)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("check_gramian ran")

    monkeypatch.setattr(kinds, "check_gramian", refuse)
    if settings.get("warm_start"):
        with pytest.raises(AssertionError, match="check_gramian ran"):
            agg.weights(torch.from_numpy(g @ g.T))
    else:
        np.testing.assert_array_equal(agg.weights(torch.from_numpy(g @ g.T)).numpy(), expected)


def _bad_gramians() -> list[np.ndarray]:
    g3 = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])
    nan, inf, asym, negdiag = g3.copy(), g3.copy(), g3.copy(), g3.copy()
    nan[1, 2] = nan[2, 1] = np.nan
    inf[0, 0] = np.inf
    asym[0, 1] = 0.9
    negdiag[2, 2] = -1.0
    minor = np.array([[1.0, 2.0], [2.0, 1.0]])
    # PSD 2×2 minors, a negative eigenvalue: caught by the full test up to 16 objectives
    curved = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    big = np.eye(20)
    big[3, 7] = big[7, 3] = 1.5
    return [nan, inf, asym, negdiag, minor, curved, big]


@pytest.mark.parametrize(("name", "settings"), CASES)
@pytest.mark.parametrize("index", range(7))
def test_bad_gramians_raise_the_general_paths_error(name: str, settings: dict, index: int) -> None:
    g = _bad_gramians()[index]
    kw = _settings(name, settings, g.shape[0])
    with pytest.raises(ValueError) as general:
        _weighting(name, **kw).weights(g.copy())
    with pytest.raises(ValueError) as fast:
        _weighting(name, **kw).weights(torch.from_numpy(g.copy()))
    assert str(fast.value) == str(general.value)


@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
def test_a_refused_gramian_leaves_the_random_stream_alone(name: str) -> None:
    """A Gramian that fails validation draws no visiting orders: the next call gives the
    weights a fresh instance gives on its first call."""
    bad = torch.from_numpy(_bad_gramians()[2])
    j = np.random.default_rng(3).normal(size=(3, 20))
    good = torch.from_numpy(j @ j.T)
    agg, fresh = _weighting(name), _weighting(name)
    with pytest.raises(ValueError):
        agg.weights(bad)
    np.testing.assert_array_equal(agg.weights(good).numpy(), fresh.weights(good).numpy())


def test_tensors_outside_the_fast_path_still_work() -> None:
    """float32, non-contiguous, requires_grad and with losses: the general path, as before."""
    j = torch.randn(3, 20, dtype=torch.float64)
    g = j @ j.T
    agg = _weighting("upgrad")
    expected = agg.weights(g.numpy())
    np.testing.assert_array_equal(agg.weights(g.T.contiguous().T).numpy(), expected)
    np.testing.assert_array_equal(agg.weights(g.clone().requires_grad_()).numpy(), expected)
    np.testing.assert_array_equal(agg.weights(g, losses=torch.ones(3)).numpy(), expected)
    assert agg.weights(g.float()).dtype == torch.float64


def test_window_matches_the_general_paths() -> None:
    """``outside_window`` is ``even_exponent_into_range(max diagonal, GRAMIAN_WINDOW) != 0``."""
    assert WINDOW == GRAMIAN_WINDOW
    edges = [0.0, 1.0, 2.0**255, 2.0**256, math.nextafter(2.0**256, 0.0), 2.0**-256]
    edges += [math.nextafter(2.0**-256, 0.0), 2.0**-257, 5e-324, 1e300, np.inf, np.nan]
    for top in edges:
        g = np.diag([top, top / 2 if np.isfinite(top) else 1.0])
        expected = even_exponent_into_range(max(g.diagonal().tolist()), GRAMIAN_WINDOW) != 0
        assert outside_window(g) == expected, top
    assert checked_status(np.eye(2) * 2.0**300) == RESCALE
    assert checked_status(np.eye(2)) == OK


def test_a_lazily_negated_view_is_not_read_as_its_negation() -> None:
    """The fast path reads the tensor's memory by address; a negated view (``is_neg()``) holds
    -G there. The general path refuses the view (as before), and with ``G = 0`` (where
    -G = G) the fast path gives the weights of the zero Gramian."""
    g = np.array([[2.0, 1.0], [1.0, 3.0]])
    for name, settings in CASES:
        agg = _weighting(name, **_settings(name, settings, 2))
        with pytest.raises(RuntimeError, match="negative bit"):
            agg.weights(torch._neg_view(torch.from_numpy(-g)))
        if settings.get("warm_start"):  # no fast path: the general path refuses the view
            continue
        zero = agg.weights(torch._neg_view(torch.zeros(2, 2, dtype=torch.float64)))
        expected = _weighting(name, **_settings(name, settings, 2)).weights(np.zeros((2, 2)))
        np.testing.assert_array_equal(zero.numpy(), expected)


def test_the_output_is_written_only_when_the_solve_is_ok() -> None:
    """``*_into`` leaves the output alone on a refused or rescaled Gramian (the general path
    then decides), and every call returns a new tensor."""
    bad = torch.from_numpy(_bad_gramians()[0])
    out = torch.full((3,), 7.0, dtype=torch.float64)
    assert not imtl_g_into(bad.data_ptr(), 3, out.data_ptr())
    big = torch.eye(3, dtype=torch.float64) * 2.0**300
    assert not imtl_g_into(big.data_ptr(), 3, out.data_ptr())
    assert out.tolist() == [7.0] * 3
    g = torch.eye(3, dtype=torch.float64)
    assert imtl_g_into(g.data_ptr(), 3, out.data_ptr())
    assert out.tolist() == [1 / 3] * 3
    agg = _weighting("imtl-g")
    first, second = agg.weights(g), agg.weights(g)
    assert first.data_ptr() != second.data_ptr()


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_pcgrad_orders_are_one_permutation_per_row(n: int) -> None:
    """PCGrad draws its visiting orders in one call; the stream is that of one
    ``Generator.permutation(n)`` per objective, so a seed gives the same weights as before."""
    agg = _weighting("pcgrad", seed=11)
    rng = np.random.default_rng(np.random.SeedSequence(11).entropy)
    for _ in range(4):
        expected = np.array([rng.permutation(n) for _ in range(n)])
        np.testing.assert_array_equal(agg._orders(n), expected)


@pytest.mark.parametrize(("name", "settings"), CASES)
def test_a_contiguous_view_inside_a_larger_buffer(name: str, settings: dict) -> None:
    """The address is that of the view's first entry (its storage offset included), and the
    entries around it are never read."""
    j = np.random.default_rng(2).normal(size=(3, 20))
    g = j @ j.T
    buf = torch.full((9 + 13,), np.nan, dtype=torch.float64)
    view = buf[7 : 7 + 9].view(3, 3)
    view.copy_(torch.from_numpy(g))
    assert view.is_contiguous() and view.storage_offset() == 7
    kw = _settings(name, settings, 3)
    expected = _weighting(name, **kw).weights(g.copy())
    np.testing.assert_array_equal(_weighting(name, **kw).weights(view).numpy(), expected)
