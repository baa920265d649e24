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
  c       (T+1, H, N)   cell chain, same slots, gate-major like the gates
  gates   (4H, T, N)    activated i, f, g, o (zero on padding)
Threads: each Numba thread owns a block of M batch rows for the whole time loop and keeps
their state transposed, hT (H, C) with C = M rounded up to whole vector registers. The
recurrent product runs on W_hh packed once per call (kernels/tiles.py): a panel holds the
four gate rows of PANEL/4 hidden units, so each tile's epilogue finishes those units' step
(activations, cell, state) straight from the accumulators; the backward's W_hh.T @ dG runs
on W_hh.T packed the same way. Gate-major buffers make the gate arithmetic contiguous over
the M rows, so it vectorizes; every large GEMM stays one BLAS call per thread block.
Memory: ((T+1)2H + 5TH) N floats; T=100, N=32, H=256: 16 MB in float32.
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import (add_transposed, blend_rows, block, fill_valid, gemm_rows, store_block_state,
                                  weight_grads_block)
from seqtool.kernels.tiles import PANEL, natural_order, pack_panels, padded, panel_matmul, panel_tile, unit_order

UNITS = PANEL // 4  # hidden units per panel of the packed W_hh (their 4 gate rows each)


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _unit_step(acc, u, j, gates, t, lo, b, c_prev, c_cur, h_old, h_new, valid):
    """The tile's epilogue for hidden unit j (acc rows u, 2+u, 4+u, 6+u hold its four gates'
    recurrent products): activations, cell and state update, the activated gates saved in
    place of the input projection. Nothing else ever holds the pre-activations."""
    H, M = h_old.shape[0], valid.shape[0]
    one = unit(acc)
    x_i, x_f, x_g, x_o = gates[j, t, lo:lo + M], gates[H + j, t, lo:lo + M], gates[2 * H + j, t, lo:lo + M], gates[3 * H + j, t, lo:lo + M]
    a_i, a_f, a_g, a_o = acc[u], acc[UNITS + u], acc[2 * UNITS + u], acc[3 * UNITS + u]
    b_i, b_f, b_g, b_o = b[j], b[H + j], b[2 * H + j], b[3 * H + j]
    old, new = h_old[j], h_new[j]
    for m in range(M):
        i_ = sigm(a_i[m] + x_i[m] + b_i)
        f_ = sigm(a_f[m] + x_f[m] + b_f)
        g_ = tanh_(a_g[m] + x_g[m] + b_g)
        o_ = sigm(a_o[m] + x_o[m] + b_o)
        c_new = f_ * c_prev[m] + i_ * g_
        v = valid[m]
        # padded rows keep their state (blend, so the loop stays branch-free)
        c_cur[m] = v * c_new + (one - v) * c_prev[m]
        new[m] = v * (o_ * tanh_(c_new)) + (one - v) * old[m]
        x_i[m], x_f[m], x_g[m], x_o[m] = v * i_, v * f_, v * g_, v * o_  # zero on padding


@njit(cache=True, error_model="numpy")
def _forward_rows(gates, h, c, y, panels, b, lengths, reverse, lo, hi):
    T, H, M = y.shape[0], h.shape[2], hi - lo
    C = padded(M)
    one = unit(h)
    first = T if reverse else 0
    # The block's state transposed (H, C), columns past M zero; the tiles of a step read
    # h_old while their epilogues write h_new.
    h_old = np.zeros((H, C), h.dtype)
    h_new = np.zeros((H, C), h.dtype)
    h_old[:, :M] = h[first, lo:hi].T
    acc = np.empty((PANEL, C), h.dtype)
    valid = np.empty(M, h.dtype)
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        fill_valid(valid, lengths, t, lo, one)
        for p in range(panels.shape[0]):
            panel_tile(panels[p], h_old, acc)
            for u in range(UNITS):
                j = p * UNITS + u
                if j < H:
                    _unit_step(acc, u, j, gates, t, lo, b, c[prev, j, lo:hi], c[cur, j, lo:hi], h_old, h_new, valid)
        store_block_state(h_new[:, :M], valid, h, y, t, cur, lo)
        h_old, h_new = h_new, h_old


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_forward(x, h0, c0, w_ih, w_hh, b, lengths, reverse, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), c (T+1, H, N), gates (4H, T, N)."""
    T, N, D = x.shape
    H = h0.shape[1]
    gates = np.empty((4 * H, T, N), x.dtype)
    x2 = x.reshape(T * N, D)
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):  # input projection of all steps at once, gate-major
        gemm_rows(w_ih, x2.T, gates.reshape(4 * H, T * N), k, nb)
    h = np.empty((T + 1, N, H), x.dtype)
    c = np.empty((T + 1, H, N), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    first = T if reverse else 0
    h[first] = h0
    c[first] = c0.T
    panels = pack_panels(w_hh, unit_order(H, 4))  # once per call, shared by the threads
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(gates, h, c, y, panels, b, lengths, reverse, lo, hi)
    return y, h, c, gates


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _unit_grad(j, t, lo, gates, c_cur, c_prev, dh_j, dc_j, dg, dgates, valid):
    """Gate pre-activation gradients of hidden unit j at step t (rows j, H+j, 2H+j, 3H+j of
    dg, and of dgates at step t); dc_j becomes the cell gradient passed to step t-1."""
    H, M = dg.shape[0] // 4, valid.shape[0]
    one = unit(dg)
    i_, f_, g_, o_ = gates[j, t, lo:lo + M], gates[H + j, t, lo:lo + M], gates[2 * H + j, t, lo:lo + M], gates[3 * H + j, t, lo:lo + M]
    di, df, dgg, do = dg[j], dg[H + j], dg[2 * H + j], dg[3 * H + j]
    si, sf, sg, so = dgates[j, t, lo:lo + M], dgates[H + j, t, lo:lo + M], dgates[2 * H + j, t, lo:lo + M], dgates[3 * H + j, t, lo:lo + M]
    for m in range(M):
        tc = tanh_(c_cur[m])
        dh_t = dh_j[m]
        dc_t = dc_j[m] + dh_t * o_[m] * (one - tc * tc)
        d_o = dh_t * tc * o_[m] * (one - o_[m])  # gates are zero on padding
        d_i = dc_t * g_[m] * i_[m] * (one - i_[m])
        d_g = dc_t * i_[m] * (one - g_[m] * g_[m])
        d_f = dc_t * c_prev[m] * f_[m] * (one - f_[m])
        di[m], df[m], dgg[m], do[m] = d_i, d_f, d_g, d_o
        si[m], sf[m], sg[m], so[m] = d_i, d_f, d_g, d_o
        dc_j[m] = valid[m] * dc_t * f_[m] + (one - valid[m]) * dc_j[m]


@njit(cache=True, error_model="numpy")
def _backward_rows(dgates, dh, dc, c, gates, panels_t, lengths, reverse, dy, lo, hi):
    T, H, M = dy.shape[0], dy.shape[2], hi - lo
    C = padded(M)
    one = unit(c)
    dhT = np.ascontiguousarray(dh[lo:hi].T)  # (H, M) gradient reaching the carried state
    dcT = np.ascontiguousarray(dc[lo:hi].T)
    dg = np.zeros((4 * H, C), c.dtype)  # gate pre-activation gradients; columns past M stay 0
    d_prev = np.empty((panels_t.shape[0] * PANEL, C), c.dtype)  # W_hh.T @ dg
    valid = np.empty(M, c.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s  # the opposite order of the forward sweep
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        fill_valid(valid, lengths, t, lo, one)
        add_transposed(dhT, dy, t, lo, valid)
        for j in range(H):
            _unit_grad(j, t, lo, gates, c[cur, j, lo:hi], c[prev, j, lo:hi], dhT[j], dcT[j], dg, dgates, valid)
        panel_matmul(panels_t, dg, d_prev)
        blend_rows(dhT, d_prev, valid)
    dh[lo:hi] = dhT.T
    dc[lo:hi] = dcT.T


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_backward(x, w_ih, w_hh, h, c, gates, lengths, reverse, dy, dh_n, dc_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0, dc0 (N, H), dw_ih (4H, D), dw_hh (4H, H), db (4H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dgates = np.empty((4 * H, T, N), x.dtype)  # gradients of the gate pre-activations
    dh = dh_n.copy()  # gradient reaching the carried state; dh0 on return
    dc = dc_n.copy()
    panels_t = pack_panels(np.ascontiguousarray(w_hh.T), natural_order(H))  # W_hh.T, packed once
    nb = max(1, min(nthreads, N))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dgates, dh, dc, c, gates, panels_t, lengths, reverse, dy, lo, hi)
    dg2 = dgates.reshape(4 * H, T * N)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)  # the states that fed each step
    dw_ih = np.empty((4 * H, D), x.dtype)
    dw_hh = np.empty((4 * H, H), x.dtype)
    db = np.empty(4 * H, x.dtype)
    dx_parts = np.empty((nb if need_dx else 0, T * N, D), x.dtype)  # split over the 4H sum
    for k in prange(nb):  # weight gradients summed over time: one GEMM each, split by rows
        weight_grads_block(dg2, x.reshape(T * N, D), h_in, w_ih, dw_ih, dw_hh, db, dx_parts, k, k, nb,
                           need_dx)
    dx = dx_parts.sum(axis=0).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dc, dw_ih, dw_hh, db
