"""Two low-level helpers of the compiled sweeps, each with a plain-Python form for interpreted runs.

Compiled, they are numba intrinsics; run with `NUMBA_DISABLE_JIT=1` (the mutation runner's first pass,
a debugger) a kernel calls the Python function instead, which an intrinsic alone cannot offer.
"""

from __future__ import annotations

import numpy as np
from numba.core import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic, overload


@intrinsic
def _unowned(typingctx: object, arr: types.Array) -> tuple[object, object]:
    """A view of `arr` without its meminfo: its data, shape and strides, no owner, as numba's
    `prange` bodies see their arrays (the gufunc wrapper builds them so). Copying or dropping it
    then costs no atomic reference count (`NRT_incref` / `NRT_decref` on the owner's count, which
    the threads of a sweep would share: they were half its time)."""

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(sig.return_type)(context, builder)
        context.populate_array(out, data=src.data, shape=src.shape, strides=src.strides, itemsize=src.itemsize, meminfo=None)
        return out._getvalue()

    return arr(arr), codegen


def unowned_nb(arr: np.ndarray) -> np.ndarray:
    """`arr` seen without an owner inside a kernel (see `_unowned`); only for an array the caller keeps
    alive for the whole call (an argument, or scratch its Python wrapper allocated), never returned.
    Interpreted, the array itself."""
    return arr


@overload(unowned_nb)
def _unowned_nb_compiled(arr):  # type: ignore[no-untyped-def]  # no annotation: numba compares the parameters with the implementation's
    return lambda arr: _unowned(arr)  # type: ignore[call-arg]


def trailing_zeros_nb(word: np.uint64) -> int:
    """The number of zero bits below the lowest set bit of a non-zero word (numba's `trailing_zeros`
    compiled: one instruction)."""
    x = int(word)
    return (x & -x).bit_length() - 1


@overload(trailing_zeros_nb)
def _trailing_zeros_nb_compiled(word):  # type: ignore[no-untyped-def]
    return lambda word: trailing_zeros(word)  # type: ignore[call-arg]
