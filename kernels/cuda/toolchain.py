"""The one way seqtool imports numba.cuda: NumPy fixed up first, setup failures as one line.

NumPy 2.5 removed ``numpy.row_stack`` (deprecated since 2.0 as an alias of ``numpy.vstack``).
numba-cuda 0.30.4 (its newest release when this was written) still registers an overload for
it in numba/cuda/np/arrayobj.py, imported at the first kernel compile, so every first launch
died with ``AttributeError: module 'numpy' has no attribute 'row_stack'``. Until numba-cuda
stops registering it, the missing name is put back as the alias it was, and only when absent:
older NumPy keeps its own. Delete `_restore_row_stack` once the `cuda` extra requires a
numba-cuda that no longer names ``np.row_stack`` (tests/test_cuda_install.py then still
passes without it).
"""
from __future__ import annotations

from seqtool.device import NO_GPU
from seqtool.errors import SeqtoolError

INSTALL = "pip install 'seqtool[cuda]'"


def _restore_row_stack() -> None:
    import numpy as np

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


def import_numba_cuda():
    """numba.cuda (the simulator under NUMBA_ENABLE_CUDASIM=1), imported after the NumPy fix.

    Raises SeqtoolError naming the cause and the fix when numba-cuda is missing or broken."""
    _restore_row_stack()
    try:
        from numba import cuda
    except Exception as err:  # ImportError, or a numba-cuda built for another numba
        raise SeqtoolError(f"{NO_GPU} (numba.cuda cannot be imported: {first_line(err)}; "
                           f"for a GPU: {INSTALL})") from None
    return cuda


def check_toolchain(cuda) -> None:
    """On a real GPU: NVVM (numba-cuda's compiler) must load, else the first kernel compile
    would fail with a traceback. One-line SeqtoolError naming the fix otherwise. (The CUDA
    simulator compiles nothing: nothing to check.)"""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1":
        return
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as err:
        raise SeqtoolError(f"the CUDA compiler library NVVM cannot be loaded ({first_line(err)}); "
                           f"{INSTALL} brings it (numba-cuda[cu12]), or set CUDA_HOME to a CUDA "
                           "toolkit; or use --device cpu") from None


def import_cupy():
    """CuPy, or a SeqtoolError saying how to install it."""
    try:
        import cupy
    except Exception as err:  # ImportError, or a CuPy built for another CUDA version
        raise SeqtoolError(f"CuPy cannot be imported ({first_line(err)}): {INSTALL} "
                           "(CuPy for CUDA 12: cupy-cuda12x), or use --device cpu") from None
    return cupy


def toolchain_error(err: BaseException) -> SeqtoolError | None:
    """A one-line SeqtoolError for a CUDA setup failure met at a kernel compile or launch (no
    driver, no NVVM/NVRTC, ...); None for any other exception, which is a bug to show."""
    from numba.cuda.cudadrv import error

    setup = (error.CudaSupportError, error.NvvmSupportError, error.NvrtcSupportError,
             error.CudaDriverError)
    if isinstance(err, setup):
        return SeqtoolError(f"CUDA setup failed ({type(err).__name__}: {first_line(err)}); "
                            f"reinstall with {INSTALL} or use --device cpu")
    return None


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
