"""NumPy ``Generator.permuted`` rows drawn inside compiled code, from the bit generator itself.

A seeded method's fast path (PCGrad) validates the Gramian, draws its visiting orders and
solves in one compiled call: drawing the orders in Python first would cost a ``permuted`` call
and leave the stream advanced when the Gramian is then refused. Passing the ``Generator``
itself to numba costs ~10 µs of unboxing, so the kernels here take the address of NumPy's
``bitgen_t`` (``Generator.bit_generator.ctypes.bit_generator.value``) and call its
``next_uint32`` as NumPy's own shuffle does: the same draws, in the same order, as
``Generator.permuted(rows, axis=1)`` (a test compares them seed by seed). The caller keeps the
generator alive during the call.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: Slot of ``next_uint32`` in NumPy's ``bitgen_t``: ``{void *state; next_uint64; next_uint32;
#: next_double; next_raw}``, all pointer-sized.
_NEXT_UINT32 = 2


@intrinsic
def _next_uint32(typingctx, bitgen):  # type: ignore[no-untyped-def]
    """``bitgen->next_uint32(bitgen->state)`` for the ``bitgen_t`` at address ``bitgen``."""
    sig = types.uint32(types.intp)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        void_p = ir.IntType(8).as_pointer()
        slots = builder.inttoptr(args[0], void_p.as_pointer())
        state = builder.load(slots)
        fn_type = ir.FunctionType(ir.IntType(32), [void_p])
        fn = builder.bitcast(
            builder.load(builder.gep(slots, [ir.Constant(ir.IntType(32), _NEXT_UINT32)])),
            fn_type.as_pointer(),
        )
        return builder.call(fn, [state])

    return sig, codegen


@njit(cache=True)
def random_interval(bitgen: int, top: int) -> int:
    """A uniform integer in ``[0, top]`` (``0 ≤ top < 2^32``) by masked rejection, as NumPy's
    ``random_interval`` (the draw behind ``Generator.shuffle`` and ``permuted``)."""
    if top == 0:
        return 0
    mask = top
    mask |= mask >> 1
    mask |= mask >> 2
    mask |= mask >> 4
    mask |= mask >> 8
    mask |= mask >> 16
    value = _next_uint32(bitgen) & mask  # type: ignore[call-arg]
    while value > top:
        value = _next_uint32(bitgen) & mask  # type: ignore[call-arg]
    return value


@njit(cache=True)
def permuted_rows(bitgen: int, n: int) -> np.ndarray:
    """``n`` rows of ``range(n)``, each shuffled in turn: ``Generator.permuted(rows, axis=1)``
    with ``rows = np.tile(np.arange(n), (n, 1))``, drawn from the same stream."""
    rows = np.empty((n, n), dtype=np.int64)
    for i in range(n):
        for k in range(n):
            rows[i, k] = k
        for k in range(n - 1, 0, -1):
            j = random_interval(bitgen, k)
            if j != k:
                rows[i, k], rows[i, j] = rows[i, j], rows[i, k]
    return rows
