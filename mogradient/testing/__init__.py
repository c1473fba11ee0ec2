"""Property testing for multi-objective aggregators: hypothesis strategies and property checks.

Test your own aggregator in your own pytest (see ``docs/testing.md``)::

    from hypothesis import given
    from mogradient.testing import check_claims, problems

    @given(problems())
    def test_my_aggregator(problem):
        check_claims(lambda: MyWeighting(alpha=0.5), problem.jacobians, problem.losses)

* Property checks (no extra dependency): :func:`check_claims` and one ``assert_*`` per
  :data:`~mogradient.aggregators.Property`, with :class:`Tolerance`.
* Strategies (need hypothesis, imported on first use): :func:`jacobians`, :func:`gramians`,
  :func:`loss_values`, :func:`problems`, :func:`scales`, :func:`dtypes` and the constructions
  :func:`conflicting_jacobians`, :func:`pareto_stationary_jacobians`,
  :func:`strongly_stationary_jacobians`, :func:`non_stationary_jacobians`.
* :func:`random_jacobian`: the same constructions from a seed, without hypothesis.

``import mogradient`` never imports this package, hypothesis or pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mogradient.testing._constructions import KINDS, Kind, Layout, random_jacobian
from mogradient.testing.claims import check_claims
from mogradient.testing.harness import (
    DEFAULT_TOLERANCE,
    PropertyViolation,
    Tolerance,
    assert_valid_output,
    direction_of,
    make_factory,
    weights_of,
)
from mogradient.testing.per_call import (
    assert_min_norm_kkt,
    assert_non_conflicting,
    assert_non_differentiable,
    assert_non_negative_weights,
    assert_simplex_weights,
)
from mogradient.testing.per_run import (
    assert_deterministic,
    assert_permutation_invariant,
    assert_reset_restores,
    assert_scale_equivariant,
)
from mogradient.testing.properties import CHECKS, PROPERTIES, TABLE, PropertyCheck

if TYPE_CHECKING:
    from mogradient.testing.strategies import (
        DTYPES,
        MAX_SCALE,
        MIN_SCALE,
        Problem,
        conflicting_jacobians,
        dtypes,
        gramians,
        jacobians,
        layouts,
        loss_values,
        non_stationary_jacobians,
        pareto_stationary_jacobians,
        problems,
        scales,
        strongly_stationary_jacobians,
    )


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        module = importlib.import_module("mogradient.testing.strategies")
        return getattr(module, name)
    raise AttributeError(f"module 'mogradient.testing' has no attribute {name!r}")


__all__ = [
    "CHECKS",
    "DEFAULT_TOLERANCE",
    "DTYPES",
    "KINDS",
    "MAX_SCALE",
    "MIN_SCALE",
    "PROPERTIES",
    "Kind",
    "Layout",
    "Problem",
    "PropertyCheck",
    "PropertyViolation",
    "TABLE",
    "Tolerance",
    "assert_deterministic",
    "assert_min_norm_kkt",
    "assert_non_conflicting",
    "assert_non_differentiable",
    "assert_non_negative_weights",
    "assert_permutation_invariant",
    "assert_reset_restores",
    "assert_scale_equivariant",
    "assert_simplex_weights",
    "assert_valid_output",
    "check_claims",
    "conflicting_jacobians",
    "direction_of",
    "dtypes",
    "gramians",
    "jacobians",
    "layouts",
    "loss_values",
    "make_factory",
    "non_stationary_jacobians",
    "pareto_stationary_jacobians",
    "problems",
    "random_jacobian",
    "scales",
    "strongly_stationary_jacobians",
    "weights_of",
]

#: Names served by :mod:`mogradient.testing.strategies`, imported (with hypothesis) on use:
#: those of ``__all__`` not bound above.
_STRATEGIES = frozenset(__all__).difference(globals())
