"""Thread layout for the kernels: Numba threads split the work, BLAS stays single-threaded.

`np.dot` inside @njit calls SciPy's OpenBLAS. If that BLAS also starts its own threads, its
spinning workers and Numba's workers fight over the cores (measured: a 2-core LSTM step went
from 80 ms to 2 s). So SciPy's BLAS is pinned to one thread and every kernel splits its GEMMs
into one block per Numba thread: batch rows for the recurrence (rows never interact across
time), row blocks for the large GEMMs outside the time loop.
"""
import numpy as np
from numba import njit

_pinned = False


def pin_kernel_blas():
    """Limit SciPy's OpenBLAS (the one Numba calls) to one thread; idempotent."""
    global _pinned
    if _pinned:
        return
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so threadpoolctl can see it)
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        # numpy keeps its own BLAS threads for the big array ops outside the kernels.
        if lib.user_api == "blas" and "numpy" not in lib.filepath:
            lib.set_num_threads(1)
    _pinned = True


@njit(inline="always")
def block(k, nblocks, n):
    """Bounds of block k when n items are split into nblocks nearly equal blocks."""
    return k * n // nblocks, (k + 1) * n // nblocks


# The helpers below each do one thread's block; the kernels call them inside their own
# prange loop. (A parallel function calling another parallel function cannot be cached.)


@njit(cache=True)
def gemm_rows(a, b, out, k, nblocks):
    """Block k of out = a @ b, split over a's rows. a (M, K), b (K, P), out (M, P)."""
    lo, hi = block(k, nblocks, a.shape[0])
    if hi > lo:
        np.dot(a[lo:hi], b, out[lo:hi])


@njit(cache=True)
def gemm_tn_partial(a, b, partial, k, nblocks):
    """partial = a[block].T @ b[block]; the blocks' partials sum to a.T @ b."""
    lo, hi = block(k, nblocks, a.shape[0])
    if hi > lo:
        np.dot(a[lo:hi].T, b[lo:hi], partial)
    else:
        partial[:] = 0.0


@njit(cache=True)
def colsum_partial(a, partial, k, nblocks):
    """partial = a[block].sum(axis=0)."""
    lo, hi = block(k, nblocks, a.shape[0])
    partial[:] = 0.0
    for r in range(lo, hi):
        row = a[r]
        for j in range(a.shape[1]):
            partial[j] += row[j]


@njit(cache=True)
def rowsum_block(a, out, k, nblocks):
    """Block k of out = a.sum(axis=1) for a (P, M), split over a's rows."""
    lo, hi = block(k, nblocks, a.shape[0])
    for r in range(lo, hi):
        row = a[r]
        acc = row[0] * 0
        for j in range(a.shape[1]):
            acc += row[j]
        out[r] = acc
