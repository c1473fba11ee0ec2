"""Validate and solve in one compiled call: the fast path of a Gramian method's ``weights()``.

A method's public ``weights()`` on a float64 CPU Gramian is called once per training step, after
a forward and a backward have evicted its code from the caches, so each Python-level step of
the general path (``check_gramian``, the power-of-two window, the solver's wrapper, the
conversions) costs several µs. The kernels here run the same validation as
:func:`~mogradient.solvers.validation.gramian_status` at :data:`GRAMIAN_TOL`, check that the
largest diagonal entry lies inside the window the general path leaves unscaled
(:data:`~mogradient.aggregation._scale.GRAMIAN_WINDOW`), then run the method's solver on the
Gramian as it is: the weights are those of the general path, bit for bit. Anything else (a
failed check, a Gramian to rescale, a solver status) comes back as a status other than ``OK``
and the caller falls back to the general path, which raises the same error as before.

The ``*_into`` entry points take the Gramian and the output by address (a torch tensor's
``data_ptr()``) and write the weights into the output: converting the tensor with
``Tensor.numpy()``, unboxing the array in the compiled call and wrapping the result with
``torch.from_numpy`` cost more than the solve itself at a few objectives. The caller keeps both
tensors alive during the call and guarantees a C-contiguous float64 ``n × n`` Gramian and an
``n``-entry float64 output.
"""

from __future__ import annotations

import math

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from mogradient.solvers.aligned_mtl import _aligned_mtl_kernel
from mogradient.solvers.bitgen import permuted_rows
from mogradient.solvers.dual_cone import _dualproj_kernel, _upgrad_kernel
from mogradient.solvers.gradvac import _gradvac_kernel
from mogradient.solvers.imtl_g import _imtl_g_kernel
from mogradient.solvers.min_norm import _min_norm_kernel
from mogradient.solvers.pcgrad import _pcgrad_kernel
from mogradient.solvers.validation import GRAMIAN_TOL, OK, gramian_status

#: Status of :func:`checked_status`: the Gramian is valid as far as this pass knows, but its
#: largest diagonal entry lies outside the window (the general path rescales it first).
RESCALE = -1
#: Largest diagonal entry left unscaled: 2^±256, as ``GRAMIAN_WINDOW`` in
#: :mod:`mogradient.aggregation._scale` (a test checks that the two agree).
WINDOW = 256


@intrinsic
def _float64_pointer(typingctx, address):  # type: ignore[no-untyped-def]
    """``(double *) address`` (an address from ``Tensor.data_ptr()``)."""
    sig = types.CPointer(types.float64)(types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(cache=True)
def square_at(address: int, n: int) -> np.ndarray:
    """The C-contiguous float64 ``n × n`` matrix at ``address``, as an array (no copy)."""
    return carray(_float64_pointer(address), (n, n))  # type: ignore[call-arg]


@njit(cache=True)
def _write(w: np.ndarray, status: int, out: int) -> bool:
    """Copy ``w`` to the float64 entries at ``out`` when ``status`` is ``OK``."""
    if status != OK:
        return False
    dest = carray(_float64_pointer(out), (w.shape[0],))  # type: ignore[call-arg]
    for i in range(w.shape[0]):
        dest[i] = w[i]
    return True


@njit(cache=True)
def outside_window(g: np.ndarray) -> bool:
    """Whether the largest diagonal entry is finite, positive and outside [2^-256, 2^256)
    (``even_exponent_into_range(max diag, 256) != 0``; NaN entries are ignored here and
    caught by the validation)."""
    top = 0.0
    for i in range(g.shape[0]):
        if g[i, i] > top:
            top = g[i, i]
    if not (top > 0.0 and top < np.inf):
        return False
    ex = math.frexp(top)[1]
    return not (-WINDOW < ex <= WINDOW)


@njit(cache=True)
def checked_status(g: np.ndarray) -> int:
    """``OK`` when a square float64 Gramian passes validation at :data:`GRAMIAN_TOL` and needs
    no rescaling; otherwise a non-OK status (the general path then decides)."""
    if outside_window(g):
        return RESCALE
    return gramian_status(g, GRAMIAN_TOL)[0]


@njit(cache=True)
def upgrad_checked(g: np.ndarray, pref: np.ndarray) -> tuple[np.ndarray, int]:
    """UPGrad's weights and ``OK``, or a non-OK status (see :func:`checked_status`)."""
    if outside_window(g):
        return np.empty(0), RESCALE
    w, status, _, _ = _upgrad_kernel(g, pref, GRAMIAN_TOL, True)
    return w, status


@njit(cache=True)
def dualproj_checked(g: np.ndarray, pref: np.ndarray) -> tuple[np.ndarray, int]:
    """DualProj's weights and ``OK``, or a non-OK status (see :func:`checked_status`)."""
    if outside_window(g):
        return np.empty(0), RESCALE
    w, status, _, _ = _dualproj_kernel(g, pref, GRAMIAN_TOL, True)
    return w, status


@njit(cache=True)
def min_norm_checked(g: np.ndarray) -> tuple[np.ndarray, int]:
    """MGDA's weights (no warm start) and ``OK``, or a non-OK status."""
    if outside_window(g):
        return np.empty(0), RESCALE
    w, status, _, _ = _min_norm_kernel(g, np.empty(0), False, GRAMIAN_TOL, True)
    return w, status


@njit(cache=True)
def imtl_g_checked(g: np.ndarray) -> tuple[np.ndarray, int]:
    """IMTL-G's weights and ``OK``, or a non-OK status."""
    status = checked_status(g)
    if status != OK:
        return np.empty(0), status
    return _imtl_g_kernel(g), OK


@njit(cache=True)
def aligned_mtl_checked(g: np.ndarray, pref: np.ndarray, mode: int) -> tuple[np.ndarray, int]:
    """Aligned-MTL's weights and ``OK``, or a non-OK status."""
    status = checked_status(g)
    if status != OK:
        return np.empty(0), status
    return _aligned_mtl_kernel(g, pref, mode), OK


# -- by address (see the module's docstring) --------------------------------------------------


@njit(cache=True)
def status_at(address: int, n: int) -> int:
    """:func:`checked_status` of the Gramian at ``address``."""
    return checked_status(square_at(address, n))


@njit(cache=True)
def upgrad_into(address: int, n: int, pref: np.ndarray, out: int) -> bool:
    """UPGrad's weights written to ``out``; False (nothing written) where not ``OK``."""
    w, status = upgrad_checked(square_at(address, n), pref)
    return _write(w, status, out)


@njit(cache=True)
def dualproj_into(address: int, n: int, pref: np.ndarray, out: int) -> bool:
    """DualProj's weights written to ``out``; False (nothing written) where not ``OK``."""
    w, status = dualproj_checked(square_at(address, n), pref)
    return _write(w, status, out)


@njit(cache=True)
def min_norm_into(address: int, n: int, out: int) -> bool:
    """MGDA's weights (no warm start) written to ``out``; False where not ``OK``."""
    w, status = min_norm_checked(square_at(address, n))
    return _write(w, status, out)


@njit(cache=True)
def imtl_g_into(address: int, n: int, out: int) -> bool:
    """IMTL-G's weights written to ``out``; False (nothing written) where not ``OK``."""
    w, status = imtl_g_checked(square_at(address, n))
    return _write(w, status, out)


@njit(cache=True)
def aligned_mtl_into(address: int, n: int, pref: np.ndarray, mode: int, out: int) -> bool:
    """Aligned-MTL's weights written to ``out``; False (nothing written) where not ``OK``."""
    w, status = aligned_mtl_checked(square_at(address, n), pref, mode)
    return _write(w, status, out)


@njit(cache=True)
def pcgrad_into(address: int, n: int, bitgen: int, out: int) -> bool:
    """PCGrad's weights written to ``out``, the visiting orders drawn from the NumPy bit
    generator at ``bitgen`` (:func:`~mogradient.solvers.bitgen.permuted_rows`) only once the
    Gramian passed :func:`checked_status`; False (nothing written, nothing drawn) otherwise."""
    g = square_at(address, n)
    if checked_status(g) != OK:
        return False
    return _write(_pcgrad_kernel(g, permuted_rows(bitgen, n)), OK, out)


@njit(cache=True)
def gradvac_into(
    address: int, n: int, orders: np.ndarray, phi_hat: np.ndarray, beta: float, out: int
) -> bool:
    """GradVac's weights (``phi_hat`` updated) for a Gramian that passed :func:`status_at`,
    written to ``out``."""
    return _write(_gradvac_kernel(square_at(address, n), orders, phi_hat, beta), OK, out)
