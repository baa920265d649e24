"""Matrix products for the autograd ops, on the same threads as the kernels.

Importing seqtool.kernels pins every BLAS to one thread (see kernels/blas.py); large products
then run on Numba's threads, each calling single-threaded BLAS on a block of rows. Small ones
stay plain NumPy: below a few MFLOP the thread hand-off costs more than it saves.
"""
import numpy as np

_MIN_FLOPS = 2e6
_kernels = None


def _blas():
    global _kernels
    if _kernels is None:
        from seqtool import kernels

        _kernels = kernels
    return _kernels


def _eligible(a, b):
    # CuPy arrays (type from the cupy package) go to cuBLAS through a @ b.
    return (type(a).__module__ == "numpy" and type(b).__module__ == "numpy" and a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)
            and 2.0 * a.shape[0] * a.shape[1] * b.shape[1] >= _MIN_FLOPS)


def matmul(a, b):
    """a @ b for 2-d arrays."""
    if not _eligible(a, b):
        return a @ b
    k = _blas()
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if not (b.flags.c_contiguous or b.flags.f_contiguous):
        b = np.ascontiguousarray(b)
    return k.blas.matmul(a, b, k.num_threads())


def matmul_tn(a, b):
    """a.T @ b for 2-d arrays with the same number of rows (weight gradients)."""
    if not _eligible(a.T, b):
        return a.T @ b
    k = _blas()
    return k.blas.matmul_tn(np.ascontiguousarray(a), np.ascontiguousarray(b), k.num_threads())
