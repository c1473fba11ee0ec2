"""The four kinds as types: the dispatcher, the preference vector, loss-value validation,
and the package's import hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import mogradient
from mogradient import (
    AdvantageCombiner,
    GramianWeighting,
    JacobianWeighting,
    LossWeighting,
    Preference,
    dispatch,
)


def _kind(name: str) -> str:
    return dispatch(
        mogradient.get_aggregator(name),
        gramian=lambda a: "gramian",
        losses=lambda a: "losses",
        advantages=lambda a: "advantages",
        jacobian=lambda a: "jacobian",
    )


def test_dispatch_calls_the_handler_of_the_kind() -> None:
    assert _kind("mgda") == "gramian"
    assert _kind("linear") == "losses"
    assert _kind("pama") == "advantages"
    assert _kind("excess-mtl") == "jacobian"


def test_dispatch_without_a_jacobian_handler_refuses_a_jacobian_weighting() -> None:
    with pytest.raises(ValueError, match="k×d Jacobian over the parameters"):
        dispatch(mogradient.get_aggregator("moco"), gramian=print, losses=print, advantages=print)


def test_every_registered_method_is_exactly_one_kind() -> None:
    kinds = (GramianWeighting, LossWeighting, AdvantageCombiner, JacobianWeighting)
    for name, cls in mogradient.registered().items():
        assert sum(issubclass(cls, k) for k in kinds) == 1, name


def test_dispatch_refuses_an_aggregator_of_no_kind() -> None:
    class Homemade(mogradient.Aggregator):
        def __call__(self, jacobian, losses=None):
            return jacobian.sum(0)

    with pytest.raises(TypeError, match="subclass one of the four kinds"):
        dispatch(Homemade(), gramian=print, losses=print, advantages=print)


def test_preference_is_validated_and_normalised() -> None:
    np.testing.assert_allclose(Preference([2, 1, 1]).resolve(3), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(Preference(None).resolve(4), [0.25] * 4)
    assert repr(Preference([1, 1])) == "[0.5, 0.5]"
    with pytest.raises(ValueError, match="one entry per objective"):
        Preference([1, 1]).resolve(3)
    with pytest.raises(ValueError, match="non-negative"):
        Preference([1, -1])
    with pytest.raises(ValueError, match="strictly positive"):
        Preference([1, 0], strictly_positive=True)
    with pytest.raises(TypeError, match="sequence"):
        Preference(0.5)  # type: ignore[arg-type]


def test_loss_weightings_check_their_loss_values() -> None:
    lin = mogradient.get_aggregator("linear")
    with pytest.raises(ValueError, match="objective 1 is not finite"):
        lin.weights(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="one loss value per objective"):
        lin(torch.ones(2, 3), losses=torch.ones(3))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        lin.weights(np.ones((2, 2)))


def test_scalarize_has_the_gradient_of_the_weighted_sum() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = torch.stack([x[0] ** 2, 3 * x[1]])
    mogradient.get_aggregator("linear", preference=[3, 1]).scalarize(losses).backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.75 * 2.0, 0.25 * 3.0]))


@pytest.mark.parametrize("name", ["mgda", "linear", "pama", "excess-mtl"])
def test_directions_carry_no_graph(name: str) -> None:
    jac = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert not mogradient.get_aggregator(name)(jac).requires_grad


def test_importing_the_core_does_not_import_transformers_or_testing_tools() -> None:
    code = (
        "import sys, mogradient; "
        "bad = [m for m in ('transformers', 'accelerate', 'hypothesis', 'pytest') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jacobian_weightings_check_their_loss_values() -> None:
    with pytest.raises(ValueError, match="one loss value per objective"):
        mogradient.get_aggregator("moco")(torch.ones(2, 3), losses=torch.ones(3))
    with pytest.raises(ValueError, match="objective 1 is not finite"):
        mogradient.get_aggregator("excess-mtl")(torch.ones(2, 3), torch.tensor([1.0, np.inf]))
    with pytest.raises(ValueError, match="agg\\(jacobian, losses=...\\)"):
        mogradient.get_aggregator("db-mtl")(torch.ones(2, 3))


def test_weight_claims_on_a_jacobian_weighting_are_refused_by_the_checks() -> None:
    from mogradient.testing import check_claims

    with pytest.raises(TypeError, match="a Jacobian weighting gives only its direction"):
        check_claims(
            mogradient.get_aggregator("excess-mtl"), torch.eye(2), claims={"simplex_weights"}
        )
