"""Vanilla (Elman) RNN layer over a whole sequence, one direction: forward and backward.

  h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  act = tanh or relu
Shapes: x (T, N, D); w_ih (H, D); w_hh (H, H); b (H,) = b_ih + b_hh; lengths (N,) int64.
Saved for backward: h (T+1, N, H), slots and thread blocks as in lstm.py; the activation's
derivative is read off the saved outputs a (B, T, H, C) (each row block's slab, zero on padding).
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import tanh_, unit
from seqtool.kernels.blas import (add_transposed, blend_rows, block, fill_masks, project_inputs,
                                  scatter_rows, slab_width, store_block_state, weight_grads_block)
from seqtool.kernels.tiles import PANEL, natural_order, pack_panels, panel_matmul


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _cells_forward(rec, pin, h, mask, relu):
    """One step of every unit of the block (flat, as in lstm.py): pin (H*C) holds the input
    projection + bias and gets the activation (zero on padding); h is updated in place."""
    one = unit(h)
    zero = one - one  # typed like h: a 0.0 literal would promote float32
    for e in range(mask.shape[0]):
        a = rec[e] + pin[e]
        a = max(a, zero) if relu else tanh_(a)
        v = mask[e]
        pin[e] = v * a  # saved for backward
        h[e] = v * a + (one - v) * h[e]


@njit(cache=True, error_model="numpy")
def _forward_rows(x, panels_ih, act, h, y, panels, b, lengths, reverse, relu, lo, hi):
    # panels_ih, panels: W_ih, W_hh packed; act: the block's slab (T, H, C)
    T, H, M = y.shape[0], h.shape[2], hi - lo
    C = act.shape[2]
    hT = np.zeros((H, C), h.dtype)  # (H, M) block state, zero columns up to C
    hT[:, :M] = h[T if reverse else 0, lo:hi].T
    rec = np.empty((panels.shape[0] * PANEL, C), h.dtype)
    xT = np.zeros((x.shape[2], C), h.dtype)  # the step's inputs, transposed
    p_in = np.empty((panels_ih.shape[0] * PANEL, C), h.dtype)  # W_ih @ xT
    mask = np.zeros(H * C, h.dtype)
    valid = np.empty(M, h.dtype)
    n_valid = -1
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = t if reverse else t + 1
        n_valid = fill_masks(valid, mask, lengths, t, lo, n_valid)
        panel_matmul(panels, hT, rec)
        pin = act[t]  # the step's input projection + bias, then its activation (saved)
        project_inputs(pin, x, t, lo, M, panels_ih, xT, p_in, b)
        _cells_forward(rec[:H].reshape(H * C), pin.reshape(H * C), hT.reshape(H * C), mask, relu)
        store_block_state(hT[:, :M], valid, h, y, t, cur, lo)


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_forward(x, h0, w_ih, w_hh, b, lengths, reverse, relu, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), a (B, T, H, C)."""
    T, N, D = x.shape
    H = h0.shape[1]
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    act = np.empty((nb, T, H, slab_width(nb, N)), x.dtype)
    h = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    panels_ih = pack_panels(w_ih, natural_order(H))  # once per call (kernels/tiles.py)
    panels = pack_panels(w_hh, natural_order(H))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(x, panels_ih, act[k], h, y, panels, b, lengths, reverse, relu, lo, hi)
    return y, h, act


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _cells_backward(act, dh, da, mask, relu):
    """Pre-activation gradients da (H*C) of a step from its activations (zero on padding)."""
    one = unit(dh)
    for e in range(mask.shape[0]):
        g = mask[e] * dh[e]
        if relu:
            da[e] = g if act[e] > 0.0 else 0.0 * g
        else:
            da[e] = g * (one - act[e] * act[e])


@njit(cache=True, error_model="numpy")
def _backward_rows(dpre, dh, act, panels_t, lengths, reverse, relu, dy, lo, hi):
    # act: the block's slab (T, H, C) of activations from the forward
    T, H, M = dy.shape[0], dy.shape[2], hi - lo
    C = act.shape[2]
    HC = H * C
    dhT = np.zeros((H, C), act.dtype)  # (H, M) gradient reaching the carried state
    dhT[:, :M] = dh[lo:hi].T
    da = np.zeros((H, C), act.dtype)  # columns past M stay zero: the product's padding
    d_prev = np.empty((panels_t.shape[0] * PANEL, C), act.dtype)
    mask = np.zeros(HC, act.dtype)
    valid = np.empty(M, act.dtype)
    n_valid = -1
    for s in range(T):
        t = s if reverse else T - 1 - s
        n_valid = fill_masks(valid, mask, lengths, t, lo, n_valid)
        add_transposed(dhT, dy, t, lo, valid)
        _cells_backward(act[t].reshape(HC), dhT.reshape(HC), da.reshape(HC), mask, relu)
        panel_matmul(panels_t, da, d_prev)
        blend_rows(dhT, d_prev, valid)  # the gradient reaching h_{t-1}; padding keeps dh
        scatter_rows(dpre, da, t, lo, hi)
    dh[lo:hi] = dhT[:, :M].T


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_backward(x, w_ih, w_hh, h, act, lengths, reverse, relu, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (H, D), dw_hh (H, H), db (H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dpre = np.empty((H, T, N), x.dtype)
    dh = dh_n.copy()
    panels_t = pack_panels(np.ascontiguousarray(w_hh.T), natural_order(H))  # W_hh.T, once per call
    nb = act.shape[0]  # the recurrence keeps the forward's row blocks (their slabs)
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dpre, dh, act[k], panels_t, lengths, reverse, relu, dy, lo, hi)
    nb = max(1, min(nthreads, N))
    d2 = dpre.reshape(H, T * N)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)
    dw_ih = np.empty((H, D), x.dtype)
    dw_hh = np.empty((H, H), x.dtype)
    db = np.empty(H, x.dtype)
    dx2 = np.empty((T * N if need_dx else 0, D), x.dtype)
    for k in prange(nb):
        weight_grads_block(d2, x.reshape(T * N, D), h_in, w_ih, dw_ih, dw_hh, db, dx2, k, nb, need_dx)
    dx = dx2.reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dw_ih, dw_hh, db
