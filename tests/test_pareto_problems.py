"""Test problems: values and fronts against pymoo, exact fronts, gradients, input checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pymoo.problems import get_problem as pymoo_problem

from mogradient.pareto import hypervolume, igd, is_non_dominated, simplex_lattice
from mogradient.pareto.problems import (
    DTLZ2,
    VLMOP1,
    VLMOP2,
    ZDT1,
    ZDT2,
    ZDT3,
    CAGradToy,
    FonsecaFleming,
    Problem,
    available_problems,
    get_problem,
)
from mogradient.pareto.problems.zdt3 import FRONT_REGIONS

PROBLEMS = {
    "zdt1": ZDT1(),
    "zdt2": ZDT2(),
    "zdt3": ZDT3(),
    "dtlz2-2obj": DTLZ2(n_obj=2),
    "dtlz2-3obj": DTLZ2(n_obj=3),
    "fonseca_fleming": FonsecaFleming(),
    "fonseca_fleming-5var": FonsecaFleming(n_var=5),
    "cagrad_toy": CAGradToy(),
    "cagrad_toy-scaled": CAGradToy(f1_scale=0.1),
    "vlmop1": VLMOP1(),
    "vlmop2": VLMOP2(),
    "vlmop2-3var": VLMOP2(n_var=3),
}
ALL = pytest.mark.parametrize("problem", PROBLEMS.values(), ids=PROBLEMS.keys())


def uniform_in_box(problem: Problem, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n, problem.n_var, generator=generator, dtype=torch.float64)
    return problem.lower + u * (problem.upper - problem.lower)


@ALL
def test_front_is_non_dominated_and_is_the_image_of_the_pareto_set(problem: Problem) -> None:
    front = problem.pareto_front(200)
    assert front.shape[1] == problem.n_obj and len(front) >= 200
    assert is_non_dominated(front).all()
    pareto_set = problem.pareto_set(200)
    assert pareto_set.shape == (len(front), problem.n_var)
    assert ((pareto_set >= problem.lower) & (pareto_set <= problem.upper)).all()
    np.testing.assert_allclose(problem.evaluate(pareto_set).numpy(), front, atol=1e-12)


@ALL
def test_no_random_point_dominates_the_front(problem: Problem) -> None:
    samples = problem.evaluate(uniform_in_box(problem, 20_000)).numpy() + 1e-9
    front = problem.pareto_front(100)
    mask = is_non_dominated(np.concatenate([front, samples]))
    assert mask[: len(front)].all()


@ALL
def test_gradients_match_finite_differences(problem: Problem) -> None:
    x = uniform_in_box(problem, 4, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(problem.evaluate, (x,), eps=1e-6, atol=1e-5)


@ALL
def test_evaluate_is_batched_and_keeps_the_dtype(problem: Problem) -> None:
    x = uniform_in_box(problem, 5)
    batched = problem.evaluate(x)
    one_by_one = torch.cat([problem.evaluate(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, one_by_one)
    assert problem.evaluate(x.float()).dtype == torch.float32


@pytest.mark.parametrize(
    ("ours", "name", "kwargs"),
    [
        (ZDT1(n_var=30), "zdt1", {"n_var": 30}),
        (ZDT2(n_var=10), "zdt2", {"n_var": 10}),
        (ZDT3(n_var=30), "zdt3", {"n_var": 30}),
        (DTLZ2(n_obj=2), "dtlz2", {"n_var": 11, "n_obj": 2}),
        (DTLZ2(n_obj=3), "dtlz2", {"n_var": 12, "n_obj": 3}),
    ],
)
def test_values_and_fronts_match_pymoo(ours: Problem, name: str, kwargs: dict) -> None:
    reference = pymoo_problem(name, **kwargs)
    x = uniform_in_box(ours, 500, seed=2)
    x[:10, 0] = 0.0  # the boundary where ZDT's sqrt has an infinite slope
    np.testing.assert_allclose(ours.evaluate(x).numpy(), reference.evaluate(x.numpy()), atol=1e-12)
    if name == "zdt3":  # pymoo spreads n/5 points per piece, we spread evenly along all pieces
        mine, theirs = ours.pareto_front(5000), reference.pareto_front(5000)
        assert igd(mine, theirs) < 1e-3 and igd(theirs, mine) < 1e-3
    else:
        theirs = reference.pareto_front()
        mine = ours.pareto_front(len(theirs))
        np.testing.assert_allclose(
            mine[np.lexsort(mine.T)], theirs[np.lexsort(theirs.T)], atol=1e-12
        )


def test_zdt3_front_regions_are_the_non_dominated_parts_of_the_curve() -> None:
    f1 = np.linspace(0.0, 1.0, 1_000_001)
    curve = np.stack([f1, 1.0 - np.sqrt(f1) - f1 * np.sin(10 * math.pi * f1)], axis=1)
    kept = f1[is_non_dominated(curve)]
    in_region = np.zeros_like(kept, dtype=bool)
    for a, b in FRONT_REGIONS:
        in_region |= (kept >= a - 2e-6) & (kept <= b + 2e-6)
        inside = kept[(kept >= a) & (kept <= b)]
        assert inside.min() - a < 2e-6 and b - inside.max() < 2e-6  # each region is covered
    assert in_region.all()


def test_fonseca_fleming_values() -> None:
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]], dtype=torch.float64)
    s = 1 / math.sqrt(3)
    expected = [
        [1 - math.exp(-3 * s**2), 1 - math.exp(-3 * s**2)],
        [
            1 - math.exp(-((1 - s) ** 2 + (-1 - s) ** 2 + (2 - s) ** 2)),
            1 - math.exp(-((1 + s) ** 2 + (-1 + s) ** 2 + (2 + s) ** 2)),
        ],
    ]
    np.testing.assert_allclose(FonsecaFleming().evaluate(x).numpy(), expected, rtol=1e-14)


def cagrad_toy_reference(x1: float, x2: float) -> tuple[float, float]:
    """The toy of CAGrad's ``toy.py`` for one point, in plain Python."""
    f1 = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), 5e-6)) + 6
    f2 = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), 5e-6)) + 6
    c1 = max(math.tanh(x2 * 0.5), 0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c2 = max(math.tanh(-x2 * 0.5), 0)
    return f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2


def test_cagrad_toy_values_match_the_papers_code() -> None:
    starts = [(-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -5.0), (9.0, -1.0), (-3.0, 1.0)]
    got = CAGradToy().evaluate(torch.tensor(starts, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, [cagrad_toy_reference(*p) for p in starts], rtol=1e-14)


def test_cagrad_toy_front_beats_a_dense_grid() -> None:
    problem = CAGradToy()
    g = torch.linspace(-10.0, 10.0, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    grid_values = problem.evaluate(grid).numpy()
    front = problem.pareto_front(20_000)
    mask = is_non_dominated(np.concatenate([front, grid_values + 1e-9]))
    assert mask[: len(front)].all()
    ref = front.max(axis=0) + 1.0  # a dense front: its staircase loses less than the grid's
    assert hypervolume(front, ref) >= hypervolume(grid_values, ref)


def test_zdt_gradient_is_finite_on_the_boundary_x1_equal_0() -> None:
    x = torch.zeros(3, 30, dtype=torch.float64, requires_grad=True)
    ZDT1().evaluate(x)[:, 1].sum().backward()
    assert torch.isfinite(x.grad).all()


def test_registry_and_input_checks() -> None:
    assert available_problems() == [
        "cagrad_toy",
        "dtlz2",
        "fonseca_fleming",
        "vlmop1",
        "vlmop2",
        "zdt1",
        "zdt2",
        "zdt3",
    ]
    assert isinstance(get_problem("DTLZ2", n_obj=2), DTLZ2)
    assert get_problem("fonseca-fleming").n_var == 3
    with pytest.raises(ValueError, match="valid names"):
        get_problem("zdt7")
    with pytest.raises(ValueError, match=r"shape \[n_points, 30\]"):
        ZDT1().evaluate(torch.zeros(4, 29))
    with pytest.raises(TypeError, match="floating-point"):
        ZDT1().evaluate(torch.zeros(4, 30, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        ZDT1().pareto_front(1)
    with pytest.raises(ValueError, match="n_var"):
        DTLZ2(n_obj=3, n_var=2)


def test_project_clips_into_the_box() -> None:
    problem = FonsecaFleming()
    lower, upper = problem.bounds
    assert lower.tolist() == [-4.0] * 3 and upper.tolist() == [4.0] * 3
    x = torch.tensor([[-5.0, 0.0, 5.0]])
    torch.testing.assert_close(problem.project(x), torch.tensor([[-4.0, 0.0, 4.0]]))


def test_simplex_lattice_counts_and_rejects_one_objective() -> None:
    assert simplex_lattice(2, 5).tolist() == [
        [0, 1],
        [0.25, 0.75],
        [0.5, 0.5],
        [0.75, 0.25],
        [1, 0],
    ]
    w = simplex_lattice(3, 10)  # p = 3: C(5, 2) = 10 vectors
    assert w.shape == (10, 3) and np.allclose(w.sum(axis=1), 1) and len(np.unique(w, axis=0)) == 10
    with pytest.raises(ValueError, match="n_obj >= 2"):
        simplex_lattice(1, 3)


LIBMOON_VLMOP = Path(__file__).parent / "data" / "libmoon_vlmop.json"


def test_vlmop_values_match_the_formulas_written_out() -> None:
    """VLMOP1 is Fonseca & Fleming's two-Gaussian pair (Van Veldhuizen & Lamont's MOP2),
    VLMOP2 the pair of quadratics ``|x ∓ a|^2 / 4``; written out here term by term in plain
    floats (rounding of a 10-term sum: relative error far below 1e-13)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(5, 10))
    s = 1 / math.sqrt(10)
    for row, f1, f2 in zip(x, *VLMOP1().evaluate(torch.as_tensor(x)).numpy().T, strict=True):
        d1 = sum((v - s) ** 2 for v in row)
        d2 = sum((v + s) ** 2 for v in row)
        assert f1 == pytest.approx(1 - math.exp(-d1), rel=1e-13)
        assert f2 == pytest.approx(1 - math.exp(-d2), rel=1e-13)
    for row, f1, f2 in zip(x, *VLMOP2().evaluate(torch.as_tensor(x)).numpy().T, strict=True):
        assert f1 == pytest.approx(sum((v - s) ** 2 for v in row) / 4, rel=1e-13)
        assert f2 == pytest.approx(sum((v + s) ** 2 for v in row) / 4, rel=1e-13)
    assert VLMOP1().bounds[0].tolist() == [-1.0] * 10 and VLMOP2().bounds[1].tolist() == [1.0] * 10
    front = VLMOP2().pareto_front(50)  # sqrt(f1) + sqrt(f2) = 1: a convex front
    np.testing.assert_allclose(np.sqrt(front).sum(axis=1), 1.0, rtol=1e-14)


def test_vlmop_values_match_libmoon_on_the_same_points() -> None:
    """LibMOON 0.2.1's own VLMOP1/VLMOP2 classes evaluated these points in float64 (written by
    ``python -m benchmarks.libmoon_side --dump-vlmop tests/data/libmoon_vlmop.json`` with
    LibMOON's interpreter); same formulas,
    so equal up to the summation order (relative 1e-13)."""
    data = json.loads(LIBMOON_VLMOP.read_text())
    x = torch.tensor(data["x"], dtype=torch.float64)
    for problem in (VLMOP1(), VLMOP2()):
        theirs = data[type(problem).__name__]
        assert theirs["n_var"] == problem.n_var
        assert theirs["lbound"] == problem.lower.tolist()
        assert theirs["ubound"] == problem.upper.tolist()
        np.testing.assert_allclose(problem.evaluate(x).numpy(), theirs["F"], rtol=1e-13, atol=0)


def test_vlmop_values_match_libmoon_live() -> None:
    """The same comparison against an installed LibMOON (its environment only)."""
    vlmop = pytest.importorskip("libmoon.problem.synthetic.vlmop")
    x = uniform_in_box(VLMOP1(), 50, seed=5)
    for ours, theirs in ((VLMOP1(), vlmop.VLMOP1()), (VLMOP2(), vlmop.VLMOP2())):
        np.testing.assert_allclose(
            ours.evaluate(x).numpy(), theirs.evaluate(x).numpy(), rtol=1e-13, atol=0
        )
