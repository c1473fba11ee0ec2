"""Pareto metrics: exact values on known sets, agreement with pymoo, orientation, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pymoo.indicators.hv import HV
from pymoo.indicators.igd import IGD
from pymoo.indicators.igd_plus import IGDPlus
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from mogradient.pareto import hypervolume, igd, igd_plus, is_non_dominated, non_dominated, spacing


def brute_force_non_dominated(F: np.ndarray) -> np.ndarray:
    """Mask of rows no other row dominates, by comparing every pair."""
    no_worse = (F[:, None, :] <= F[None, :, :]).all(axis=2)
    better = (F[:, None, :] < F[None, :, :]).any(axis=2)
    dominates = no_worse & better  # dominates[i, j]: row i dominates row j
    return ~dominates.any(axis=0)


def staircase_hypervolume_2d(F: np.ndarray, ref: np.ndarray) -> float:
    """Exact 2-D hypervolume by sweeping the points in increasing f1."""
    F = F[(F < ref).all(axis=1)]
    volume, best_f2 = 0.0, ref[1]
    for f1, f2 in sorted(map(tuple, F)):
        if f2 < best_f2:
            volume += (ref[0] - f1) * (best_f2 - f2)
            best_f2 = f2
    return volume


# --- hypervolume -----------------------------------------------------------------------------


def test_hypervolume_of_unit_square_corners() -> None:
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert hypervolume(corners, [2.0, 2.0]) == 4.0
    assert hypervolume(corners[1:3], [2.0, 2.0]) == 3.0
    assert hypervolume([[0.0, 0.0, 0.0]], [1.0, 1.0, 1.0]) == 1.0
    assert hypervolume([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [2.0, 2.0, 1.0]) == 3.0


@pytest.mark.parametrize("n", [2, 3, 11, 101])
def test_hypervolume_of_points_on_a_line_front(n: int) -> None:
    t = np.linspace(0.0, 1.0, n)
    front = np.stack([t, 1.0 - t], axis=1)  # on f1 + f2 = 1
    # staircase under the line: sum_i h * t_i with h = 1/(n-1) = (n-2) / (2 (n-1))
    assert hypervolume(front, [1.0, 1.0]) == pytest.approx((n - 2) / (2 * (n - 1)), abs=1e-15)


def test_hypervolume_is_zero_when_no_point_dominates_the_reference() -> None:
    F = np.array([[2.0, 0.5], [0.5, 2.0], [1.0, 0.2]])
    assert hypervolume(F, [1.0, 1.0]) == 0.0
    assert hypervolume(np.empty((0, 2)), [1.0, 1.0]) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(2, 4)), elements=st.floats(0, 1))
)
def test_hypervolume_equals_pymoo_on_random_sets(F: np.ndarray) -> None:
    ref = np.full(F.shape[1], 1.1)
    assert hypervolume(F, ref) == pytest.approx(HV(ref_point=ref)(F), rel=1e-12, abs=1e-15)
    if F.shape[1] == 2:
        expected = staircase_hypervolume_2d(F, ref)
        assert hypervolume(F, ref) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_hypervolume_of_maximised_objectives_negates_points_and_reference() -> None:
    rewards = np.random.default_rng(0).uniform(0, 1, size=(30, 3))
    expected = hypervolume(-rewards, [0.0, 0.0, 0.0])
    assert expected > 0
    assert hypervolume(rewards, [0.0, 0.0, 0.0], maximize=True) == expected
    mixed = rewards * np.array([1.0, -1.0, 1.0])
    flags = [True, False, True]
    assert hypervolume(mixed, [0.0, 0.0, 0.0], maximize=flags) == pytest.approx(expected)


def test_metrics_accept_torch_tensors() -> None:
    F = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert hypervolume(F, torch.tensor([2.0, 2.0])) == 3.0
    assert igd(F, F) == 0.0


# --- non-dominated filter ------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 50), st.integers(1, 4)),
        elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),  # small grid: many ties
    )
)
def test_non_dominated_agrees_with_pymoo_sorting(F: np.ndarray) -> None:
    first_front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    mask = is_non_dominated(F)
    assert sorted(np.flatnonzero(mask)) == sorted(first_front.tolist())
    np.testing.assert_array_equal(mask, brute_force_non_dominated(F))
    np.testing.assert_array_equal(non_dominated(F), F[mask])


def test_non_dominated_keeps_duplicates_and_respects_maximize() -> None:
    F = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(is_non_dominated(F), [True, True, True, False])
    np.testing.assert_array_equal(is_non_dominated(F, maximize=True), [False, False, False, True])
    assert non_dominated(np.empty((0, 3))).shape == (0, 3)


# --- distances and spacing ---------------------------------------------------------------------


def test_igd_and_igd_plus_known_values() -> None:
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert igd([[0.0, 1.0]], front) == pytest.approx(math.sqrt(2) / 2)
    assert igd([[0.5, 0.5]], front) == pytest.approx(math.sqrt(0.5))
    assert igd_plus([[0.5, 0.5]], front) == pytest.approx(0.5)
    # a point better than the front is not penalised by IGD+, but is by IGD
    assert igd_plus([[0.0, 0.0]], front) == 0.0
    assert igd([[0.0, 0.0]], front) == pytest.approx(1.0)
    assert igd(-front, -front, maximize=True) == 0.0


def test_igd_and_igd_plus_equal_pymoo_on_random_sets() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = int(rng.integers(2, 5))
        F, front = rng.uniform(size=(25, m)), rng.uniform(size=(60, m))
        assert igd(F, front) == pytest.approx(IGD(front)(F), rel=1e-12)
        assert igd_plus(F, front) == pytest.approx(IGDPlus(front)(F), rel=1e-12)


def test_spacing_is_zero_for_evenly_spaced_points_and_positive_otherwise() -> None:
    t = np.linspace(0.0, 1.0, 11)
    assert spacing(np.stack([t, 1.0 - t], axis=1)) == pytest.approx(0.0, abs=1e-12)
    uneven = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0]])
    d = np.array([0.2, 0.2, 1.8])  # L1 distance from each point to its nearest neighbour
    assert spacing(uneven) == pytest.approx(math.sqrt(np.mean((d - d.mean()) ** 2)))


# --- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_rejected_with_their_index(bad: float) -> None:
    F = np.array([[0.0, 1.0], [0.5, bad], [1.0, 0.0]])
    for call in (
        lambda: hypervolume(F, [2.0, 2.0]),
        lambda: igd(F, [[0.0, 0.0]]),
        lambda: igd([[0.0, 0.0]], F),
        lambda: non_dominated(F),
        lambda: spacing(F),
    ):
        with pytest.raises(ValueError, match="row 1"):
            call()


def test_wrong_dimensions_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\[n_points, n_objectives\]"):
        hypervolume(np.array([0.0, 1.0]), [2.0, 2.0])
    with pytest.raises(ValueError, match=r"\[n_points, n_objectives\]"):
        non_dominated(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="zero objectives"):
        non_dominated(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="ref_point must have shape"):
        hypervolume(np.zeros((3, 2)), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="ref_point contains NaN"):
        hypervolume(np.zeros((3, 2)), [1.0, np.nan])
    with pytest.raises(ValueError, match="same objectives"):
        igd(np.zeros((3, 2)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        hypervolume(np.array([["a", "b"]]), [1.0, 1.0])
    with pytest.raises(ValueError, match="maximize"):
        hypervolume(np.zeros((3, 2)), [1.0, 1.0], maximize=[True])


def test_empty_sets_are_rejected_where_the_metric_is_undefined() -> None:
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="F is empty"):
        igd(np.empty((0, 2)), front)
    with pytest.raises(ValueError, match="front is empty"):
        igd_plus(front, np.empty((0, 2)))
    with pytest.raises(ValueError, match="at least 2 points"):
        spacing(front[:1])
