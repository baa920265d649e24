"""Which device the kernels run on: the check, and moving arrays and models there and back.

--device cuda keeps every array of a training step on the GPU as a CuPy array: parameters,
gradients, optimizer state, batches, the recurrent state carried between batches. The
autograd ops work on either kind (seqtool.core.xp), the recurrent layers pick the CUDA kernels for
CuPy arrays, and model files always hold host arrays (device-neutral: train on one, run on the
other).

Under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1, no GPU, no CuPy) "cuda" is accepted:
arrays stay NumPy but the recurrent layers still run the CUDA kernels, so CI covers that path.
"""
from __future__ import annotations

import os

from seqtool.errors import SeqtoolError

DEVICES = ("cpu", "cuda")
NO_GPU = "no CUDA GPU found; use --device cpu"

_active = "cpu"


def simulator() -> bool:
    """True under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): no GPU, NumPy arrays."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"


def require(device: str) -> None:
    """Return if ``device`` can run the kernels, else raise SeqtoolError (exit 1 in the CLI).

    "cuda" needs numba-cuda with a GPU it can see and its compiler (NVVM), and CuPy (the
    GEMMs), or the CUDA simulator. Each missing piece is named in the one-line error.
    """
    if device == "cpu":
        return
    if device != "cuda":
        raise SeqtoolError(f"unknown device {device!r}; use cpu or cuda")
    if simulator():
        return
    from seqtool.kernels.cuda import toolchain

    cuda = toolchain.import_numba_cuda()
    try:
        available = cuda.is_available()
    except Exception:  # a CUDA driver that fails to load
        available = False
    if not available:
        raise SeqtoolError(NO_GPU)
    cupy = toolchain.import_cupy()
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        raise SeqtoolError(f"CuPy cannot reach the GPU ({toolchain.first_line(err)}): install the CuPy "
                           "for this CUDA version (cupy-cuda12x), or use --device cpu") from None
    toolchain.check_toolchain(cuda)


def use(device: str) -> None:
    """Check ``device`` and make it the one new arrays are put on (see `put`)."""
    global _active
    require(device)
    _active = device


def active() -> str:
    return _active


def cuda_kernels_for_host_arrays() -> bool:
    """True only under the simulator on --device cuda: NumPy arrays, CUDA kernels."""
    return _active == "cuda" and simulator()


def put(array, device: str | None = None):
    """`array` on `device` (default: the active one): a CuPy array for a GPU, else NumPy."""
    import numpy as np

    from seqtool.core.xp import is_device_array, to_host

    device = device or _active
    if device == "cuda" and not simulator():
        import cupy

        return cupy.asarray(array)
    return to_host(array) if is_device_array(array) else np.asarray(array)


def put_tree(obj, device: str | None = None):
    """`put` applied to every array in nested tuples/lists/dicts (batches, carried state)."""
    if isinstance(obj, tuple):
        return tuple(put_tree(v, device) for v in obj)
    if isinstance(obj, list):
        return [put_tree(v, device) for v in obj]
    if isinstance(obj, dict):
        return {k: put_tree(v, device) for k, v in obj.items()}
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return put(obj, device)
    return obj


def module_to(module, device: str):
    """Move every parameter of `module` (in place, same Parameter objects) to `device`."""
    for p in module.parameters():
        p.data = put(p.data, device)
        if p.grad is not None:
            p.grad = put(p.grad, device)
    return module
