"""Input checks shared by the aggregators, the solvers and ``backward``.

Every check raises a ``ValueError`` (or ``TypeError`` for a wrong type) whose message names the
offending objective or entry and says how to fix it, so a bad step fails loudly and early instead
of writing NaN into the model.
"""

from __future__ import annotations

import numpy as np
import torch

from mogradient.solvers.validation import (
    GRAMIAN_TOL,
    NONFINITE,
    OK,
    CheckedGramian,
    gramian_status,
    precision_tolerance,
    status_message,
)

__all__ = [
    "GRAMIAN_TOL",
    "as_float64_matrix",
    "check_gramian",
    "check_jacobian",
    "check_loss_values",
    "check_losses",
]


def check_jacobian(jacobian: torch.Tensor) -> torch.Tensor:
    """Validate a Jacobian of shape ``[n_objectives, d]`` and return it."""
    if not isinstance(jacobian, torch.Tensor):
        raise TypeError(
            f"expected the Jacobian as a torch.Tensor of shape [n_objectives, d], "
            f"got {type(jacobian).__name__}; wrap it with torch.as_tensor(...)"
        )
    if jacobian.ndim != 2:
        raise ValueError(
            f"expected a Jacobian of shape [n_objectives, d], got shape {tuple(jacobian.shape)}; "
            "stack one flattened gradient per objective as a row"
        )
    if not jacobian.is_floating_point():
        raise TypeError(
            f"expected a floating-point Jacobian, got dtype {jacobian.dtype}; "
            "convert it with .float() or .double()"
        )
    if jacobian.shape[0] == 0:
        raise ValueError("the Jacobian has zero objectives (zero rows); pass at least one")
    _check_finite_rows(jacobian, "gradient")
    return jacobian


def check_losses(losses: torch.Tensor) -> torch.Tensor:
    """Validate a vector of per-objective losses and return it."""
    if losses.ndim != 1:
        raise ValueError(
            f"expected one scalar loss per objective, got a tensor of shape {tuple(losses.shape)}; "
            "reduce each loss to a scalar (for example with .mean()) before aggregating"
        )
    if losses.shape[0] == 0:
        raise ValueError("got zero losses; pass at least one objective")
    bad = ~torch.isfinite(losses.detach())
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"loss of objective {i} is not finite ({float(losses[i])}); check that objective's "
            "inputs and learning rate, or skip this batch"
        )
    return losses


def check_loss_values(losses: np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate the loss values ``[n_objectives]`` a loss weighting decides from; return them
    as a float64 numpy vector."""
    if isinstance(losses, torch.Tensor):
        losses = losses.detach().to("cpu", torch.float64).numpy()
    if not isinstance(losses, np.ndarray):
        raise TypeError(
            f"expected the loss values as a numpy array or torch tensor, got "
            f"{type(losses).__name__}"
        )
    if losses.ndim != 1 or losses.shape[0] == 0:
        raise ValueError(
            f"expected one loss value per objective (a non-empty 1-D array), got shape "
            f"{losses.shape}; stack the per-objective scalar losses"
        )
    values = np.asarray(losses, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"the loss value of objective {i} is not finite ({values[i]}); check that "
            "objective's inputs and learning rate, or skip this batch"
        )
    return values


def _check_finite_rows(matrix: torch.Tensor, what: str) -> None:
    finite = torch.isfinite(matrix).all(dim=1)
    if not bool(finite.all()):
        i = int(torch.nonzero(~finite)[0])
        raise ValueError(
            f"the {what} of objective {i} contains NaN or Inf; check that objective's loss "
            "(a log of 0, a division by 0, an exploding learning rate) or skip this batch"
        )


def check_gramian(
    gramian: np.ndarray | torch.Tensor, *, tol: float | None = None
) -> CheckedGramian:
    """Validate a Gramian and return it as a C-contiguous float64 numpy array.

    Checks shape (square, at least 1x1), finiteness (naming the objective), symmetry and
    positive semi-definiteness, in one compiled pass
    (:func:`mogradient.solvers.validation.gramian_status`: a full PSD test up to 16 objectives,
    2×2 minors above, where the solves report the negative curvature they meet). ``tol`` is
    relative to the largest diagonal entry; by default it follows the precision the Gramian
    arrived in: ``1e-8`` for float64, ``8·n·eps`` for float32 and lower (a float32 ``J Jᵀ`` of
    a rank-deficient Jacobian is PSD only to its rounding).
    The result is a :class:`~mogradient.solvers.validation.CheckedGramian` (an ndarray)
    carrying that tolerance, so the solvers do not validate it again.
    """
    eps: float | None = None
    if type(gramian) is np.ndarray:
        g = gramian
    elif isinstance(gramian, torch.Tensor):
        tdtype = gramian.dtype
        if tdtype is not torch.float64:
            if tdtype.is_floating_point:
                eps = torch.finfo(tdtype).eps
            elif tdtype.is_complex or tdtype == torch.bool:
                raise TypeError(f"expected a real-valued Gramian, got dtype {tdtype}")
        t = gramian.detach() if gramian.requires_grad else gramian
        if tdtype is not torch.float64 or not t.is_cpu:  # is_cpu: no torch.device object
            t = t.to("cpu", torch.float64)
        g = t.numpy()
    elif isinstance(gramian, np.ndarray):
        g = np.asarray(gramian)
    else:
        raise TypeError(
            f"expected the Gramian as a numpy array or torch tensor, got {type(gramian).__name__}"
        )
    if g.ndim != 2:
        raise ValueError(f"expected a 2-D Gramian, got shape {g.shape}")
    n = g.shape[0]
    if g.shape[1] != n:
        raise ValueError(
            f"expected a square Gramian of shape [n_objectives, n_objectives], got {g.shape}; "
            "form it as J @ J.T from a Jacobian of shape [n_objectives, d]"
        )
    if n == 0:
        raise ValueError("the Gramian has zero objectives; pass at least one")
    dtype = g.dtype
    if dtype is not _FLOAT64 or not g.flags["C_CONTIGUOUS"]:
        kind = dtype.kind
        if kind == "f":
            eps = _eps(dtype)
        elif kind not in "iu":
            raise TypeError(f"expected a real-valued Gramian, got dtype {dtype}")
        g = np.ascontiguousarray(g, dtype=np.float64)
    if tol is None:
        tol = GRAMIAN_TOL if eps is None else precision_tolerance(eps, n)
    status, i, j = gramian_status(g, tol)
    if status == NONFINITE and np.isinf(g[i, j]):
        raise ValueError(
            f"the Gramian has an infinite entry in row {i} (objective {i}), G[{i}, {j}] = "
            f"{g[i, j]}: that objective's "
            "gradient is not finite, or its products overflowed float64 (gradient norms above "
            "about 1e154 have no float64 Gramian); check that objective's loss, or call the "
            "aggregator on the Jacobian (agg(J) rescales it), or scale the losses down by a "
            "power of two"
        )
    if status != OK:
        raise ValueError(status_message(status, i, j, g))
    out = g.view(CheckedGramian)
    out.tol = tol
    return out


_FLOAT64 = np.dtype(np.float64)
_EPS: dict[np.dtype, float] = {}


def _eps(dtype: np.dtype) -> float:
    value = _EPS.get(dtype)
    if value is None:
        value = _EPS[dtype] = float(np.finfo(dtype).eps)
    return value


def as_float64_matrix(x: object, what: str) -> np.ndarray:
    """Convert a numpy array or torch tensor to a C-contiguous 2-D float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"expected the {what} as a numpy array or torch tensor, got {type(x).__name__}"
        )
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D {what}, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"expected a real-valued {what}, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float64)
