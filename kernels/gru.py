"""GRU layer over a whole sequence, one direction: forward and backward (BPTT).

Gate order r, z, n (PyTorch). Two forms:
  reset_after=True  (cuDNN / PyTorch / Keras): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  reset_after=False (classic):                 n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
  h_t = (1 - z) * n + z * h_{t-1}
Shapes (time-major, state chain layout as in lstm.py):
  x (T, N, D); w_ih (3H, D); w_hh (3H, H); b_ih, b_hh (3H,); lengths (N,) int64
Saved for backward:
  h      (T+1, N, H)  state chain
  gates  (T, N, 3H)   activated r, z, n (zero on padding)
  hn     (T, N, H)    reset_after: W_hn h + b_hn; classic: r * h_{t-1} (the input of W_hn)
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import block, gemm_rows, gemm_tn_partial, colsum_partial


@njit(cache=True, error_model="numpy")
def _forward_rows(gates, hn, h, y, w_hh, b_ih, b_hh, lengths, reverse, reset_after, lo, hi):
    T = y.shape[0]
    H = h.shape[2]
    one = unit(h)
    w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]
    rec = np.empty((hi - lo, 3 * H if reset_after else 2 * H), h.dtype)  # h_{t-1} W_h^T
    rec_n = np.empty((hi - lo, H), h.dtype)  # classic form: (r * h_{t-1}) W_hn^T
    for s in range(T):
        t = T - 1 - s if reverse else s
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        np.dot(h[prev, lo:hi], (w_hh if reset_after else w_hrz).T, rec)
        for n in range(lo, hi):
            g_row, r_row, hn_row, h_prev = gates[t, n], rec[n - lo], hn[t, n], h[prev, n]
            if t >= lengths[n]:
                g_row[:] = 0.0
                hn_row[:] = 0.0
                continue
            for k in range(2 * H):
                g_row[k] = sigm(g_row[k] + b_ih[k] + r_row[k] + b_hh[k])  # r, z
            if reset_after:
                for j in range(H):
                    hn_row[j] = r_row[2 * H + j] + b_hh[2 * H + j]
            else:
                for j in range(H):
                    hn_row[j] = g_row[j] * h_prev[j]
        if not reset_after:
            # W_hn needs r * h first, so the classic form takes a second GEMM per step.
            np.dot(hn[t, lo:hi], w_hn.T, rec_n)
        for n in range(lo, hi):
            g_row, hn_row, h_prev, h_cur = gates[t, n], hn[t, n], h[prev, n], h[cur, n]
            if t >= lengths[n]:
                h_cur[:] = h_prev
                y[t, n] = 0.0
                continue
            if reset_after:
                for j in range(H):
                    g_row[2 * H + j] = tanh_(g_row[2 * H + j] + b_ih[2 * H + j] + g_row[j] * hn_row[j])
            else:
                rn = rec_n[n - lo]
                for j in range(H):
                    g_row[2 * H + j] = tanh_(g_row[2 * H + j] + b_ih[2 * H + j] + rn[j] + b_hh[2 * H + j])
            for j in range(H):
                z_ = g_row[H + j]
                h_cur[j] = (one - z_) * g_row[2 * H + j] + z_ * h_prev[j]
            y[t, n] = h_cur


@njit(parallel=True, cache=True, error_model="numpy")
def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), gates (T, N, 3H), hn (T, N, H)."""
    T, N, D = x.shape
    H = h0.shape[1]
    gates = np.empty((T, N, 3 * H), x.dtype)
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):  # input projection of all steps at once
        gemm_rows(x.reshape(T * N, D), w_ih.T, gates.reshape(T * N, 3 * H), k, nb)
    hn = np.empty((T, N, H), x.dtype)
    h = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(gates, hn, h, y, w_hh, b_ih, b_hh, lengths, reverse, reset_after, lo, hi)
    return y, h, gates, hn


@njit(cache=True, error_model="numpy")
def _backward_rows(dgx, dgh, dh, h, gates, hn, w_hh, lengths, reverse, dy, reset_after, lo, hi):
    # dgx: gradients of the input-side pre-activations (for W_ih, b_ih, x);
    # dgh: of the hidden-side ones (for W_hh, b_hh). They differ only in the n block.
    T = dy.shape[0]
    H = h.shape[2]
    one = unit(h)
    w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]
    dh_rec = np.empty((hi - lo, H), h.dtype)
    dn_blk = np.empty((hi - lo, H), h.dtype)  # classic: dn_pre rows, contiguous for the GEMM
    d_rh = np.empty((hi - lo, H), h.dtype)  # classic: gradient of r * h_{t-1}
    drz_blk = np.empty((hi - lo, 2 * H), h.dtype)
    dh_t = np.empty(H, h.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        for n in range(lo, hi):
            gx, gh = dgx[t, n], dgh[t, n]
            if t >= lengths[n]:
                gx[:] = 0.0
                gh[:] = 0.0
                dn_blk[n - lo] = 0.0
                continue
            g_row, hn_row, h_prev, dh_n, dy_t = gates[t, n], hn[t, n], h[prev, n], dh[n], dy[t, n]
            for j in range(H):
                dh_t[j] = dh_n[j] + dy_t[j]
            for j in range(H):
                r_, z_, n_ = g_row[j], g_row[H + j], g_row[2 * H + j]
                dn_pre = dh_t[j] * (one - z_) * (one - n_ * n_)
                gx[H + j] = dh_t[j] * (h_prev[j] - n_) * z_ * (one - z_)
                gx[2 * H + j] = dn_pre
                dh_n[j] = dh_t[j] * z_  # direct path; the GEMM terms are added below
                if reset_after:
                    gx[j] = dn_pre * hn_row[j] * r_ * (one - r_)
                    gh[2 * H + j] = dn_pre * r_
                else:
                    gh[2 * H + j] = dn_pre
            dn_blk[n - lo] = gx[2 * H:]
        if not reset_after:
            np.dot(dn_blk, w_hn, d_rh)
            for n in range(lo, hi):
                if t < lengths[n]:
                    gx, g_row, h_prev, dh_n, drh = dgx[t, n], gates[t, n], h[prev, n], dh[n], d_rh[n - lo]
                    for j in range(H):
                        r_ = g_row[j]
                        gx[j] = drh[j] * h_prev[j] * r_ * (one - r_)
                        dh_n[j] += drh[j] * r_
        for n in range(lo, hi):
            gx, gh = dgx[t, n], dgh[t, n]
            gh[:2 * H] = gx[:2 * H]  # r and z blocks are the same on both sides
            drz_blk[n - lo] = gx[:2 * H]
        if reset_after:
            np.dot(dgh[t, lo:hi], w_hh, dh_rec)
        else:
            np.dot(drz_blk, w_hrz, dh_rec)
        for n in range(lo, hi):
            if t < lengths[n]:
                dh[n] += dh_rec[n - lo]


@njit(parallel=True, cache=True, error_model="numpy")
def gru_backward(x, w_ih, w_hh, h, gates, hn, lengths, reverse, reset_after, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (3H, D), dw_hh (3H, H), db_ih, db_hh (3H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dgx = np.empty((T, N, 3 * H), x.dtype)
    dgh = np.empty((T, N, 3 * H), x.dtype)
    dh = dh_n.copy()
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dgx, dgh, dh, h, gates, hn, w_hh, lengths, reverse, dy, reset_after, lo, hi)
    gx2 = dgx.reshape(T * N, 3 * H)
    gh2 = dgh.reshape(T * N, 3 * H)
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)
    hn2 = hn.reshape(T * N, H)
    x2 = x.reshape(T * N, D)
    p_ih = np.empty((nb, 3 * H, D), x.dtype)  # per-thread partial sums over time
    p_hh = np.empty((nb, 3 * H, H), x.dtype)
    p_hn = np.empty((nb if not reset_after else 0, 3 * H, H), x.dtype)
    p_bi = np.empty((nb, 3 * H), x.dtype)
    p_bh = np.empty((nb, 3 * H), x.dtype)
    dx = np.empty((T, N, D) if need_dx else (0, N, D), x.dtype)
    dx2 = dx.reshape(dx.shape[0] * N, D)
    for k in prange(nb):
        gemm_tn_partial(gx2, x2, p_ih[k], k, nb)
        gemm_tn_partial(gh2, h_in, p_hh[k], k, nb)
        if not reset_after:
            # The n block of W_hh multiplies r * h, not h: one more GEMM (it also computes
            # the unused r, z rows, which keeps every operand contiguous).
            gemm_tn_partial(gh2, hn2, p_hn[k], k, nb)
        colsum_partial(gx2, p_bi[k], k, nb)
        colsum_partial(gh2, p_bh[k], k, nb)
        if need_dx:
            gemm_rows(gx2, w_ih, dx2, k, nb)
    dw_hh = p_hh.sum(axis=0)
    if not reset_after:
        dw_hh[2 * H:] = p_hn.sum(axis=0)[2 * H:]
    return dx, dh, p_ih.sum(axis=0), dw_hh, p_bi.sum(axis=0), p_bh.sum(axis=0)
