"""Vanilla (Elman) RNN layer over a whole sequence, one direction: forward and backward.

  h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  act = tanh or relu
Shapes (time-major, state chain layout as in lstm.py):
  x (T, N, D); w_ih (H, D); w_hh (H, H); b (H,) = b_ih + b_hh; lengths (N,) int64
Saved for backward: h (T+1, N, H); the activation's derivative is read off h itself.
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import tanh_, unit
from seqtool.kernels.blas import block, gemm_rows, gemm_tn_partial, colsum_partial


@njit(cache=True, error_model="numpy")
def _forward_rows(pre, h, y, w_hh, b, lengths, reverse, relu, lo, hi):
    T = y.shape[0]
    H = h.shape[2]
    rec = np.empty((hi - lo, H), h.dtype)
    zero = unit(h) - unit(h)  # typed like h: a 0.0 literal would promote float32
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        np.dot(h[prev, lo:hi], w_hh.T, rec)
        for n in range(lo, hi):
            h_cur, y_t = h[cur, n], y[t, n]
            if t >= lengths[n]:
                h_cur[:] = h[prev, n]
                y_t[:] = 0.0
                continue
            p_row, r_row = pre[t, n], rec[n - lo]
            if relu:
                for j in range(H):
                    h_cur[j] = max(p_row[j] + r_row[j] + b[j], zero)
            else:
                for j in range(H):
                    h_cur[j] = tanh_(p_row[j] + r_row[j] + b[j])
            y_t[:] = h_cur


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_forward(x, h0, w_ih, w_hh, b, lengths, reverse, relu, nthreads):
    """Returns y (T, N, H) and the state chain h (T+1, N, H)."""
    T, N, D = x.shape
    H = h0.shape[1]
    pre = np.empty((T, N, H), x.dtype)
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):  # input projection of all steps at once
        gemm_rows(x.reshape(T * N, D), w_ih.T, pre.reshape(T * N, H), k, nb)
    h = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(pre, h, y, w_hh, b, lengths, reverse, relu, lo, hi)
    return y, h


@njit(cache=True, error_model="numpy")
def _backward_rows(dpre, dh, h, w_hh, lengths, reverse, relu, dy, lo, hi):
    T = dy.shape[0]
    H = h.shape[2]
    one = unit(h)
    dh_rec = np.empty((hi - lo, H), h.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        cur = t if reverse else t + 1
        for n in range(lo, hi):
            d_row = dpre[t, n]
            if t >= lengths[n]:
                d_row[:] = 0.0
                continue
            h_cur, dh_n, dy_t = h[cur, n], dh[n], dy[t, n]
            if relu:
                for j in range(H):
                    d_row[j] = (dh_n[j] + dy_t[j]) if h_cur[j] > 0.0 else 0.0
            else:
                for j in range(H):
                    d_row[j] = (dh_n[j] + dy_t[j]) * (one - h_cur[j] * h_cur[j])
            dh_n[:] = 0.0  # replaced by the recurrent term below
        np.dot(dpre[t, lo:hi], w_hh, dh_rec)
        for n in range(lo, hi):
            if t < lengths[n]:
                dh[n] = dh_rec[n - lo]


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_backward(x, w_ih, w_hh, h, lengths, reverse, relu, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (H, D), dw_hh (H, H), db (H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dpre = np.empty((T, N, H), x.dtype)
    dh = dh_n.copy()
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dpre, dh, h, w_hh, lengths, reverse, relu, dy, lo, hi)
    d2 = dpre.reshape(T * N, H)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)
    x2 = x.reshape(T * N, D)
    p_ih = np.empty((nb, H, D), x.dtype)  # per-thread partial sums over time
    p_hh = np.empty((nb, H, H), x.dtype)
    p_b = np.empty((nb, H), x.dtype)
    dx = np.empty((T, N, D) if need_dx else (0, N, D), x.dtype)
    dx2 = dx.reshape(dx.shape[0] * N, D)
    for k in prange(nb):
        gemm_tn_partial(d2, x2, p_ih[k], k, nb)
        gemm_tn_partial(d2, h_in, p_hh[k], k, nb)
        colsum_partial(d2, p_b[k], k, nb)
        if need_dx:
            gemm_rows(d2, w_ih, dx2, k, nb)
    return dx, dh, p_ih.sum(axis=0), p_hh.sum(axis=0), p_b.sum(axis=0)
