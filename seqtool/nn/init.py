"""Parameter initialisers (as torch.nn.init): fill a NumPy array in place, keep its dtype.

Every random initialiser takes `rng`, a numpy Generator, so a seed reproduces a model exactly.
Pass a Tensor's `.data` (or a view of it, e.g. one gate block of a packed matrix).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "uniform_", "normal_", "zeros_", "ones_", "constant_", "orthogonal_", "identity_",
    "xavier_uniform_", "kaiming_uniform_", "calculate_fans",
]  # fmt: skip


def _rng(rng) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def _data(a) -> np.ndarray:
    return a.data if hasattr(a, "requires_grad") else a  # Tensor or ndarray


def calculate_fans(shape: tuple) -> tuple[int, int]:
    """(fan_in, fan_out) as torch: dims 0 and 1 times the receptive field of the rest."""
    if len(shape) < 2:
        raise ValueError(f"fan in/out needs at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform_(a, low: float = 0.0, high: float = 1.0, rng=None):
    a = _data(a)
    a[...] = _rng(rng).uniform(low, high, size=a.shape)
    return a


def normal_(a, mean: float = 0.0, std: float = 1.0, rng=None):
    a = _data(a)
    a[...] = _rng(rng).normal(mean, std, size=a.shape)
    return a


def constant_(a, value: float):
    a = _data(a)
    a[...] = value
    return a


def zeros_(a):
    return constant_(a, 0)


def ones_(a):
    return constant_(a, 1)


def orthogonal_(a, gain: float = 1.0, rng=None):
    """A (semi-)orthogonal matrix: QR of a Gaussian, signs fixed by diag(R) (as torch).

    Arrays with more than 2 dims are treated as (shape[0], rest).
    """
    a = _data(a)
    if a.ndim < 2:
        raise ValueError(f"orthogonal_ needs at least 2 dimensions, got shape {a.shape}")
    rows = a.shape[0]
    cols = a.size // rows
    flat = _rng(rng).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))  # makes the distribution uniform over orthogonal matrices
    if rows < cols:
        q = q.T
    a[...] = (gain * q).reshape(a.shape)
    return a


def identity_(a, gain: float = 1.0):
    """gain * I (rectangular: ones on the main diagonal), e.g. the IRNN recurrent matrix."""
    a = _data(a)
    if a.ndim != 2:
        raise ValueError(f"identity_ needs a 2-d array, got shape {a.shape}")
    a[...] = 0
    np.fill_diagonal(a, gain)
    return a


def xavier_uniform_(a, gain: float = 1.0, rng=None):
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    a = _data(a)
    fan_in, fan_out = calculate_fans(a.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(a, -bound, bound, rng)


def kaiming_uniform_(a, gain: float = math.sqrt(2.0), rng=None):
    """U(-b, b) with b = gain * sqrt(3 / fan_in); gain=sqrt(1/3) is torch's Linear default."""
    a = _data(a)
    fan_in, _ = calculate_fans(a.shape)
    bound = gain * math.sqrt(3.0 / fan_in)
    return uniform_(a, -bound, bound, rng)
