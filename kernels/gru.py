"""GRU layer over a whole sequence, one direction: forward and backward (BPTT).

Gate order r, z, n (PyTorch). Two forms:
  reset_after=True  (cuDNN / PyTorch / Keras): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  reset_after=False (classic):                 n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
  h_t = (1 - z) * n + z * h_{t-1}
Shapes: x (T, N, D); w_ih (3H, D); w_hh (3H, H); b_ih, b_hh (3H,); lengths (N,) int64.
Saved for backward (layouts and thread blocks as in lstm.py):
  h      (T+1, N, H)  state chain
  gates  (3H, T, N)   activated r, z, n (zero on padding)
  hn     (H, T, N)    reset_after: W_hn h + b_hn; classic: r * h_{t-1} (the input of W_hn)
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import (add_transposed, block, fill_valid, gemm_rows, gemm_tn_partial, load_transposed,
                                  rowsum_block, store_block_state)
from seqtool.kernels.tiles import PANEL, natural_order, pack_panels, padded, panel_matmul


@njit(cache=True, error_model="numpy")
def _forward_rows(gates, hn, h, y, panels, panels_n, b_ih, b_hh, lengths, reverse, reset_after, lo, hi):
    # panels: W_hh packed (reset_after) or its r, z rows (classic); panels_n: classic's W_hn.
    T, H, M = y.shape[0], h.shape[2], hi - lo
    C = padded(M)
    one = unit(h)
    hT = np.zeros((H, C), h.dtype)  # (H, M) block state, zero columns up to C
    hT[:, :M] = h[T if reverse else 0, lo:hi].T
    pre = np.empty((max(3 * H, panels.shape[0] * PANEL), C), h.dtype)  # products, then activated gates
    pn = np.empty((panels_n.shape[0] * PANEL, C), h.dtype)  # classic form: W_hn @ (r * h)
    rh = np.zeros((H, C), h.dtype)  # classic form: r * h_{t-1}
    valid = np.empty(M, h.dtype)
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = t if reverse else t + 1
        fill_valid(valid, lengths, t, lo, one)
        panel_matmul(panels, hT, pre[:panels.shape[0] * PANEL])
        for k in range(2 * H):  # r, z
            row, g_in, bk = pre[k], gates[k, t, lo:hi], b_ih[k] + b_hh[k]
            for m in range(M):
                row[m] = sigm(row[m] + g_in[m] + bk)
                g_in[m] = valid[m] * row[m]  # saved in place of the input projection, zero on padding
        if reset_after:
            for j in range(H):
                row, r_, hn_j, bh = pre[2 * H + j], pre[j], hn[j, t, lo:hi], b_hh[2 * H + j]
                for m in range(M):
                    hn_j[m] = row[m] + bh
                    row[m] = r_[m] * hn_j[m]  # r * (W_hn h + b_hn)
        else:
            for j in range(H):
                r_, h_j, rh_j, hn_j = pre[j], hT[j], rh[j], hn[j, t, lo:hi]
                for m in range(M):
                    rh_j[m] = r_[m] * h_j[m]
                    hn_j[m] = rh_j[m]
            panel_matmul(panels_n, rh, pn)  # W_n needs r * h first: a second product per step
            for j in range(H):
                row, p_j, bh = pre[2 * H + j], pn[j], b_hh[2 * H + j]
                for m in range(M):
                    row[m] = p_j[m] + bh
        for j in range(H):
            z_, n_, g_in, h_j, bi = pre[H + j], pre[2 * H + j], gates[2 * H + j, t, lo:hi], hT[j], b_ih[2 * H + j]
            for m in range(M):
                n_[m] = tanh_(g_in[m] + bi + n_[m])
                g_in[m] = valid[m] * n_[m]
                h_new = (one - z_[m]) * n_[m] + z_[m] * h_j[m]
                h_j[m] = valid[m] * h_new + (one - valid[m]) * h_j[m]  # padding: frozen
        store_block_state(hT[:, :M], valid, h, y, t, cur, lo)


@njit(parallel=True, cache=True, error_model="numpy")
def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), gates (3H, T, N), hn (H, T, N)."""
    T, N, D = x.shape
    H = h0.shape[1]
    gates = np.empty((3 * H, T, N), x.dtype)
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    for k in prange(nb):  # input projection of all steps at once, gate-major
        gemm_rows(w_ih, x.reshape(T * N, D).T, gates.reshape(3 * H, T * N), k, nb)
    hn = np.empty((H, T, N), x.dtype)
    h = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    # W_hh packed once per call (kernels/tiles.py); classic keeps W_hn apart (it multiplies r * h)
    panels = pack_panels(w_hh, natural_order(3 * H if reset_after else 2 * H))
    panels_n = pack_panels(w_hh[2 * H:], natural_order(0 if reset_after else H))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(gates, hn, h, y, panels, panels_n, b_ih, b_hh, lengths, reverse, reset_after, lo, hi)
    return y, h, gates, hn


@njit(cache=True, error_model="numpy")
def _backward_rows(dgx, dgh, dh, h, gates, hn, panels_t, panels_rz_t, panels_n_t, lengths, reverse, dy, reset_after,
                   lo, hi):
    # dgx: gradients of the input-side pre-activations (for W_ih, b_ih, x); dgh: of the
    # hidden-side ones (for W_hh, b_hh). They differ only in the n block (reset_after).
    # panels_t: W_hh.T packed (reset_after); panels_rz_t, panels_n_t: classic's two parts.
    T, H, M = dy.shape[0], dy.shape[2], hi - lo
    C = padded(M)
    one = unit(h)
    dhT = np.zeros((H, C), h.dtype)  # (H, M) gradient reaching the carried state
    dhT[:, :M] = dh[lo:hi].T
    gx = np.zeros((3 * H, C), h.dtype)  # columns past M stay zero: the products' padding
    gh = np.zeros((3 * H, C), h.dtype)
    direct = np.empty((H, M), h.dtype)  # dh_t * z, the path that skips the gates
    h_prev = np.empty((H, C), h.dtype)  # the state that fed step t, transposed
    d_prev = np.empty((max(panels_t.shape[0], panels_rz_t.shape[0]) * PANEL, C), h.dtype)
    d_rh = np.empty((panels_n_t.shape[0] * PANEL, C), h.dtype)
    valid = np.empty(M, h.dtype)
    for s in range(T):
        t = s if reverse else T - 1 - s
        prev = t + 1 if reverse else t
        fill_valid(valid, lengths, t, lo, one)
        add_transposed(dhT, dy, t, lo, valid)
        load_transposed(h_prev, h, prev, lo, M)
        for j in range(H):
            r_, z_, n_ = gates[j, t, lo:hi], gates[H + j, t, lo:hi], gates[2 * H + j, t, lo:hi]
            hn_j, dh_j, dir_j, hp_j = hn[j, t, lo:hi], dhT[j], direct[j], h_prev[j]
            gx_r, gx_z, gx_n, gh_r, gh_z, gh_n = gx[j], gx[H + j], gx[2 * H + j], gh[j], gh[H + j], gh[2 * H + j]
            # the step's gradients also go straight to the gate-major stores (no second pass)
            sx_r, sx_z, sx_n = dgx[j, t, lo:hi], dgx[H + j, t, lo:hi], dgx[2 * H + j, t, lo:hi]
            sh_n = dgh[j, t, lo:hi] if reset_after else sx_n
            for m in range(M):
                dh_t = dh_j[m]
                dn_pre = valid[m] * dh_t * (one - z_[m]) * (one - n_[m] * n_[m])
                dz = dh_t * (hp_j[m] - n_[m]) * z_[m] * (one - z_[m])
                gx_z[m] = dz
                gx_n[m] = dn_pre
                sx_z[m] = dz
                sx_n[m] = dn_pre
                dir_j[m] = dh_t * z_[m]
                if reset_after:  # the hidden side shares r, z; its n row carries the reset
                    dr = dn_pre * hn_j[m] * r_[m] * (one - r_[m])
                    gx_r[m] = dr
                    gh_r[m] = dr
                    gh_z[m] = dz
                    gh_n[m] = dn_pre * r_[m]
                    sx_r[m] = dr
                    sh_n[m] = dn_pre * r_[m]
        if reset_after:
            panel_matmul(panels_t, gh, d_prev)
        else:
            panel_matmul(panels_n_t, gx[2 * H:], d_rh)
            for j in range(H):
                r_, d_j, dir_j, hp_j, gx_r, sx_r = gates[j, t, lo:hi], d_rh[j], direct[j], h_prev[j], gx[j], dgx[j, t, lo:hi]
                for m in range(M):
                    dr = d_j[m] * hp_j[m] * r_[m] * (one - r_[m])
                    gx_r[m] = dr
                    sx_r[m] = dr
                    dir_j[m] += d_j[m] * r_[m]
            panel_matmul(panels_rz_t, gx[:2 * H], d_prev)
        for j in range(H):
            dh_j, dir_j, dp = dhT[j], direct[j], d_prev[j]
            for m in range(M):
                dh_j[m] = valid[m] * (dir_j[m] + dp[m]) + (one - valid[m]) * dh_j[m]
    dh[lo:hi] = dhT[:, :M].T


@njit(cache=True)
def weight_grads(x, w_ih, h, hn, dgx, dgh, reverse, reset_after, dw_ih, dw_hh, db_ih, db_hh, dx_part, need_dx,
                 k, nb):
    """Block k of nb of the weight and bias gradients (summed over time: one GEMM each) and of
    dx's partial sum, from the gate gradients dgx (input side) and dgh (reset_after's n rows)."""
    T, N, D = x.shape
    H = h.shape[2]
    gx2 = dgx.reshape(3 * H, T * N)
    gn2 = dgh.reshape(dgh.shape[0], T * N) if reset_after else gx2[2 * H:]  # n rows, hidden side
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)
    gemm_rows(gx2, x.reshape(T * N, D), dw_ih, k, nb)
    gemm_rows(gx2[:2 * H], h_in, dw_hh[:2 * H], k, nb)
    if reset_after:  # two calls: one conditional operand would lose its contiguous layout
        gemm_rows(gn2, h_in, dw_hh[2 * H:], k, nb)
    else:  # classic form: W_hn multiplies r * h, not h
        gemm_rows(gn2, hn.reshape(H, T * N).T, dw_hh[2 * H:], k, nb)
    rowsum_block(gx2, db_ih, k, nb)
    rowsum_block(gx2[:2 * H], db_hh[:2 * H], k, nb)
    rowsum_block(gn2, db_hh[2 * H:], k, nb)
    if need_dx:
        gemm_tn_partial(gx2, w_ih, dx_part, k, nb)


@njit(parallel=True, cache=True, error_model="numpy")
def gru_backward(x, w_ih, w_hh, h, gates, hn, lengths, reverse, reset_after, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (3H, D), dw_hh (3H, H), db_ih, db_hh (3H,)."""
    T, N, D = x.shape
    H = h.shape[2]
    dgx = np.empty((3 * H, T, N), x.dtype)
    # The hidden side differs from dgx only in reset_after's n block; r, z rows are shared.
    dgh = np.empty((H if reset_after else 0, T, N), x.dtype)
    dh = dh_n.copy()
    # The transposed weights packed once per call (kernels/tiles.py): all of W_hh.T for
    # reset_after, its r, z and n parts for the classic form.
    none = natural_order(0)
    panels_t = pack_panels(np.ascontiguousarray(w_hh.T), natural_order(H) if reset_after else none)
    panels_rz_t = pack_panels(np.ascontiguousarray(w_hh[:2 * H].T), none if reset_after else natural_order(H))
    panels_n_t = pack_panels(np.ascontiguousarray(w_hh[2 * H:].T), none if reset_after else natural_order(H))
    nb = max(1, min(nthreads, N))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dgx, dgh, dh, h, gates, hn, panels_t, panels_rz_t, panels_n_t, lengths, reverse, dy,
                       reset_after, lo, hi)
    dw_ih = np.empty((3 * H, D), x.dtype)
    dw_hh = np.empty((3 * H, H), x.dtype)
    db_ih = np.empty(3 * H, x.dtype)
    db_hh = np.empty(3 * H, x.dtype)
    dx_parts = np.empty((nb, T * N if need_dx else 0, D), x.dtype)  # split over the 3H sum
    for k in prange(nb):
        weight_grads(x, w_ih, h, hn, dgx, dgh, reverse, reset_after, dw_ih, dw_hh, db_ih, db_hh, dx_parts[k],
                     need_dx, k, nb)
    dx = dx_parts.sum(axis=0).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
