"""Losses with torch.nn.functional semantics; the classification ones are fused, stable Functions.

Class scores are on the LAST axis: logits (M, C) or (..., C) with targets (M,) or (...).
"""

from __future__ import annotations

import numpy as np

from seqtool.core.autograd import Function, Tensor, _lift
from seqtool.core.functional import _t
from seqtool.core.xp import arange, asarray_on, expit

__all__ = ["cross_entropy", "bce_with_logits", "mse"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class CrossEntropy(Function):
    """-log softmax(logits)[target], averaged over targets != ignore_index for "mean"."""

    def forward(self, logits, targets, ignore_index=-100, reduction="mean"):
        C = logits.shape[-1]
        x = logits.reshape(-1, C)  # (M, C)
        t = targets.reshape(-1)  # (M,)
        valid = t != ignore_index
        self.count = int(valid.sum())
        self.reduction, self.shape = reduction, logits.shape
        # The mean's 1/count goes into the gradient here, so backward scales only by its
        # incoming gradient, and not at all for the usual loss.backward() (g = 1).
        scale = 1.0 / max(self.count, 1) if reduction == "mean" else 1.0
        loss = self._loss_and_grad(x, t, valid, scale)
        if reduction == "none":
            return loss.reshape(targets.shape)
        total = loss.sum()
        if reduction == "sum":
            return total
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored -> nan, as torch
            return total / logits.dtype.type(self.count)

    def _loss_and_grad(self, x, t, valid, scale):
        t_safe = np.where(valid, t, 0)  # ignored rows index class 0, then get masked out
        need_grad = any(self.needs_input_grad)
        z = np.empty_like(x)  # exp(x - max), then the gradient
        loss = np.empty_like(x[:, 0])  # like x: on x's device
        _by_row_blocks(lambda lo, hi: _softmax_rows(x[lo:hi], t_safe[lo:hi], z[lo:hi], loss[lo:hi],
                                                    scale, need_grad), x)
        if need_grad:
            if self.count < len(t):
                z[~valid] = 0
            self.grad = z
        return np.where(valid, loss, 0).astype(x.dtype)

    def backward(self, g):
        # In place, not copied (M x C): backward runs once, then the Function is freed.
        if self.reduction == "none":
            np.multiply(self.grad, g.reshape(-1, 1), out=self.grad)
        elif float(g) != 1.0:
            np.multiply(self.grad, g, out=self.grad)
        return self.grad.reshape(self.shape), None


def _softmax_rows(x, t, z, loss, scale: float, need_grad: bool) -> None:
    """Rows of x (R, C): loss = -log softmax(x)[t]; z = (softmax(x) - onehot(t)) * scale.

    One exp pass serves both: with e = exp(x - max) and s = sum(e), -log p[t] = log s -
    (x[t] - max) and d loss / d x = e / s - onehot(t)."""
    np.subtract(x, x.max(axis=-1, keepdims=True), out=z)
    rows = arange(len(t), like=x)
    picked = z[rows, t]
    np.exp(z, out=z)
    s = z.sum(axis=-1)
    loss[...] = np.log(s) - picked
    if need_grad:
        z *= (scale / s)[:, None].astype(z.dtype)
        z[rows, t] -= z.dtype.type(scale)


# Large logits (a translation model's 480 tokens x 8,087 words: 15 MB) are done in blocks of
# rows that stay in the 2 MB L2 cache through the six passes, the blocks shared among threads
# (NumPy releases the GIL). Measured at 480 x 8,087 float32 on 2 cores: 4.2 -> 2.5 ms. A Numba
# kernel doing each row in one pass took 29-33 ms: without SVML its exp is scalar, NumPy's is
# AVX-512.
_BLOCK_BYTES = 2 << 20
_BLOCKED_MIN_BYTES = 4 << 20
_pool = None


def _by_row_blocks(work, x) -> None:
    """work(lo, hi) over row blocks of x, in parallel for large NumPy arrays, else at once."""
    global _pool
    if type(x).__module__ != "numpy" or x.nbytes < _BLOCKED_MIN_BYTES:
        work(0, x.shape[0])
        return
    import numba
    from concurrent.futures import ThreadPoolExecutor

    threads = numba.get_num_threads()
    if _pool is None or _pool._max_workers != threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="seqtool-xent")
    step = max(1, _BLOCK_BYTES // (x.shape[1] * x.itemsize))
    list(_pool.map(lambda lo: work(lo, min(lo + step, x.shape[0])), range(0, x.shape[0], step)))


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean"):
    """logits (..., C) float, targets (...) int class indices."""
    _check_reduction(reduction)
    logits = _t(logits)
    t = asarray_on(targets.data if isinstance(targets, Tensor) else targets, like=logits.data)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy targets must be integer class indices, got {t.dtype}")
    if t.shape != logits.shape[:-1]:
        raise ValueError(f"targets shape {t.shape} does not match logits shape {logits.shape} minus classes")
    C = logits.shape[-1]
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bad.any():
        raise IndexError(f"target {t[bad].flat[0]} out of range for {C} classes")
    return CrossEntropy.apply(logits, t, ignore_index=ignore_index, reduction=reduction)


class BCEWithLogits(Function):
    """l = (1 - y) x + c softplus(-x) with c = 1 + (pos_weight - 1) y, times weight.

    softplus(-x) = max(-x, 0) + log1p(exp(-|x|)) never overflows.
    """

    def forward(self, x, y, weight=None, pos_weight=None, reduction="mean"):
        sp = np.maximum(-x, 0) + np.log1p(np.exp(-np.abs(x)))  # softplus(-x)
        c = 1 if pos_weight is None else 1 + (pos_weight - 1) * y
        loss = (1 - y) * x + c * sp
        if weight is not None:
            loss = loss * weight
        self.save_for_backward(x, y, sp)
        self.weight, self.pos_weight, self.reduction = weight, pos_weight, reduction
        if reduction == "none":
            return loss
        return loss.sum() if reduction == "sum" else loss.mean()

    def backward(self, g):
        x, y, sp = self.saved_tensors

        if self.reduction == "mean":
            g = g * (1.0 / x.size)
        if self.weight is not None:
            g = g * self.weight
        pw = self.pos_weight
        gx = gy = None
        if self.needs_input_grad[0]:
            c = 1 if pw is None else 1 + (pw - 1) * y
            gx = g * ((1 - y) - c * expit(-x))
            gx = np.broadcast_to(gx, x.shape)
        if self.needs_input_grad[1]:
            gy = g * (-x if pw is None else -x + (pw - 1) * sp)
            gy = np.broadcast_to(gy, y.shape)
        return gx, gy


def bce_with_logits(logits, targets, weight=None, reduction: str = "mean", pos_weight=None):
    """Binary cross-entropy on logits; targets are probabilities in [0, 1] of the same shape.

    weight broadcasts against the elements; pos_weight (per class, last axis) scales positives.
    """
    _check_reduction(reduction)
    logits = _t(logits)
    targets = _lift(targets, logits)
    if targets.shape != logits.shape:
        raise ValueError(f"targets shape {targets.shape} does not match logits shape {logits.shape}")

    def const(a):  # weights are constants in the logits' dtype (no float64 promotion)
        return None if a is None else asarray_on(a.data if isinstance(a, Tensor) else a, like=logits.data,
                                                 dtype=logits.dtype)

    return BCEWithLogits.apply(
        logits, targets, weight=const(weight), pos_weight=const(pos_weight), reduction=reduction
    )


def mse(pred, target, reduction: str = "mean"):
    """Mean squared error (torch.nn.functional.mse_loss)."""
    _check_reduction(reduction)
    pred = _t(pred)
    d = pred - _lift(target, pred)
    sq = d * d
    if reduction == "none":
        return sq
    return sq.sum() if reduction == "sum" else sq.mean()
