"""Where an array lives: NumPy on the host, CuPy on a GPU.

The autograd ops are written against NumPy. CuPy arrays implement NumPy's dispatch protocols
(``__array_ufunc__``, ``__array_function__``), so ``np.exp(a)`` or ``np.concatenate([a, b])`` on
CuPy arrays run on the GPU and return CuPy arrays. What does not dispatch is array *creation*
(``np.zeros(shape)``) and conversion (``np.asarray(a)`` refuses a CuPy array): those go through
the helpers here, which take the module from an array that is already where the result belongs.
"""
from __future__ import annotations

import numpy as np

__all__ = ["is_device_array", "module_of", "to_host", "asarray_on", "zeros", "arange"]


def is_device_array(a) -> bool:
    """True for a CuPy array (or anything else from the cupy package)."""
    return type(a).__module__.partition(".")[0] == "cupy"


def module_of(a):
    """cupy for a CuPy array, numpy for everything else."""
    if is_device_array(a):
        import cupy

        return cupy
    return np


def to_host(a):
    """A NumPy array with the data of `a` (copied from the GPU when it is there)."""
    return a.get() if is_device_array(a) else np.asarray(a)


def asarray_on(data, like, dtype=None):
    """`data` (host or device) as an array on the device of `like`."""
    if is_device_array(like):
        return module_of(like).asarray(data, dtype=dtype)
    return np.asarray(to_host(data), dtype=dtype)


def zeros(shape, dtype, like):
    return module_of(like).zeros(shape, dtype=dtype)


def arange(n: int, like, dtype=np.int64):
    return module_of(like).arange(n, dtype=dtype)


def expit(a):
    """The logistic function, exact and stable for large |a|, in a's dtype and on a's device."""
    if is_device_array(a):
        from cupyx.scipy.special import expit as device_expit

        return device_expit(a)
    from scipy.special import expit as host_expit

    return host_expit(a)


def scatter_add(target, index, values) -> None:
    """target[index] += values with repeated indices adding up (np.add.at; on a GPU, CuPy's)."""
    if is_device_array(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)
