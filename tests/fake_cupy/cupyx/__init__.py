"""The two cupyx functions seqtool uses, on the test stand-in for CuPy (see cupy/__init__.py)."""
import numpy as _np

import cupy as _cupy


def scatter_add(target, index, values):
    if not isinstance(target, _cupy.ndarray) or not isinstance(values, _cupy.ndarray):
        raise TypeError(_cupy.HOST_MIX)
    _np.add.at(target.view(_np.ndarray), _cupy._host(index), values.view(_np.ndarray))
