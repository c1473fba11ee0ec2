"""CAGrad (Liu et al., NeurIPS 2021): defects found by TorchJD's property suite, pinned first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mogradient import CAGrad

DEFECT = pytest.mark.xfail(strict=True, reason="defect of issue 11, item 5; fixed next commit")

#: The smallest case of the issue: g_w = 0 is optimal, and the answer is not the mean.
THREE = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.3, 1.0]], dtype=torch.float64)


def test_c_one_smallest_case_is_non_conflicting() -> None:
    """max_d min_i g_i·d over ‖d − g₀‖ ≤ ‖g₀‖: the optimum is 0, reached by every d = (0, y),
    0 ≤ y ≤ 2/3; the one nearest to g₀ = (0.1, 1/3) is (0, 1/3)."""
    d = CAGrad(c=1.0)(THREE)
    torch.testing.assert_close(d, torch.tensor([0.0, 1.0 / 3.0], dtype=torch.float64))
    assert float((THREE @ d).min()) >= -1e-15


def _perturbed(eps: float, sign: float, row: int, dtype: torch.dtype) -> torch.Tensor:
    jac = THREE.clone()
    jac[row] += sign * eps * torch.tensor([1.0, 0.7], dtype=torch.float64)
    return jac.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_near_degenerate_stays_in_the_ball(dtype: torch.dtype, c: float) -> None:
    """Just off the degenerate case (‖g_w‖ between 1e-14 and 1e-4 of the gradients) the
    direction stays in the ball ‖d − g₀‖ ≤ c‖g₀‖, and with c ≥ 1 it conflicts with nothing, to
    the Gramian's resolution: perturbations of 1e-6 make the dual cone a sliver whose weights
    reach 1e5, known to eps·1e11 from the Gramian. (With c = 1 and the sign that closes the
    cone to {0}, the optimum d = 0 lies on the sphere itself: there the ball holds to 1e-5.)"""
    rtol = 1e-9 if dtype == torch.float64 else 1e-6
    if c == 1.0:
        rtol = 1e-5
    for eps in np.logspace(-14, -3, 45):
        for sign in (1.0, -1.0):
            for row in range(3):
                jac = _perturbed(float(eps), sign, row, dtype)
                d = CAGrad(c=c)(jac).double()
                j64 = jac.double()
                g0 = j64.mean(0)
                radius = c * float(torch.linalg.norm(g0))
                assert float(torch.linalg.norm(d - g0)) <= radius * (1 + rtol), (eps, sign, row)
                if c >= 1.0:
                    assert float((j64 @ d).min()) >= -1e-5 * float(j64.abs().max()) ** 2


@pytest.mark.parametrize(
    ("c", "claimed"),
    [(0.0, False), (0.5, False), (1.0, True), (3.0, True)],
)
def test_claims_non_conflicting_from_c_one(c: float, claimed: bool) -> None:
    assert ("non_conflicting" in CAGrad(c=c).claims()) is claimed
