import numpy as _np
from scipy.special import expit as _expit

import cupy as _cupy


def expit(a):
    if not isinstance(a, _cupy.ndarray):
        raise TypeError("cupyx.scipy.special.expit takes a device array")
    return _expit(a.view(_np.ndarray)).view(_cupy.ndarray)
