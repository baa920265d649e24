"""Both directions of a bidirectional layer (LSTM, GRU, RNN) in one parallel region.

Run one after the other, each direction splits its N batch rows over all the threads: with
N=16 on two threads each thread's block is 8 rows, half a vector register wide, so half of
every tile's lanes multiply padding (kernels/tiles.py). Run together, each direction gets
nthreads // 2 threads and twice the rows per thread. The per-direction work is exactly the
single-direction kernels' (kernels/lstm.py), so the two paths give the same numbers.

Arrays are the single-direction ones stacked on a leading axis of 2 (0 forward, 1 reverse):
h0, c0 (2, N, H); w_ih (2, 4H, D); w_hh (2, 4H, H); b (2, 4H); saved h (2, T+1, N, H),
c (2, T+1, H, N), gates (2, B, T, 4H, C). y and dy are (T, N, 2H), forward features first.
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.blas import block, gate_major, slab_width, weight_grads_block
from seqtool.kernels import gru, lstm, rnn
from seqtool.kernels.tiles import natural_order, pack_panels


def pair_directions(nthreads):
    """The rule: a bidirectional layer runs its directions together when each gets a thread
    of its own (measured faster, see benchmarks/README.md); on one thread nothing changes."""
    return nthreads >= 2


@njit(cache=True)
def _pack_pair(w, order):
    """Both directions' weights (2, rows, K) packed into panels (kernels/tiles.py)."""
    first = pack_panels(w[0], order)
    panels = np.empty((2,) + first.shape, w.dtype)
    panels[0] = first
    panels[1] = pack_panels(w[1], order)
    return panels


@njit(cache=True)
def _transposed_pair(w):
    """(2, K, rows) C-contiguous from (2, rows, K)."""
    w_t = np.empty((2, w.shape[2], w.shape[1]), w.dtype)
    w_t[0] = w[0].T
    w_t[1] = w[1].T
    return w_t


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_forward_pair(x, h0, c0, w_ih, w_hh, b, lengths, nthreads):
    """Returns y (T, N, 2H) and what backward needs: h, c, gates (stacked, see above)."""
    T, N, D = x.shape
    H = h0.shape[2]
    nb = max(1, min(nthreads // 2, N))  # row blocks per direction
    gates = np.empty((2, nb, T, 4 * H, slab_width(nb, N)), x.dtype)
    h = np.empty((2, T + 1, N, H), x.dtype)
    c = np.empty((2, T + 1, H, N), x.dtype)
    y = np.empty((T, N, 2 * H), x.dtype)
    h[0, 0] = h0[0]
    c[0, 0] = c0[0].T
    h[1, T] = h0[1]
    c[1, T] = c0[1].T
    panels_ih = _pack_pair(w_ih, natural_order(4 * H))
    panels = _pack_pair(w_hh, natural_order(4 * H))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        lstm._forward_rows(x, panels_ih[d], gates[d, k % nb], h[d], c[d], y[:, :, d * H:(d + 1) * H], panels[d], b[d], lengths, d == 1, lo, hi)
    return y, h, c, gates


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_backward_pair(x, w_ih, w_hh, h, c, gates, lengths, dy, dh_n, dc_n, need_dx, nthreads):
    """Returns dx (T, N, D) (both directions' sum), dh0, dc0 (2, N, H), dw_ih (2, 4H, D),
    dw_hh (2, 4H, H), db (2, 4H)."""
    T, N, D = x.shape
    H = h.shape[3]
    nb = gates.shape[1]  # the forward's row blocks per direction
    dgates = np.empty((2, 4 * H, T, N), x.dtype)
    dh = dh_n.copy()
    dc = dc_n.copy()
    panels_t = _pack_pair(_transposed_pair(w_hh), natural_order(H))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        lstm._backward_rows(dgates[d], dh[d], dc[d], c[d], gates[d, k % nb], panels_t[d], lengths, d == 1,
                       dy[:, :, d * H:(d + 1) * H], lo, hi)
    x2 = x.reshape(T * N, D)
    dw_ih = np.empty((2, 4 * H, D), x.dtype)
    dw_hh = np.empty((2, 4 * H, H), x.dtype)
    db = np.empty((2, 4 * H), x.dtype)
    dx2 = np.empty((2, T * N if need_dx else 0, D), x.dtype)  # each direction's share
    for k in prange(2 * nb):  # each direction's weight gradients on its own threads
        d, kb = k // nb, k % nb
        dg2 = dgates[d].reshape(4 * H, T * N)
        h_in = (h[d, 1:] if d == 1 else h[d, :T]).reshape(T * N, H)  # the states that fed each step
        weight_grads_block(dg2, x2, h_in, w_ih[d], dw_ih[d], dw_hh[d], db[d], dx2[d], kb, nb, need_dx)
    dx = (dx2[0] + dx2[1]).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dc, dw_ih, dw_hh, db


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_forward_pair(x, h0, w_ih, w_hh, b, lengths, relu, nthreads):
    """Returns y (T, N, 2H), h (2, T+1, N, H), a (2, B, T, H, C)."""
    T, N, D = x.shape
    H = h0.shape[2]
    nb = max(1, min(nthreads // 2, N))
    act = np.empty((2, nb, T, H, slab_width(nb, N)), x.dtype)
    h = np.empty((2, T + 1, N, H), x.dtype)
    y = np.empty((T, N, 2 * H), x.dtype)
    h[0, 0] = h0[0]
    h[1, T] = h0[1]
    panels_ih = _pack_pair(w_ih, natural_order(H))
    panels = _pack_pair(w_hh, natural_order(H))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        rnn._forward_rows(x, panels_ih[d], act[d, k % nb], h[d], y[:, :, d * H:(d + 1) * H], panels[d], b[d], lengths,
                          d == 1, relu, lo, hi)
    return y, h, act


@njit(parallel=True, cache=True, error_model="numpy")
def rnn_backward_pair(x, w_ih, w_hh, h, act, lengths, relu, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (2, N, H), dw_ih (2, H, D), dw_hh (2, H, H), db (2, H)."""
    T, N, D = x.shape
    H = h.shape[3]
    nb = act.shape[1]  # the forward's row blocks per direction
    dpre = np.empty((2, H, T, N), x.dtype)
    dh = dh_n.copy()
    panels_t = _pack_pair(_transposed_pair(w_hh), natural_order(H))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        rnn._backward_rows(dpre[d], dh[d], act[d, k % nb], panels_t[d], lengths, d == 1, relu,
                           dy[:, :, d * H:(d + 1) * H], lo, hi)
    x2 = x.reshape(T * N, D)
    dw_ih = np.empty((2, H, D), x.dtype)
    dw_hh = np.empty((2, H, H), x.dtype)
    db = np.empty((2, H), x.dtype)
    dx2 = np.empty((2, T * N if need_dx else 0, D), x.dtype)
    for k in prange(2 * nb):
        d, kb = k // nb, k % nb
        d2 = dpre[d].reshape(H, T * N)
        h_in = (h[d, 1:] if d == 1 else h[d, :T]).reshape(T * N, H)
        weight_grads_block(d2, x2, h_in, w_ih[d], dw_ih[d], dw_hh[d], db[d], dx2[d], kb, nb, need_dx)
    dx = (dx2[0] + dx2[1]).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dw_ih, dw_hh, db


@njit(parallel=True, cache=True, error_model="numpy")
def gru_forward_pair(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reset_after, nthreads):
    """Returns y (T, N, 2H), h (2, T+1, N, H), gates (2, B, T, 3H, C), hn (2, B, T, H, C)."""
    T, N, D = x.shape
    H = h0.shape[2]
    nb = max(1, min(nthreads // 2, N))
    C = slab_width(nb, N)
    gates = np.empty((2, nb, T, 3 * H, C), x.dtype)
    hn = np.empty((2, nb, T, H, C), x.dtype)
    h = np.empty((2, T + 1, N, H), x.dtype)
    y = np.empty((T, N, 2 * H), x.dtype)
    h[0, 0] = h0[0]
    h[1, T] = h0[1]
    panels_ih = _pack_pair(w_ih, natural_order(3 * H))
    panels = _pack_pair(w_hh, natural_order(3 * H if reset_after else 2 * H))
    panels_n = _pack_pair(np.ascontiguousarray(w_hh[:, 2 * H:]), natural_order(0 if reset_after else H))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        gru._forward_rows(x, panels_ih[d], gates[d, k % nb], hn[d, k % nb], h[d], y[:, :, d * H:(d + 1) * H], panels[d], panels_n[d], b_ih[d],
                          b_hh[d], lengths, d == 1, reset_after, lo, hi)
    return y, h, gates, hn


@njit(parallel=True, cache=True, error_model="numpy")
def gru_backward_pair(x, w_ih, w_hh, h, gates, hn, lengths, reset_after, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (2, N, H), dw_ih (2, 3H, D), dw_hh (2, 3H, H), db_ih, db_hh (2, 3H)."""
    T, N, D = x.shape
    H = h.shape[3]
    nb = gates.shape[1]  # the forward's row blocks per direction
    dgx = np.empty((2, 3 * H, T, N), x.dtype)
    dgh = np.empty((2, H if reset_after else 0, T, N), x.dtype)
    dh = dh_n.copy()
    none, units = natural_order(0), natural_order(H)
    panels_t = _pack_pair(_transposed_pair(w_hh), units if reset_after else none)
    panels_rz_t = _pack_pair(_transposed_pair(np.ascontiguousarray(w_hh[:, :2 * H])), none if reset_after else units)
    panels_n_t = _pack_pair(_transposed_pair(np.ascontiguousarray(w_hh[:, 2 * H:])), none if reset_after else units)
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        gru._backward_rows(dgx[d], dgh[d], dh[d], h[d], gates[d, k % nb], hn[d, k % nb], panels_t[d], panels_rz_t[d],
                           panels_n_t[d], lengths, d == 1, dy[:, :, d * H:(d + 1) * H], reset_after, lo, hi)
    dw_ih = np.empty((2, 3 * H, D), x.dtype)
    dw_hh = np.empty((2, 3 * H, H), x.dtype)
    db_ih = np.empty((2, 3 * H), x.dtype)
    db_hh = np.empty((2, 3 * H), x.dtype)
    dx2 = np.empty((2, T * N if need_dx else 0, D), x.dtype)
    rh = np.empty((2, 0 if reset_after else H, T, N), x.dtype)  # the classic form's W_hn input
    if not reset_after:
        rh[0] = gate_major(hn[0], N)
        rh[1] = gate_major(hn[1], N)
    for k in prange(2 * nb):
        d, kb = k // nb, k % nb
        gru.weight_grads(x, w_ih[d], h[d], rh[d], dgx[d], dgh[d], d == 1, reset_after, dw_ih[d], dw_hh[d],
                         db_ih[d], db_hh[d], dx2[d], need_dx, kb, nb)
    dx = (dx2[0] + dx2[1]).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
