"""Differentiable operations on Tensors (the function forms), plus the network ops.

Arithmetic, reductions, shapes and indexing are defined in `seqtool.core.autograd` next to Tensor;
the ops used by layers (linear, embedding, softmax, dropout, ...) are defined here, each forward
beside its backward. Every function accepts Tensors or array-likes.
"""

from __future__ import annotations

import numpy as np

from seqtool.core import gemm
from seqtool.core.xp import asarray_on, is_device_array, scatter_add, zeros

from seqtool.core.autograd import (
    Cast,
    Exp,
    Function,
    GetItem,
    Log,
    MatMul,
    Mean,
    Neg,
    Pow,
    ReLU,
    Sigmoid,
    Sum,
    Tanh,
    Tensor,
    _index_data,
    _lift,
    _unbroadcast,
)

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sum", "mean", "reshape", "transpose",
    "matmul", "linear", "concat", "stack", "getitem", "embedding", "sigmoid", "tanh", "relu",
    "softmax", "log_softmax", "dropout", "maximum", "clip", "cast",
]  # fmt: skip


def _t(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _pair(a, b) -> tuple[Tensor, Tensor]:
    """Two operands as Tensors; a constant takes the dtype of the Tensor beside it."""
    if isinstance(a, Tensor):
        return a, _lift(b, a)
    if isinstance(b, Tensor):
        return _lift(a, b), b
    return Tensor(a), Tensor(b)


# ---- function forms of the core ops
def add(a, b):
    a, b = _pair(a, b)
    return a + b


def sub(a, b):
    a, b = _pair(a, b)
    return a - b


def mul(a, b):
    a, b = _pair(a, b)
    return a * b


def div(a, b):
    a, b = _pair(a, b)
    return a / b


def matmul(a, b):
    return MatMul.apply(*_pair(a, b))


def neg(x):
    return Neg.apply(_t(x))


def pow(x, exponent: float):  # noqa: A001 - mirrors torch.pow
    return Pow.apply(_t(x), float(exponent))


def exp(x):
    return Exp.apply(_t(x))


def log(x):
    return Log.apply(_t(x))


def sigmoid(x):
    return Sigmoid.apply(_t(x))


def tanh(x):
    return Tanh.apply(_t(x))


def relu(x):
    return ReLU.apply(_t(x))


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors torch.sum
    return Sum.apply(_t(x), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(_t(x), axis=axis, keepdims=keepdims)


def reshape(x, *shape):
    return _t(x).reshape(*shape)


def transpose(x, *axes):
    return _t(x).transpose(*axes)


def getitem(x, index):
    return GetItem.apply(_t(x), _index_data(index))


def cast(x, dtype):
    return Cast.apply(_t(x), np.dtype(dtype))


# ---- network ops
class Linear(Function):
    """y = x @ W.T + b with W (out, in) as in PyTorch; x (..., in)."""

    def forward(self, x, w, b=None):
        self.save_for_backward(x, w)
        y = gemm.matmul(x.reshape(-1, x.shape[-1]), w.T).reshape(*x.shape[:-1], w.shape[0])  # (..., out)
        if b is not None:
            y += b
        return y

    def backward(self, g):
        x, w = self.saved_tensors
        need_x, need_w, need_b = (self.needs_input_grad + (False,))[:3]
        g2 = g.reshape(-1, g.shape[-1])  # (M, out): all leading axes as one GEMM
        gx = gemm.matmul(g2, w).reshape(x.shape) if need_x else None
        gw = gemm.matmul_tn(g2, x.reshape(-1, x.shape[-1])) if need_w else None
        gb = g2.sum(axis=0) if need_b else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    return Linear.apply(_t(x), weight, bias)


class Concat(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        self.splits = np.cumsum([a.shape[axis] for a in arrays])[:-1].tolist()  # a list: CuPy takes it too
        return np.concatenate(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.split(g, self.splits, axis=self.axis))


def concat(tensors, axis=0):
    return Concat.apply(*tensors, axis=axis)


class Stack(Function):
    def forward(self, *arrays, axis=0):
        self.axis = axis
        return np.stack(arrays, axis=axis)

    def backward(self, g):
        g = np.moveaxis(g, self.axis, 0)
        return tuple(g[i] for i in range(g.shape[0]))


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)


class Embedding(Function):
    """weight[indices]; the rows of padding_idx get no gradient (as in torch)."""

    def forward(self, indices, weight, padding_idx=None):
        self.indices, self.wshape, self.padding_idx = indices, weight.shape, padding_idx
        return weight[indices]  # (..., D)

    def backward(self, g):
        gw = zeros(self.wshape, g.dtype, like=g)
        idx = self.indices.reshape(-1)
        if idx.size and is_device_array(g):
            scatter_add(gw, idx, g.reshape(-1, self.wshape[1]))
        elif idx.size:
            # rows repeat: sort, then sum each run with reduceat (~3x faster than np.add.at here)
            order = np.argsort(idx, kind="stable")
            sidx = idx[order]
            starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
            gw[sidx[starts]] = np.add.reduceat(g.reshape(-1, self.wshape[1])[order], starts, axis=0)
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return None, gw


def embedding(indices, weight, padding_idx=None):
    idx = indices.data if isinstance(indices, Tensor) else indices
    idx = asarray_on(idx, like=weight.data if isinstance(weight, Tensor) else weight)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding indices must be integers, got {idx.dtype}")
    num = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        raise IndexError(f"embedding index out of range [0, {num}): min {idx.min()}, max {idx.max()}")
    return Embedding.apply(idx, _t(weight), padding_idx=padding_idx)


class Softmax(Function):
    def forward(self, x, axis=-1):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        y = e / e.sum(axis=axis, keepdims=True)
        self.save_for_backward(y)
        self.axis = axis
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return y * (g - (g * y).sum(axis=self.axis, keepdims=True))


def softmax(x, axis=-1):
    return Softmax.apply(_t(x), axis=axis)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Stable log-softmax on arrays."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        y = _log_softmax(x, axis)
        self.save_for_backward(y)
        self.axis = axis
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g - np.exp(y) * g.sum(axis=self.axis, keepdims=True)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(_t(x), axis=axis)


class Dropout(Function):
    """Inverted dropout: kept units are scaled by 1/(1-p) so evaluation needs no rescaling."""

    def forward(self, x, p, rng):
        if p >= 1.0:
            self.mask = np.zeros_like(x)
        else:
            rdtype = np.float32 if x.dtype == np.float32 else np.float64  # float32 draws are cheaper
            keep = rng.random(x.shape, dtype=rdtype) >= p  # drawn on the host: same masks on any device
            self.mask = asarray_on(keep, like=x).astype(x.dtype) * (1.0 / (1.0 - p))
        return x * self.mask

    def backward(self, g):
        return g * self.mask, None, None


def dropout(x, p=0.5, training=True, rng=None):
    """Identity (the same Tensor) when not training or p == 0; rng: numpy Generator."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    x = _t(x)
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, float(p), rng if rng is not None else np.random.default_rng())


class Maximum(Function):
    """Elementwise max; ties split the gradient equally (as torch.maximum)."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return np.maximum(a, b)

    def backward(self, g):
        a, b = self.saved_tensors
        wa = (a > b) + 0.5 * (a == b)
        wa = wa.astype(g.dtype)
        ga = _unbroadcast(g * wa, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(g * (1 - wa), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


def maximum(a, b):
    return Maximum.apply(*_pair(a, b))


class Clip(Function):
    """Clamp to [lo, hi]; gradient passes where lo <= x <= hi (as torch.clamp)."""

    def forward(self, x, lo=None, hi=None):
        self.save_for_backward(x)
        self.lo, self.hi = lo, hi
        return np.clip(x, lo, hi)

    def backward(self, g):
        (x,) = self.saved_tensors
        keep = np.ones_like(x, dtype=bool)
        if self.lo is not None:
            keep &= x >= self.lo
        if self.hi is not None:
            keep &= x <= self.hi
        return g * keep, None, None


def clip(x, lo=None, hi=None):
    x = _t(x)
    # bounds as the Tensor's dtype so np.clip does not promote float32
    lo = None if lo is None else x.dtype.type(lo)
    hi = None if hi is None else x.dtype.type(hi)
    return Clip.apply(x, lo, hi)


class Transfer(Function):
    """The same values on another device ("cpu" or "cuda"); the gradient goes back where x was."""

    def forward(self, x, device):
        from seqtool.device import put

        self.source = "cuda" if is_device_array(x) else "cpu"
        return put(x, device)

    def backward(self, g):
        from seqtool.device import put

        return put(g, self.source), None


def to_device(x, device: str):
    """x on `device`, differentiably (seqtool.device.put moves arrays without autograd)."""
    return Transfer.apply(_t(x), device)
