"""Former import path of the input checks, now :mod:`mogradient.aggregation.inputs`;
re-exported so that existing imports (and references) keep working."""

from mogradient.aggregation.inputs import (
    check_gramian,
    check_jacobian,
    check_loss_values,
    check_losses,
)

__all__ = ["check_gramian", "check_jacobian", "check_loss_values", "check_losses"]
