"""Both directions of a bidirectional LSTM layer in one parallel region.

Run one after the other, each direction splits its N batch rows over all the threads: with
N=16 on two threads each thread's block is 8 rows, half a vector register wide, so half of
every tile's lanes multiply padding (kernels/tiles.py). Run together, each direction gets
nthreads // 2 threads and twice the rows per thread. The per-direction work is exactly the
single-direction kernels' (kernels/lstm.py), so the two paths give the same numbers.

Arrays are the single-direction ones stacked on a leading axis of 2 (0 forward, 1 reverse):
h0, c0 (2, N, H); w_ih (2, 4H, D); w_hh (2, 4H, H); b (2, 4H); saved h (2, T+1, N, H),
c (2, T+1, H, N), gates (2, 4H, T, N). y and dy are (T, N, 2H), forward features first.
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.blas import block, gemm_rows, gemm_tn_partial, rowsum_block
from seqtool.kernels.lstm import _backward_rows, _forward_rows
from seqtool.kernels.tiles import natural_order, pack_panels, unit_order


def pair_directions(nthreads):
    """The rule: a bidirectional layer runs its directions together when each gets a thread
    of its own (measured faster, see benchmarks/README.md); on one thread nothing changes."""
    return nthreads >= 2


@njit(cache=True)
def _pack_pair(w, order):
    first = pack_panels(w[0], order)
    panels = np.empty((2,) + first.shape, w.dtype)
    panels[0] = first
    panels[1] = pack_panels(w[1], order)
    return panels


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_forward_pair(x, h0, c0, w_ih, w_hh, b, lengths, nthreads):
    """Returns y (T, N, 2H) and what backward needs: h, c, gates (stacked, see above)."""
    T, N, D = x.shape
    H = h0.shape[2]
    nb = max(1, min(nthreads // 2, N))  # row blocks per direction
    gates = np.empty((2, 4 * H, T, N), x.dtype)
    x2t = x.reshape(T * N, D).T
    for k in prange(2 * nb):
        d = k // nb
        gemm_rows(w_ih[d], x2t, gates[d].reshape(4 * H, T * N), k % nb, nb)
    h = np.empty((2, T + 1, N, H), x.dtype)
    c = np.empty((2, T + 1, H, N), x.dtype)
    y = np.empty((T, N, 2 * H), x.dtype)
    h[0, 0] = h0[0]
    c[0, 0] = c0[0].T
    h[1, T] = h0[1]
    c[1, T] = c0[1].T
    panels = _pack_pair(w_hh, unit_order(H, 4))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        _forward_rows(gates[d], h[d], c[d], y[:, :, d * H:(d + 1) * H], panels[d], b[d], lengths, d == 1, lo, hi)
    return y, h, c, gates


@njit(parallel=True, cache=True, error_model="numpy")
def lstm_backward_pair(x, w_ih, w_hh, h, c, gates, lengths, dy, dh_n, dc_n, need_dx, nthreads):
    """Returns dx (T, N, D) (both directions' sum), dh0, dc0 (2, N, H), dw_ih (2, 4H, D),
    dw_hh (2, 4H, H), db (2, 4H)."""
    T, N, D = x.shape
    H = h.shape[3]
    nb = max(1, min(nthreads // 2, N))
    dgates = np.empty((2, 4 * H, T, N), x.dtype)
    dh = dh_n.copy()
    dc = dc_n.copy()
    w_t = np.empty((2, H, 4 * H), x.dtype)
    w_t[0] = w_hh[0].T
    w_t[1] = w_hh[1].T
    panels_t = _pack_pair(w_t, natural_order(H))
    for k in prange(2 * nb):
        d = k // nb
        lo, hi = block(k % nb, nb, N)
        _backward_rows(dgates[d], dh[d], dc[d], c[d], gates[d], panels_t[d], lengths, d == 1,
                       dy[:, :, d * H:(d + 1) * H], lo, hi)
    x2 = x.reshape(T * N, D)
    dw_ih = np.empty((2, 4 * H, D), x.dtype)
    dw_hh = np.empty((2, 4 * H, H), x.dtype)
    db = np.empty((2, 4 * H), x.dtype)
    dx_parts = np.empty((2 * nb if need_dx else 0, T * N, D), x.dtype)
    for k in prange(2 * nb):  # each direction's weight gradients on its own threads
        d, kb = k // nb, k % nb
        dg2 = dgates[d].reshape(4 * H, T * N)
        h_in = (h[d, 1:] if d == 1 else h[d, :T]).reshape(T * N, H)  # the states that fed each step
        gemm_rows(dg2, x2, dw_ih[d], kb, nb)
        gemm_rows(dg2, h_in, dw_hh[d], kb, nb)
        rowsum_block(dg2, db[d], kb, nb)
        if need_dx:
            gemm_tn_partial(dg2, w_ih[d], dx_parts[k], kb, nb)
    dx = dx_parts.sum(axis=0).reshape(T, N, D) if need_dx else np.empty((0, N, D), x.dtype)
    return dx, dh, dc, dw_ih, dw_hh, db
