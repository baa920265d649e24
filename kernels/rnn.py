"""Vanilla (Elman) RNN layer over a whole sequence, one direction: forward and backward.

  h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  act = tanh or relu
Shapes: x (T, N, D); w_ih (H, D); w_hh (H, H); b (H,) = b_ih + b_hh; lengths (N,) int64.
Saved for backward: h (T+1, N, H), slots and thread blocks as in lstm.py; the activation's
derivative is read off the saved outputs a (H, T, N) (gate-major, zero on padding).
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import tanh_, unit
from seqtool.kernels.blas import (add_transposed, block, fill_valid, gemm_rows, store_block_state,
                                  weight_grads_block)
from seqtool.kernels.tiles import PANEL, natural_order, pack_panels, padded, panel_matmul


@njit(cache=True, error_model="numpy")
def _forward_rows(pre, h, y, panels, b, lengths, reverse, relu, lo, hi):
    T, H, M = y.shape[0], h.shape[2], hi - lo
    C = padded(M)
    one = unit(h)
    zero = one - one  # typed like h: a 0.0 literal would promote float32
    hT = np.zeros((H, C), h.dtype)  # (H, M) block state, zero columns up to C
    hT[:, :M] = h[T if reverse else 0, lo:hi].T
    rec = np.empty((panels.shape[0] * PANEL, C), h.dtype)
    valid = np.empty(M, h.dtype)
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = t if reverse else t + 1
        fill_valid(valid, lengths, t, lo, one)
        panel_matmul(panels, hT, rec)
        for j in range(H):
            row, p_in, h_j, bj = rec[j], pre[j, t, lo:hi], hT[j], b[j]
            for m in range(M):
                a = row[m] + p_in[m] + bj
                a = max(a, zero) if relu else tanh_(a)
                p_in[m] = valid[m] * a  # saved for backward
                h_j[m] = valid[m] * a + (one - valid[m]) * h_j[m]
        store_block_state(hT[:, :M], valid, h, y, t, cur, lo)


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_forward(x, h0, w_ih, w_hh, b, lengths, reverse, relu, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), a (H, T, N)."""
    T, N, D = x.shape
    H = h0.shape[1]
    pre = np.empty((H, T, N), x.dtype)  # input projection, then the activations
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):
        gemm_rows(w_ih, x.reshape(T * N, D).T, pre.reshape(H, T * N), k, nb)
    h = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    panels = pack_panels(w_hh, natural_order(H))  # once per call (kernels/tiles.py)
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(pre, h, y, panels, b, lengths, reverse, relu, lo, hi)
    return y, h, pre


@njit(cache=True, error_model="numpy")
def _backward_rows(dpre, dh, act, panels_t, lengths, reverse, relu, dy, lo, hi):
    T, H, M = dy.shape[0], dy.shape[2], hi - lo
    C = padded(M)
    one = unit(act)
    dhT = np.zeros((H, C), act.dtype)  # (H, M) gradient reaching the carried state
    dhT[:, :M] = dh[lo:hi].T
    da = np.zeros((H, C), act.dtype)  # columns past M stay zero: the product's padding
    d_prev = np.empty((panels_t.shape[0] * PANEL, C), act.dtype)
    valid = np.empty(M, act.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        fill_valid(valid, lengths, t, lo, one)
        add_transposed(dhT, dy, t, lo, valid)
        for j in range(H):
            a_j, dh_j, da_j = act[j, t, lo:hi], dhT[j], da[j]
            for m in range(M):
                g = valid[m] * dh_j[m]
                if relu:
                    da_j[m] = g if a_j[m] > 0.0 else 0.0 * g
                else:
                    da_j[m] = g * (one - a_j[m] * a_j[m])
        panel_matmul(panels_t, da, d_prev)
        for j in range(H):
            dh_j, dp, out = dhT[j], d_prev[j], dpre[j, t, lo:hi]
            for m in range(M):
                dh_j[m] = valid[m] * dp[m] + (one - valid[m]) * dh_j[m]
                out[m] = da[j, m]
    dh[lo:hi] = dhT[:, :M].T


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_backward(x, w_ih, w_hh, h, act, lengths, reverse, relu, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (H, D), dw_hh (H, H), db (H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dpre = np.empty((H, T, N), x.dtype)
    dh = dh_n.copy()
    panels_t = pack_panels(np.ascontiguousarray(w_hh.T), natural_order(H))  # W_hh.T, once per call
    nb = max(1, min(nthreads, N))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dpre, dh, act, panels_t, lengths, reverse, relu, dy, lo, hi)
    d2 = dpre.reshape(H, T * N)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)
    dw_ih = np.empty((H, D), x.dtype)
    dw_hh = np.empty((H, H), x.dtype)
    db = np.empty(H, x.dtype)
    dx_parts = np.empty((nb if need_dx else 0, T * N, D), x.dtype)
    for k in prange(nb):
        weight_grads_block(d2, x.reshape(T * N, D), h_in, w_ih, dw_ih, dw_hh, db, dx_parts, k, k, nb, need_dx)
    dx = dx_parts.sum(axis=0).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dw_ih, dw_hh, db
