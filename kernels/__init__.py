"""Numba kernels: arithmetic only, no I/O (imported as seqtool.kernels).

Every public kernel takes `nthreads` last: the number of row blocks to split the batch into.
It is an argument, not a call to numba.get_num_threads() inside the kernel, because that call
makes a compiled function uncacheable. Importing this package pins the BLAS that compiled code
calls to one thread (see blas.py).
"""
import numba

from seqtool.kernels.blas import pin_kernel_blas

pin_kernel_blas()

from seqtool.kernels import gru, lstm, pairs, rnn  # noqa: E402,F401


def num_threads():
    """Threads the kernels may use (NUMBA_NUM_THREADS / numba.set_num_threads)."""
    return numba.get_num_threads()
