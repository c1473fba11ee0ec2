"""Independent references that may fail: a failure discards the example, never counts as ours.

HiGHS can end with "model status unknown" on a degenerate LP, SLSQP can stop early or on an
infeasible point, NNLS can run out of iterations, quadprog can call a PSD-to-rounding problem
inconsistent, cvxpy's solvers can raise or end inaccurate. Where that happens the reference
says nothing about our answer: the example is discarded (``hypothesis.assume`` inside a
property test, ``pytest.skip`` in a parametrised one), after a retry with another algorithm
where one exists.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import pytest
from hypothesis import assume
from hypothesis.control import currently_in_test_context
from scipy.optimize import OptimizeResult, linprog, nnls


def discard(reason: str) -> NoReturn:
    """Drop this example: the reference failed, which says nothing about our answer."""
    if currently_in_test_context():
        assume(False)
    pytest.skip(f"reference failed: {reason}")
    raise AssertionError("unreachable")  # pragma: no cover


def linprog_settled(*args: Any, **kwargs: Any) -> OptimizeResult:
    """``scipy.optimize.linprog`` by HiGHS (its default choice, then dual simplex, then interior
    point) until one reports optimal (status 0) or infeasible (2); otherwise discard."""
    res = None
    for method in ("highs", "highs-ds", "highs-ipm"):
        res = linprog(*args, method=method, **kwargs)
        if res.status in (0, 2):
            return res
    discard(f"HiGHS status {res.status if res is not None else '?'}")


def nnls_settled(a: np.ndarray, b: np.ndarray, maxiter: int) -> np.ndarray:
    """``scipy.optimize.nnls``'s solution, or discard where it runs out of iterations."""
    try:
        x, _ = nnls(a, b, maxiter=maxiter)
    except RuntimeError as error:  # "Maximum number of iterations reached."
        discard(f"NNLS: {error}")
    return x


def slsqp_settled(res: OptimizeResult) -> OptimizeResult:
    """An SLSQP result that reports success, or discard (it can stop early or infeasible)."""
    if not res.success:
        discard(f"SLSQP: {res.message}")
    return res


def reference_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a reference (TorchJD, quadprog, cvxpy) that signals failure by raising or by
    non-finite output; discard the example where it does."""
    try:
        out = fn(*args, **kwargs)
    except Exception as error:
        # quadprog: ValueError "constraints are inconsistent"; cvxpy: SolverError
        if not isinstance(error, (ValueError, RuntimeError, ArithmeticError)) and (
            type(error).__name__ != "SolverError"
        ):
            raise
        discard(f"{getattr(fn, '__name__', fn)!s}: {error}")
    first = out[0] if isinstance(out, tuple) else out  # quadprog: (x, value, ...)
    values = first.detach().cpu().numpy() if hasattr(first, "detach") else np.asarray(first)
    if not np.all(np.isfinite(values)):
        discard(f"{getattr(fn, '__name__', fn)!s} returned non-finite values")
    return out
