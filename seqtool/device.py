"""Which device the kernels run on; ``require`` fails early, with one line, when it is missing.

Only the check lives here for now; the CUDA kernels themselves are in seqtool.kernels.cuda.
"""
from __future__ import annotations

from seqtool.errors import SeqtoolError

DEVICES = ("cpu", "cuda")
NO_GPU = "no CUDA GPU found; use --device cpu"


def require(device: str) -> None:
    """Return if ``device`` can run the kernels, else raise SeqtoolError (exit 1 in the CLI).

    "cuda" needs CuPy (the GEMMs) and a GPU that numba.cuda can see.
    """
    if device == "cpu":
        return
    if device != "cuda":
        raise SeqtoolError(f"unknown device {device!r}; use cpu or cuda")
    try:
        import cupy  # noqa: F401
        from numba import cuda
        available = cuda.is_available()
    except Exception:  # ImportError, or a CUDA driver that fails to load
        available = False
    if not available:
        raise SeqtoolError(NO_GPU)
