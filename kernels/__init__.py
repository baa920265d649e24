"""Numba kernels: arithmetic only, no I/O (imported as seqtool.kernels).

Every public kernel takes `nthreads` last: the number of row blocks to split the batch into.
It is an argument, not a call to numba.get_num_threads() inside the kernel, because that call
makes a compiled function uncacheable. Importing this package pins the BLAS that compiled code
calls to one thread (see blas.py) and keeps freed buffers for reuse (see memory.py).
"""
import numba

from seqtool.kernels.blas import pin_kernel_blas
from seqtool.kernels.memory import keep_freed_memory

pin_kernel_blas()
keep_freed_memory()  # the per-step buffers are reused instead of mapped afresh (see memory.py)

from seqtool.kernels import gru, lstm, pairs, rnn  # noqa: E402,F401


def num_threads():
    """Threads the kernels may use (NUMBA_NUM_THREADS / numba.set_num_threads)."""
    return numba.get_num_threads()
