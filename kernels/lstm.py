"""LSTM layer over a whole sequence, one direction: forward and backward (BPTT).

Shapes (T steps, N batch rows, D inputs, H hidden):
  x       (T, N, D)     inputs, time-major
  w_ih    (4H, D)       PyTorch layout, gate order i, f, g, o
  w_hh    (4H, H)
  b       (4H,)         b_ih + b_hh (they always appear summed)
  lengths (N,) int64    valid steps per example; states freeze and outputs are zero past it
Saved for backward:
  h       (T+1, N, H)   state chain in time order. Forward: slot t+1 holds the state after
                        step t and slot 0 the initial state; reverse: slot t after step t and
                        slot T the initial state. The states that feed the steps are then one
                        contiguous (T*N, H) block, so dW_hh is a single GEMM.
  c       (T+1, H, N)   cell chain, same slots, gate-major
  gates   (B, T, 4H, C) activated i, f, g, o of each of the B row blocks, step by step
                        (block b's rows in columns :M, zero elsewhere; C: blas.slab_width)
Threads: each Numba thread owns a block of M batch rows for the whole time loop and keeps
their state and cell transposed, (H, C) with C = M rounded up to whole vector registers. The
recurrent product runs on W_hh packed once per call (kernels/tiles.py), the backward's
W_hh.T @ dG on W_hh.T packed the same way, and each step's input projection on W_ih packed
(one BLAS call for all steps, then a gather per step, was 2.3 ms slower of a 19 ms GRU
forward). A step's gates are one contiguous (4H, C) slot of the block's slab, so the gate
arithmetic of all its cells is one flat vectorized loop that leaves the activated gates in
place, and the backward reads them there (copying them to and from gate-major arrays cost
~3 ms of a 56 ms GRU step). The gate gradients go gate-major for the weight and input
gradients, which run on the tiles too.
Memory: ((T+1)2H + 5TH) N floats; T=100, N=32, H=256: 16 MB in float32.
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import (add_transposed, blend_rows, block, fill_masks, get_block, project_inputs,
                                  put_block, scatter_rows, slab_width, store_block_state, weight_grads_block)
from seqtool.kernels.tiles import PANEL, natural_order, pack_panels, panel_matmul


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _cells_forward(rec, gin, c_old, c_new, h_old, h_new, mask):
    """One step of every unit of the block at once. rec (4, H*C): the recurrent products of the
    gates i, f, g, o; gin (4, H*C): their input projections + bias, replaced by the activated
    gates (zero on padding). Flat contiguous rows and a loop from 0, so LLVM vectorizes it with
    one set of alias checks per step (a loop per hidden unit paid that set-up, a call and its
    slices H times a step: at 32 columns the gate arithmetic cost ~3x this loop's time)."""
    one = unit(rec)
    r_i, r_f, r_g, r_o = rec[0], rec[1], rec[2], rec[3]
    x_i, x_f, x_g, x_o = gin[0], gin[1], gin[2], gin[3]
    for e in range(mask.shape[0]):
        i_ = sigm(r_i[e] + x_i[e])
        f_ = sigm(r_f[e] + x_f[e])
        g_ = tanh_(r_g[e] + x_g[e])
        o_ = sigm(r_o[e] + x_o[e])
        c_t = f_ * c_old[e] + i_ * g_
        v = mask[e]
        # padded rows keep their state (blend, so the loop stays branch-free)
        c_new[e] = v * c_t + (one - v) * c_old[e]
        h_new[e] = v * (o_ * tanh_(c_t)) + (one - v) * h_old[e]
        x_i[e], x_f[e], x_g[e], x_o[e] = v * i_, v * f_, v * g_, v * o_


@njit(cache=True, error_model="numpy")
def _forward_rows(x, panels_ih, gates, h, c, y, panels, b, lengths, reverse, lo, hi):
    """The block's time loop. Per step: the input and recurrent products on the packed W_ih
    and W_hh, the input projection + bias into the step's slot of the block's slab gates
    (T, 4H, C), the flat cell loop (the activated gates stay in the slot), and the cell
    written back."""
    T, H, M = y.shape[0], h.shape[2], hi - lo
    C = gates.shape[2]
    first = T if reverse else 0
    # The block's state and cell transposed (H, C), columns past M zero; a step reads the
    # old buffers and writes the new ones.
    h_old, h_new = np.zeros((H, C), h.dtype), np.zeros((H, C), h.dtype)
    c_old, c_new = np.zeros((H, C), h.dtype), np.zeros((H, C), h.dtype)
    h_old[:, :M] = h[first, lo:hi].T
    c_old[:, :M] = c[first, :, lo:hi]
    rec = np.empty((panels.shape[0] * PANEL, C), h.dtype)  # W_hh @ h_old
    xT = np.zeros((x.shape[2], C), h.dtype)  # the step's inputs, transposed
    pin = np.empty((panels_ih.shape[0] * PANEL, C), h.dtype)  # W_ih @ xT
    mask = np.zeros(H * C, h.dtype)
    valid = np.empty(M, h.dtype)
    n_valid = -1
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = t if reverse else t + 1
        n_valid = fill_masks(valid, mask, lengths, t, lo, n_valid)
        panel_matmul(panels, h_old, rec)
        gin = gates[t]  # the step's input projection + bias, then its activated gates
        project_inputs(gin, x, t, lo, M, panels_ih, xT, pin, b)
        _cells_forward(rec[:4 * H].reshape(4, H * C), gin.reshape(4, H * C), c_old.reshape(H * C),
                       c_new.reshape(H * C), h_old.reshape(H * C), h_new.reshape(H * C), mask)
        put_block(c[cur], c_new, lo, hi)
        store_block_state(h_new[:, :M], valid, h, y, t, cur, lo)
        h_old, h_new = h_new, h_old
        c_old, c_new = c_new, c_old


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_forward(x, h0, c0, w_ih, w_hh, b, lengths, reverse, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), c (T+1, H, N), gates
    (B, T, 4H, C)."""
    T, N, D = x.shape
    H = h0.shape[1]
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    gates = np.empty((nb, T, 4 * H, slab_width(nb, N)), x.dtype)
    h = np.empty((T + 1, N, H), x.dtype)
    c = np.empty((T + 1, H, N), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    first = T if reverse else 0
    h[first] = h0
    c[first] = c0.T
    panels_ih = pack_panels(w_ih, natural_order(4 * H))  # once per call, shared by the threads
    panels = pack_panels(w_hh, natural_order(4 * H))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(x, panels_ih, gates[k], h, c, y, panels, b, lengths, reverse, lo, hi)
    return y, h, c, gates


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _cells_backward(act, c_cur, c_prev, dh, dc, dg, mask):
    """Gate pre-activation gradients dg (4, H*C) of every unit of the block at step t from the
    activated gates act (4, H*C, zero on padding) and the cells; dc (H*C) becomes the cell
    gradient passed to step t-1. Flat, like _cells_forward."""
    one = unit(dg)
    i_, f_, g_, o_ = act[0], act[1], act[2], act[3]
    di, df, dgg, do = dg[0], dg[1], dg[2], dg[3]
    for e in range(mask.shape[0]):
        tc = tanh_(c_cur[e])
        dh_t = dh[e]
        dc_t = dc[e] + dh_t * o_[e] * (one - tc * tc)
        do[e] = dh_t * tc * o_[e] * (one - o_[e])  # gates are zero on padding
        di[e] = dc_t * g_[e] * i_[e] * (one - i_[e])
        dgg[e] = dc_t * i_[e] * (one - g_[e] * g_[e])
        df[e] = dc_t * c_prev[e] * f_[e] * (one - f_[e])
        dc[e] = mask[e] * dc_t * f_[e] + (one - mask[e]) * dc[e]


@njit(cache=True, error_model="numpy")
def _backward_rows(dgates, dh, dc, c, gates, panels_t, lengths, reverse, dy, lo, hi):
    # gates: the block's slab (T, 4H, C) of activated gates from the forward
    T, H, M = dy.shape[0], dy.shape[2], hi - lo
    C = gates.shape[2]
    dhT = np.zeros((H, C), c.dtype)  # gradient reaching the carried state; columns past M 0
    dcT = np.zeros((H, C), c.dtype)
    dhT[:, :M] = dh[lo:hi].T
    dcT[:, :M] = dc[lo:hi].T
    c_cur, c_prev = np.zeros((H, C), c.dtype), np.zeros((H, C), c.dtype)
    dg = np.zeros((4 * H, C), c.dtype)  # gate pre-activation gradients; columns past M stay 0
    d_prev = np.empty((panels_t.shape[0] * PANEL, C), c.dtype)  # W_hh.T @ dg
    mask = np.zeros(H * C, c.dtype)
    valid = np.empty(M, c.dtype)
    n_valid = -1
    for s in range(T):
        t = s if reverse else T - 1 - s  # the opposite order of the forward sweep
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        n_valid = fill_masks(valid, mask, lengths, t, lo, n_valid)
        add_transposed(dhT, dy, t, lo, valid)
        act = gates[t]
        if s == 0:
            get_block(c_cur, c[cur], lo, hi)
        else:  # this step's cell is the one the step after it started from
            c_cur, c_prev = c_prev, c_cur
        get_block(c_prev, c[prev], lo, hi)
        _cells_backward(act.reshape(4, H * C), c_cur.reshape(H * C), c_prev.reshape(H * C),
                        dhT.reshape(H * C), dcT.reshape(H * C), dg.reshape(4, H * C), mask)
        scatter_rows(dgates, dg, t, lo, hi)
        panel_matmul(panels_t, dg, d_prev)
        blend_rows(dhT, d_prev, valid)
    dh[lo:hi] = dhT[:, :M].T
    dc[lo:hi] = dcT[:, :M].T


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_backward(x, w_ih, w_hh, h, c, gates, lengths, reverse, dy, dh_n, dc_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0, dc0 (N, H), dw_ih (4H, D), dw_hh (4H, H), db (4H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dgates = np.empty((4 * H, T, N), x.dtype)  # gradients of the gate pre-activations
    dh = dh_n.copy()  # gradient reaching the carried state; dh0 on return
    dc = dc_n.copy()
    panels_t = pack_panels(np.ascontiguousarray(w_hh.T), natural_order(H))  # W_hh.T, packed once
    nb = gates.shape[0]  # the recurrence keeps the forward's row blocks (their slabs)
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dgates, dh, dc, c, gates[k], panels_t, lengths, reverse, dy, lo, hi)
    nb = max(1, min(nthreads, N))
    dg2 = dgates.reshape(4 * H, T * N)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)  # the states that fed each step
    dw_ih = np.empty((4 * H, D), x.dtype)
    dw_hh = np.empty((4 * H, H), x.dtype)
    db = np.empty(4 * H, x.dtype)
    dx2 = np.empty((T * N if need_dx else 0, D), x.dtype)
    for k in prange(nb):  # weight gradients summed over time: one GEMM each, split by rows
        weight_grads_block(dg2, x.reshape(T * N, D), h_in, w_ih, dw_ih, dw_hh, db, dx2, k, nb, need_dx)
    dx = dx2.reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dc, dw_ih, dw_hh, db
