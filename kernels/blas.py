"""Thread layout: Numba threads split the work, every BLAS stays single-threaded.

`np.dot` inside @njit calls SciPy's OpenBLAS. If a BLAS also starts its own threads, its
spinning workers and Numba's workers fight over the cores (measured: a 2-core LSTM step went
from 80 ms to 2 s with SciPy's BLAS threaded; a charlm training run was 2.3x slower with only
NumPy's BLAS threaded, from the matmuls of the output layer between kernel calls). So every
BLAS in the process is pinned to one thread, the kernels split their GEMMs into one block per
Numba thread (batch rows for the recurrence, row blocks for the large GEMMs), and large 2-d
matmuls outside the kernels go through `matmul`/`matmul_tn` below.
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import unit
from seqtool.kernels.tiles import gemm_panels, gemm_tn_panels, padded, panel_matmul, panel_rows

_pinned = False


def pin_kernel_blas():
    """Limit every BLAS loaded in the process (NumPy's, SciPy's) to one thread; idempotent."""
    global _pinned
    if _pinned:
        return
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so threadpoolctl can see it)
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas":
            lib.set_num_threads(1)
    _pinned = True


@njit(inline="always")
def block(k, nblocks, n):
    """Bounds of block k when n items are split into nblocks nearly equal blocks."""
    return k * n // nblocks, (k + 1) * n // nblocks


# The helpers below each do one thread's block; the kernels call them inside their own
# prange loop. (A parallel function calling another parallel function cannot be cached.)


@njit(cache=True)
def gemm_rows(a, b, out, k, nblocks):
    """Block k of out = a @ b, split over a's rows. a (M, K), b (K, P), out (M, P)."""
    lo, hi = block(k, nblocks, a.shape[0])
    if hi > lo:
        np.dot(a[lo:hi], b, out[lo:hi])


@njit(cache=True)
def gemm_tn_partial(a, b, partial, k, nblocks):
    """partial = a[block].T @ b[block]; the blocks' partials sum to a.T @ b."""
    lo, hi = block(k, nblocks, a.shape[0])
    if hi > lo:
        np.dot(a[lo:hi].T, b[lo:hi], partial)
    else:
        partial[:] = 0.0


@njit(cache=True, fastmath={"reassoc"})
def rowsum_block(a, out, k, nblocks):
    """Block k of out = a.sum(axis=1) for a (P, M), split over a's rows. reassoc lets LLVM keep
    one partial sum per vector lane: in order, the sum is a chain of dependent adds (measured:
    ~3.5 ms of a one-thread LSTM backward at T=100 N=32 H=256 for the bias gradient alone)."""
    lo, hi = block(k, nblocks, a.shape[0])
    for r in range(lo, hi):
        row = a[r]
        acc = row[0] * 0
        for j in range(a.shape[1]):
            acc += row[j]
        out[r] = acc


@njit(cache=True)
def weight_grads_block(dg2, x2, h_in, w_ih, dw_ih, dw_hh, db, dx2, k, nblocks, need_dx):
    """Block k of a recurrence's gradients from its pre-activation gradients dg2 (G, T*N), all
    on the tiles (kernels/tiles.py): dw_ih = dg2 @ x2, dw_hh = dg2 @ h_in and db = dg2's row
    sums, split by rows of dg2; with need_dx, dx2 (T*N, D) = dg2.T @ w_ih, split by its rows."""
    lo, hi = panel_rows(k, nblocks, dg2.shape[0])
    gemm_panels(dg2, x2, dw_ih, lo, hi)
    gemm_panels(dg2, h_in, dw_hh, lo, hi)
    rowsum_block(dg2, db, k, nblocks)
    if need_dx:
        input_grads_block(dg2, w_ih, dx2, k, nblocks)


@njit(cache=True)
def input_grads_block(dg2, w_ih, dx2, k, nblocks):
    """Rows of block k of dx2 (T*N, D) = dg2.T @ w_ih."""
    lo, hi = panel_rows(k, nblocks, dg2.shape[1])
    gemm_tn_panels(dg2, w_ih, dx2, lo, hi)


@njit(parallel=True, cache=True)
def matmul(a, b, nthreads):
    """a @ b for 2-d a (M, K) C-contiguous and b (K, P), rows of a split over the threads."""
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    nb = max(1, min(nthreads, a.shape[0]))
    for k in prange(nb):
        gemm_rows(a, b, out, k, nb)
    return out


@njit(parallel=True, cache=True)
def matmul_tn(a, b, nthreads):
    """a.T @ b for a (M, P), b (M, Q) C-contiguous: the sum over M split over the threads."""
    nb = max(1, min(nthreads, a.shape[0]))
    parts = np.empty((nb, a.shape[1], b.shape[1]), a.dtype)
    for k in prange(nb):
        gemm_tn_partial(a, b, parts[k], k, nb)
    return parts.sum(axis=0)


# Per-step bookkeeping shared by the row-block kernels (lstm.py, gru.py, rnn.py).


@njit(cache=True)
def store_block_state(hT, valid, h, y, t, cur, lo):
    """Copy the block's transposed state hT (H, M) into h[cur] and y[t] (zero on padding)."""
    H, M = hT.shape
    for m in range(M):
        for j in range(H):
            h[cur, lo + m, j] = hT[j, m]
            y[t, lo + m, j] = valid[m] * hT[j, m]


@njit(cache=True)
def add_transposed(dhT, dy, t, lo, valid):
    """dhT[:, m] += valid[m] * dy[t, lo + m]: the output gradient of step t joins the carried
    one. Reads dy along its rows (reading a column of dy per hidden unit was a gather)."""
    for m in range(valid.shape[0]):
        row, v = dy[t, lo + m], valid[m]
        for j in range(dhT.shape[0]):
            dhT[j, m] += v * row[j]


@njit(cache=True)
def load_transposed(dst, h, slot, lo, M):
    """dst[:, m] = h[slot, lo + m] for m < M: one step's states of the block, transposed."""
    for m in range(M):
        row = h[slot, lo + m]
        for j in range(dst.shape[0]):
            dst[j, m] = row[j]


@njit(cache=True)
def blend_rows(state, new, valid):
    """state[j, m] = new[j, m] where valid[m], else unchanged (padding keeps the carried value)."""
    one = unit(state)
    for j in range(state.shape[0]):
        s_j, n_j = state[j], new[j]
        for m in range(valid.shape[0]):
            s_j[m] = valid[m] * n_j[m] + (one - valid[m]) * s_j[m]


# Per-step copies between a block's contiguous (rows, C) buffers, where the gate arithmetic runs
# as one flat loop (kernels/lstm.py), and the (rows, N) or (rows, T, N) arrays the products read.
# Each row's copy is a loop over a slice made here: a slice assignment per row measured ~10x slower.


@njit(cache=True)
def fill_masks(valid, mask, lengths, t, lo, n_valid):
    """valid (M): 1 where step t lies inside row lo+m's sequence, else 0 (a multiplicative
    mask); mask (H*C): valid repeated for each of the H rows of C columns, 0 past M. Rows only
    join or leave a sequence, so the mask is rebuilt only when their count differs from
    n_valid; returns the new count."""
    M, C = valid.shape[0], padded(valid.shape[0])
    one = unit(mask)
    count = 0
    for m in range(M):
        inside = t < lengths[lo + m]
        valid[m] = one if inside else one - one
        count += inside
    if count != n_valid:
        for j in range(mask.shape[0] // C):
            row = mask[j * C:(j + 1) * C]
            for m in range(M):
                row[m] = valid[m]
    return count


@njit(cache=True)
def project_inputs(dst, x, t, lo, M, panels_ih, xT, p_in, bias):
    """dst (rows, C) = W_ih @ x[t, lo:lo+M].T + bias (a step's input projection into its slot),
    on W_ih packed (panels_ih). xT (D, C) and p_in (panel rows, C) are the caller's buffers;
    xT's columns past M stay zero, so dst's padding columns get the bias alone."""
    load_transposed(xT, x, t, lo, M)
    panel_matmul(panels_ih, xT, p_in)
    for r in range(dst.shape[0]):
        out, row, b_r = dst[r], p_in[r], bias[r]
        for m in range(dst.shape[1]):
            out[m] = row[m] + b_r


@njit(inline="always")
def slab_width(nblocks, n):
    """Columns of each block's saved slab (rows, C) per step: the widest block's rows (see
    block) rounded up to half vector registers. Every block of a call uses this width."""
    return padded((n + nblocks - 1) // nblocks)


@njit(cache=True)
def gate_major(slabs, n):
    """The row blocks' slabs (B, T, rows, C) as one (rows, T, n) array (the classic GRU's W_hn
    input for its weight GEMM; tests comparing with the CUDA kernels' gate-major arrays)."""
    nb, T, rows = slabs.shape[0], slabs.shape[1], slabs.shape[2]
    out = np.empty((rows, T, n), slabs.dtype)
    for k in range(nb):
        lo, hi = block(k, nb, n)
        for t in range(T):
            scatter_rows(out, slabs[k, t], t, lo, hi)
    return out


@njit(cache=True)
def scatter_rows(dst, src, t, lo, hi):
    """dst[r, t, lo:hi] = src[r, :M] for every row r of the (rows, T, N) dst."""
    for r in range(src.shape[0]):
        out, row = dst[r, t, lo:hi], src[r]
        for m in range(hi - lo):
            out[m] = row[m]


@njit(cache=True)
def get_block(dst, src, lo, hi):
    """dst[r, :M] = src[r, lo:hi] for every row r of the (rows, N) src."""
    for r in range(dst.shape[0]):
        out, row = dst[r], src[r, lo:hi]
        for m in range(hi - lo):
            out[m] = row[m]


@njit(cache=True)
def put_block(dst, src, lo, hi):
    """dst[r, lo:hi] = src[r, :M] for every row r of the (rows, N) dst."""
    for r in range(src.shape[0]):
        out, row = dst[r, lo:hi], src[r]
        for m in range(hi - lo):
            out[m] = row[m]
