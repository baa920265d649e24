"""LSTM layer over a whole sequence, one direction: forward and backward (BPTT).

Shapes (time-major so that each step's state block is one contiguous (N, H) matrix for
the recurrent GEMM):
  x      (T, N, D)     inputs
  w_ih   (4H, D)       PyTorch layout, gate order i, f, g, o
  w_hh   (4H, H)
  b      (4H,)         b_ih + b_hh (they always appear summed)
  lengths (N,) int64   valid steps per example; states freeze and outputs are zero past it
Saved for backward:
  h, c   (T+1, N, H)   state chain in time order. Forward: slot t+1 holds the state after
                       step t and slot 0 the initial state; reverse: slot t after step t and
                       slot T the initial state. Either way the states that feed the steps
                       form one contiguous (T*N, H) block, so dW_hh is a single GEMM.
  gates  (T, N, 4H)    activated i, f, g, o (zero on padding)
Memory: (2(T+1)H + 5TH) N floats; T=100, N=32, H=256: 16 MB in float32.
Threads: each Numba thread owns a block of batch rows for the whole time loop (see blas.py).
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import block, gemm_rows, gemm_tn_partial, colsum_partial


@njit(cache=True, error_model="numpy")
def _forward_rows(gates, h, c, y, w_hh, b, lengths, reverse, lo, hi):
    # The gate arithmetic is split into short loops over 1-D rows, each touching few
    # arrays: LLVM then vectorizes them (one fused loop over ten arrays stayed scalar).
    T = y.shape[0]
    H = h.shape[2]
    rec = np.empty((hi - lo, 4 * H), h.dtype)  # h_{t-1} W_hh^T for these rows
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        np.dot(h[prev, lo:hi], w_hh.T, rec)
        for n in range(lo, hi):
            g_row = gates[t, n]  # (4H,) input projection in, activated gates out
            if t >= lengths[n]:
                g_row[:] = 0.0
                c[cur, n] = c[prev, n]
                h[cur, n] = h[prev, n]
                y[t, n] = 0.0
                continue
            r_row = rec[n - lo]
            for k in range(4 * H):
                g_row[k] += r_row[k] + b[k]
            for k in range(2 * H):
                g_row[k] = sigm(g_row[k])  # i, f
            for k in range(2 * H, 3 * H):
                g_row[k] = tanh_(g_row[k])  # g
            for k in range(3 * H, 4 * H):
                g_row[k] = sigm(g_row[k])  # o
            i_, f_, g_, o_ = g_row[:H], g_row[H:2 * H], g_row[2 * H:3 * H], g_row[3 * H:]
            c_prev, c_cur, h_cur, y_t = c[prev, n], c[cur, n], h[cur, n], y[t, n]
            for j in range(H):
                c_cur[j] = f_[j] * c_prev[j] + i_[j] * g_[j]
            for j in range(H):
                h_cur[j] = o_[j] * tanh_(c_cur[j])
            y_t[:] = h_cur


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_forward(x, h0, c0, w_ih, w_hh, b, lengths, reverse, nthreads):
    """Returns y (T, N, H) and what backward needs: h, c (T+1, N, H), gates (T, N, 4H)."""
    T, N, D = x.shape
    H = h0.shape[1]
    gates = np.empty((T, N, 4 * H), x.dtype)
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):  # input projection of all steps at once
        gemm_rows(x.reshape(T * N, D), w_ih.T, gates.reshape(T * N, 4 * H), k, nb)
    h = np.empty((T + 1, N, H), x.dtype)
    c = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    first = T if reverse else 0
    h[first] = h0
    c[first] = c0
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(gates, h, c, y, w_hh, b, lengths, reverse, lo, hi)
    return y, h, c, gates


@njit(cache=True, error_model="numpy")
def _backward_rows(dgates, dh, dc, h, c, gates, w_hh, lengths, reverse, dy, lo, hi):
    T = dy.shape[0]
    H = h.shape[2]
    one = unit(h)
    dh_rec = np.empty((hi - lo, H), h.dtype)
    dh_t = np.empty(H, h.dtype)  # total gradient reaching h_t
    dc_t = np.empty(H, h.dtype)  # total gradient reaching c_t
    for s in range(T):
        t = s if reverse else T - 1 - s  # the opposite order of the forward sweep
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        for n in range(lo, hi):
            dg = dgates[t, n]
            if t >= lengths[n]:
                dg[:] = 0.0  # padding: the carried gradients pass through unchanged
                continue
            g_row = gates[t, n]
            i_, f_, g_, o_ = g_row[:H], g_row[H:2 * H], g_row[2 * H:3 * H], g_row[3 * H:]
            di, df, dgg, do = dg[:H], dg[H:2 * H], dg[2 * H:3 * H], dg[3 * H:]
            dh_n, dc_n, dy_t, c_cur, c_prev = dh[n], dc[n], dy[t, n], c[cur, n], c[prev, n]
            for j in range(H):
                dh_t[j] = dh_n[j] + dy_t[j]
            for j in range(H):
                tc = tanh_(c_cur[j])
                do[j] = dh_t[j] * tc * o_[j] * (one - o_[j])
                dc_t[j] = dc_n[j] + dh_t[j] * o_[j] * (one - tc * tc)
            for j in range(H):
                di[j] = dc_t[j] * g_[j] * i_[j] * (one - i_[j])
                dgg[j] = dc_t[j] * i_[j] * (one - g_[j] * g_[j])
            for j in range(H):
                df[j] = dc_t[j] * c_prev[j] * f_[j] * (one - f_[j])
                dc_n[j] = dc_t[j] * f_[j]
        np.dot(dgates[t, lo:hi], w_hh, dh_rec)
        for n in range(lo, hi):
            if t < lengths[n]:
                dh[n] = dh_rec[n - lo]


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_backward(x, w_ih, w_hh, h, c, gates, lengths, reverse, dy, dh_n, dc_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0, dc0 (N, H), dw_ih (4H, D), dw_hh (4H, H), db (4H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dgates = np.empty((T, N, 4 * H), x.dtype)  # gradients of the gate pre-activations
    dh = dh_n.copy()  # gradient reaching the state carried into the next step
    dc = dc_n.copy()
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dgates, dh, dc, h, c, gates, w_hh, lengths, reverse, dy, lo, hi)
    dg2 = dgates.reshape(T * N, 4 * H)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)  # the states that fed each step
    x2 = x.reshape(T * N, D)
    p_ih = np.empty((nb, 4 * H, D), x.dtype)  # per-thread partial sums over time
    p_hh = np.empty((nb, 4 * H, H), x.dtype)
    p_b = np.empty((nb, 4 * H), x.dtype)
    dx = np.empty((T, N, D) if need_dx else (0, N, D), x.dtype)
    dx2 = dx.reshape(dx.shape[0] * N, D)
    for k in prange(nb):
        gemm_tn_partial(dg2, x2, p_ih[k], k, nb)
        gemm_tn_partial(dg2, h_in, p_hh[k], k, nb)
        colsum_partial(dg2, p_b[k], k, nb)
        if need_dx:
            gemm_rows(dg2, w_ih, dx2, k, nb)
    return dx, dh, dc, p_ih.sum(axis=0), p_hh.sum(axis=0), p_b.sum(axis=0)
