"""GRU layer over a whole sequence, one direction: forward and backward (BPTT).

Gate order r, z, n (PyTorch). Two forms:
  reset_after=True  (cuDNN / PyTorch / Keras): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  reset_after=False (classic):                 n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
  h_t = (1 - z) * n + z * h_{t-1}
Shapes: x (T, N, D); w_ih (3H, D); w_hh (3H, H); b_ih, b_hh (3H,); lengths (N,) int64.
Saved for backward (layouts and thread blocks as in lstm.py):
  h      (T+1, N, H)     state chain
  gates  (B, T, 3H, C)   activated r, z, n of each row block, step by step (zero on padding)
  hn     (B, T, H, C)    reset_after: W_hn h + b_hn; classic: r * h_{t-1} (the input of W_hn)
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import (add_transposed, block, fill_masks, gate_major, gemm_rows, input_grads_block,
                                  load_transposed, project_inputs, rowsum_block, scatter_rows, slab_width,
                                  store_block_state)
from seqtool.kernels.tiles import PANEL, gemm_panels, natural_order, pack_panels, panel_matmul, panel_rows


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _cells_after(rec, gin, b_hn, h_old, h_new, hn, mask):
    """reset_after, one step of every unit of the block (flat loops as in lstm.py): rec (3, H*C)
    the recurrent products, gin (3, H*C) the input projections + biases, replaced by the
    activated r, z, n (zero on padding); hn gets W_hn h + b_hn."""
    one = unit(rec)
    x_r, x_z, x_n = gin[0], gin[1], gin[2]
    for e in range(mask.shape[0]):
        r = sigm(rec[0, e] + x_r[e])
        z = sigm(rec[1, e] + x_z[e])
        hn[e] = rec[2, e] + b_hn[e]
        n = tanh_(x_n[e] + r * hn[e])
        v = mask[e]
        h_new[e] = v * ((one - z) * n + z * h_old[e]) + (one - v) * h_old[e]  # padding: frozen
        x_r[e], x_z[e], x_n[e] = v * r, v * z, v * n


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _gates_rz(rec, gin, h_old, rh, mask):
    """Classic form, first half of a step: r, z (zero on padding, in gin) and rh = r * h_{t-1}."""
    x_r, x_z = gin[0], gin[1]
    for e in range(mask.shape[0]):
        r = sigm(rec[0, e] + x_r[e])
        z = sigm(rec[1, e] + x_z[e])
        rh[e] = r * h_old[e]
        x_r[e], x_z[e] = mask[e] * r, mask[e] * z


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _cells_classic(rec_n, b_hn, gin, h_old, h_new, mask):
    """Classic form, second half: n from W_hn (r * h) (rec_n) and the new state."""
    one = unit(rec_n)
    x_z, x_n = gin[1], gin[2]
    for e in range(mask.shape[0]):
        n = tanh_(x_n[e] + (rec_n[e] + b_hn[e]))
        v = mask[e]
        h_new[e] = v * ((one - x_z[e]) * n + x_z[e] * h_old[e]) + (one - v) * h_old[e]
        x_n[e] = v * n


@njit(cache=True, error_model="numpy")
def _forward_rows(x, panels_ih, gates, hn, h, y, panels, panels_n, b_ih, b_hh, lengths, reverse, reset_after, lo, hi):
    # panels_ih: W_ih packed; gates, hn: the block's slabs (steps of (3H, C) and (H, C)).
    # panels: W_hh packed (reset_after) or its r, z rows (classic); panels_n: classic's W_hn.
    T, H, M = y.shape[0], h.shape[2], hi - lo
    C = gates.shape[2]
    h_old, h_new = np.zeros((H, C), h.dtype), np.zeros((H, C), h.dtype)  # the block's state, transposed
    h_old[:, :M] = h[T if reverse else 0, lo:hi].T
    rec = np.empty((panels.shape[0] * PANEL, C), h.dtype)  # W_hh @ h (r, z rows only: classic)
    rec_n = np.empty((panels_n.shape[0] * PANEL, C), h.dtype)  # classic: W_hn @ (r * h)
    bias_in = np.concatenate((b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]))  # b_hn joins inside the reset
    b_hn = np.repeat(b_hh[2 * H:], C)  # one row of C per unit, like the flat loops' arrays
    mask = np.zeros(H * C, h.dtype)
    valid = np.empty(M, h.dtype)
    n_valid = -1
    HC = H * C
    xT = np.zeros((x.shape[2], C), h.dtype)  # the step's inputs, transposed
    pin = np.empty((panels_ih.shape[0] * PANEL, C), h.dtype)  # W_ih @ xT
    for s in range(T):
        t = T - 1 - s if reverse else s
        cur = t if reverse else t + 1
        n_valid = fill_masks(valid, mask, lengths, t, lo, n_valid)
        panel_matmul(panels, h_old, rec)
        gin = gates[t]  # the step's input projections + biases, then r, z, n
        project_inputs(gin, x, t, lo, M, panels_ih, xT, pin, bias_in)
        hn_b = hn[t]  # reset_after: W_hn h + b_hn; classic: r * h (every column written below)
        g3 = gin.reshape(3, HC)
        if reset_after:
            _cells_after(rec[:3 * H].reshape(3, HC), g3, b_hn, h_old.reshape(HC), h_new.reshape(HC),
                         hn_b.reshape(HC), mask)
        else:
            _gates_rz(rec[:2 * H].reshape(2, HC), g3, h_old.reshape(HC), hn_b.reshape(HC), mask)
            panel_matmul(panels_n, hn_b, rec_n)  # W_hn needs r * h first: a second product per step
            _cells_classic(rec_n[:H].reshape(HC), b_hn, g3, h_old.reshape(HC), h_new.reshape(HC), mask)
        store_block_state(h_new[:, :M], valid, h, y, t, cur, lo)
        h_old, h_new = h_new, h_old


@njit(parallel=True, cache=True, error_model="numpy")
def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), gates (B, T, 3H, C), hn
    (B, T, H, C)."""
    T, N, D = x.shape
    H = h0.shape[1]
    nb = max(1, min(nthreads, N))  # one block of batch rows per thread
    C = slab_width(nb, N)
    gates = np.empty((nb, T, 3 * H, C), x.dtype)
    hn = np.empty((nb, T, H, C), x.dtype)
    h = np.empty((T + 1, N, H), x.dtype)
    y = np.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    # W_ih, W_hh packed once per call (kernels/tiles.py); classic keeps W_hn apart (it multiplies r * h)
    panels_ih = pack_panels(w_ih, natural_order(3 * H))
    panels = pack_panels(w_hh, natural_order(3 * H if reset_after else 2 * H))
    panels_n = pack_panels(w_hh[2 * H:], natural_order(0 if reset_after else H))
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _forward_rows(x, panels_ih, gates[k], hn[k], h, y, panels, panels_n, b_ih, b_hh, lengths, reverse, reset_after, lo, hi)
    return y, h, gates, hn


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _grads_zn(act, h_prev, dh, g_z, g_n, direct, mask):
    """Both forms: the z and n pre-activation gradients of a step and direct = dh * z, the
    path to h_{t-1} that skips the gates. act (3, H*C): activated r, z, n (zero on padding)."""
    one = unit(dh)
    z_, n_ = act[1], act[2]
    for e in range(mask.shape[0]):
        dh_t = dh[e]
        g_n[e] = mask[e] * dh_t * (one - z_[e]) * (one - n_[e] * n_[e])
        g_z[e] = dh_t * (h_prev[e] - n_[e]) * z_[e] * (one - z_[e])
        direct[e] = dh_t * z_[e]


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _grads_r_after(r_, hn, gx_n, gh_r, gh_n):
    """reset_after: dr from the n gradient through r * (W_hn h + b_hn); the hidden side's n row
    carries the reset."""
    one = unit(hn)
    for e in range(hn.shape[0]):
        gh_r[e] = gx_n[e] * hn[e] * r_[e] * (one - r_[e])
        gh_n[e] = gx_n[e] * r_[e]


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _grads_r_classic(r_, h_prev, d_rh, g_r, direct):
    """Classic: dr from W_hn.T @ dn (d_rh) through r * h_{t-1}, which also reaches h_{t-1}."""
    one = unit(h_prev)
    for e in range(h_prev.shape[0]):
        g_r[e] = d_rh[e] * h_prev[e] * r_[e] * (one - r_[e])
        direct[e] += d_rh[e] * r_[e]


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _carry(dh, direct, d_prev, mask):
    """The gradient reaching h_{t-1}: the direct path plus W_hh.T @ dG; padding keeps dh."""
    one = unit(dh)
    for e in range(mask.shape[0]):
        dh[e] = mask[e] * (direct[e] + d_prev[e]) + (one - mask[e]) * dh[e]


@njit(cache=True, error_model="numpy")
def _backward_rows(dgx, dgh, dh, h, gates, hn, panels_t, panels_rz_t, panels_n_t, lengths, reverse, dy, reset_after,
                   lo, hi):
    # dgx: gradients of the input-side pre-activations (for W_ih, b_ih, x); dgh: of the
    # hidden-side ones (for W_hh, b_hh). They differ only in the n block (reset_after).
    # panels_t: W_hh.T packed (reset_after); panels_rz_t, panels_n_t: classic's two parts.
    # gates, hn: the block's slabs from the forward.
    T, H, M = dy.shape[0], dy.shape[2], hi - lo
    C = gates.shape[2]
    HC = H * C
    dhT = np.zeros((H, C), h.dtype)  # gradient reaching the carried state, columns past M zero
    dhT[:, :M] = dh[lo:hi].T
    gx = np.zeros((3 * H, C), h.dtype)  # input-side gradients r, z, n; columns past M stay zero
    gh = np.zeros((3 * H, C), h.dtype)  # reset_after: the hidden side's (r, z as gx)
    direct = np.empty((H, C), h.dtype)
    h_prev = np.zeros((H, C), h.dtype)  # the state that fed step t, transposed
    d_prev = np.empty((max(panels_t.shape[0], panels_rz_t.shape[0]) * PANEL, C), h.dtype)
    d_rh = np.empty((panels_n_t.shape[0] * PANEL, C), h.dtype)
    mask = np.zeros(HC, h.dtype)
    valid = np.empty(M, h.dtype)
    n_valid = -1
    for s in range(T):
        t = s if reverse else T - 1 - s
        prev = t + 1 if reverse else t
        n_valid = fill_masks(valid, mask, lengths, t, lo, n_valid)
        add_transposed(dhT, dy, t, lo, valid)
        load_transposed(h_prev, h, prev, lo, M)
        a3, dh1, hp1 = gates[t].reshape(3, HC), dhT.reshape(HC), h_prev.reshape(HC)
        if reset_after:
            _grads_zn(a3, hp1, dh1, gh[H:2 * H].reshape(HC), gx[2 * H:].reshape(HC), direct.reshape(HC), mask)
            _grads_r_after(a3[0], hn[t].reshape(HC), gx[2 * H:].reshape(HC), gh[:H].reshape(HC), gh[2 * H:].reshape(HC))
            scatter_rows(dgx, gh[:2 * H], t, lo, hi)  # r, z: the same on both sides
            scatter_rows(dgx[2 * H:], gx[2 * H:], t, lo, hi)
            scatter_rows(dgh, gh[2 * H:], t, lo, hi)
            panel_matmul(panels_t, gh, d_prev)
        else:
            _grads_zn(a3, hp1, dh1, gx[H:2 * H].reshape(HC), gx[2 * H:].reshape(HC), direct.reshape(HC), mask)
            panel_matmul(panels_n_t, gx[2 * H:], d_rh)
            _grads_r_classic(a3[0], hp1, d_rh[:H].reshape(HC), gx[:H].reshape(HC), direct.reshape(HC))
            scatter_rows(dgx, gx, t, lo, hi)
            panel_matmul(panels_rz_t, gx[:2 * H], d_prev)
        _carry(dh1, direct.reshape(HC), d_prev[:H].reshape(HC), mask)
    dh[lo:hi] = dhT[:, :M].T


@njit(cache=True)
def weight_grads(x, w_ih, h, rh, dgx, dgh, reverse, reset_after, dw_ih, dw_hh, db_ih, db_hh, dx2, need_dx,
                 k, nb):
    """Block k of nb of the weight and bias gradients (summed over time: one GEMM each) and
    of dx2's rows (T*N, D), from the gate gradients dgx (input side) and dgh (reset_after's n
    rows); rh (H, T, N): the classic form's r * h_{t-1}."""
    T, N, D = x.shape
    H = h.shape[2]
    gx2 = dgx.reshape(3 * H, T * N)
    gn2 = dgh.reshape(dgh.shape[0], T * N) if reset_after else gx2[2 * H:]  # n rows, hidden side
    h_in = (h[1:] if reverse else h[:T]).reshape(T * N, H)
    lo, hi = panel_rows(k, nb, 3 * H)  # the tiles' row runs (kernels/tiles.py)
    gemm_panels(gx2, x.reshape(T * N, D), dw_ih, lo, hi)
    rz_lo, rz_hi = panel_rows(k, nb, 2 * H)
    gemm_panels(gx2[:2 * H], h_in, dw_hh[:2 * H], rz_lo, rz_hi)
    if reset_after:  # two calls: one conditional operand would lose its contiguous layout
        n_lo, n_hi = panel_rows(k, nb, H)
        gemm_panels(gn2, h_in, dw_hh[2 * H:], n_lo, n_hi)
    else:  # classic form: W_hn multiplies r * h, not h (a transposed operand: OpenBLAS)
        gemm_rows(gn2, rh.reshape(H, T * N).T, dw_hh[2 * H:], k, nb)
    rowsum_block(gx2, db_ih, k, nb)
    rowsum_block(gx2[:2 * H], db_hh[:2 * H], k, nb)
    rowsum_block(gn2, db_hh[2 * H:], k, nb)
    if need_dx:
        input_grads_block(gx2, w_ih, dx2, k, nb)


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
    nb = gates.shape[0]  # the recurrence keeps the forward's row blocks (their slabs)
    for k in prange(nb):
        lo, hi = block(k, nb, N)
        _backward_rows(dgx, dgh, dh, h, gates[k], hn[k], panels_t, panels_rz_t, panels_n_t, lengths, reverse, dy,
                       reset_after, lo, hi)
    dw_ih = np.empty((3 * H, D), x.dtype)
    dw_hh = np.empty((3 * H, H), x.dtype)
    db_ih = np.empty(3 * H, x.dtype)
    db_hh = np.empty(3 * H, x.dtype)
    dx2 = np.empty((T * N if need_dx else 0, D), x.dtype)
    rh = np.empty((0, T, N), x.dtype) if reset_after else gate_major(hn, N)  # W_hn's input
    nb = max(1, min(nthreads, N))
    for k in prange(nb):
        weight_grads(x, w_ih, h, rh, dgx, dgh, reverse, reset_after, dw_ih, dw_hh, db_ih, db_hh, dx2, need_dx,
                     k, nb)
    dx = dx2.reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
