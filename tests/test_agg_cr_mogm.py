"""CR-MOGM against TorchJD's ``CRMOGMWeighting`` wrapping the same method (UPGrad, with TorchJD's
exact projector), over a sequence of Gramians.

Tolerance: the EMA is a convex combination of the inner weights of every step so far, so its
error is at most the largest inner error, ``qp_weight_tolerance(G)·max(1, max|w|)`` (UPGrad's
bound, as in ``test_agg_upgrad.py``), plus 2 roundings per step of the average (γ₂ₖ relative).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchjd.aggregation import CRMOGMWeighting

from mogradient.aggregators import gramian_of
from mogradient.aggregators.cr_mogm import CRMOGM
from tests.bounds import U64, gamma, qp_weight_tolerance


def _torchjd_upgrad():  # type: ignore[no-untyped-def]
    from torchjd._linalg._dual_cone import QuadprogProjector
    from torchjd.aggregation import UPGradWeighting

    return UPGradWeighting(projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0))


@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_torchjd(alpha: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ours = CRMOGM(inner="upgrad", alpha=alpha)
    reference = CRMOGMWeighting(_torchjd_upgrad(), alpha=alpha)
    worst = 0.0
    for k in range(1, 5):
        gram = gramian_of(torch.randn(3, 5, generator=gen, dtype=torch.float64))
        expected = reference(gram).numpy()
        got = ours.weights(gram.numpy())
        worst = max(worst, qp_weight_tolerance(gram.numpy()) * max(1.0, np.abs(expected).max()))
        tol = worst + gamma(2 * k, U64) * np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_first_call_is_the_inner_weights_and_reset_restarts() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    gram = gramian_of(jac).numpy()
    agg = CRMOGM(inner="mgda", alpha=0.9)
    from mogradient.aggregators.mgda import MGDA

    inner = MGDA().weights(gram)
    np.testing.assert_array_equal(agg.weights(gram), inner)
    other = gramian_of(jac[[1, 0, 2]] * torch.tensor([[1.0], [3.0], [1.0]])).numpy()
    agg.weights(other)
    agg.reset()
    np.testing.assert_array_equal(agg.weights(gram), inner)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"alpha must be a number in \[0, 1\]"),
        ({"inner": "nash-mtl"}, "must not depend on the Gramian's scale"),
        ({"inner": "epo"}, "must not depend on the Gramian's scale"),
        ({"inner": "mean"}, "wraps a Gramian weighting"),
        ({"inner": "nope"}, "unknown aggregator"),
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CRMOGM(**kwargs)  # type: ignore[arg-type]


def test_the_number_of_objectives_is_checked() -> None:
    agg = CRMOGM()
    agg.weights(np.eye(2))
    with pytest.raises(ValueError, match="call reset"):
        agg.weights(np.eye(3))
