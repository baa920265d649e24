"""Scalar activations used inside the compiled gate loops.

The float32 versions are branch-free rational approximations: libm's tanh/exp are opaque
calls that stop LLVM from vectorizing the gate loop (measured: the gate arithmetic then
costs 4x the recurrent GEMMs). The rational form below keeps the relative error within a
few float32 ulps. float64 kernels (gradchecks) use the exact functions.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

# Odd/even polynomial coefficients of a [13/6] minimax rational approximation of tanh on
# [-7.9, 7.9]; beyond that tanh(x) rounds to +-1 in float32.
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_CLAMP = np.float32(7.90531110763549805)
_HALF32 = np.float32(0.5)


@njit(inline="always", error_model="numpy")
def tanh32(x):
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


@njit(inline="always", error_model="numpy")
def sigmoid32(x):
    # sigmoid(x) = (1 + tanh(x/2)) / 2 keeps one approximation for both gates.
    return _HALF32 + _HALF32 * tanh32(_HALF32 * x)


@njit(inline="always", error_model="numpy")
def tanh64(x):
    return np.tanh(x)


@njit(inline="always", error_model="numpy")
def sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


# Type-dispatched entry points: the kernels call sigm()/tanh_() and Numba picks the
# approximation for float32 and the exact function for float64 at compile time, so no
# flag reaches the inner loop.
def sigm(x):
    raise NotImplementedError("only callable from compiled code")


def tanh_(x):
    raise NotImplementedError("only callable from compiled code")


@overload(sigm, inline="always")
def _sigm_impl(x):
    if x == types.float32:
        return lambda x: sigmoid32(x)
    return lambda x: sigmoid64(x)


@overload(tanh_, inline="always")
def _tanh_impl(x):
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: tanh64(x)


def unit(arr):
    raise NotImplementedError("only callable from compiled code")


@overload(unit, inline="always")
def _unit_impl(arr):
    # A bare 1.0 literal is float64 in Numba and would promote float32 gate arithmetic.
    if arr.dtype == types.float32:
        return lambda arr: np.float32(1.0)
    return lambda arr: 1.0
