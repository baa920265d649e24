"""Persistent LSTM forward and backward: the whole sequence in ONE launch, for small hidden sizes.

The per-step path launches a GEMM and a gate kernel for every step; for small N and H each of
those is pure launch latency. Here one thread block owns R batch rows for the whole sequence
and loops over time itself:
  shared  w_s   (4H, H)    recurrent weights, staged once (when they fit, see below)
          hs    (2, R, H)  h_{t-1} of the block's rows, double-buffered by step parity
  step t: thread -> units (r, j) strided by blockDim; four dot products of hs[p, r] with rows
          j, H+j, 2H+j, 3H+j of W_hh, the gate arithmetic of lstm.py, write hs[1-p];
          cuda.syncthreads() between steps. Rows never interact, so no grid sync is needed.
The c state of (r, j) is touched by one thread only, so it goes straight through global memory.
Memory: 4H*H + 2RH values of shared memory. Static shared memory is limited to 48 KiB per
block, so W_hh is staged only when it fits: float32 H <= 55, float64 H <= 38 (at R=1). Larger H
(up to MAX_H) reads W_hh from global memory (L2-resident: 1 MiB at H=256 float32) instead.
Outputs are identical in layout to lstm.lstm_forward (gates activated, zero on padding), so
either backward runs on them.

The backward recurrence has the same shape, in reverse time order, with two phases per step:
  1. thread -> units (r, j): the gate gradients dgates[:, t, n] from dh_t (shared dh_s), dy and
     dc (global, one owner per unit), as lstm.backward_step; also kept in shared dg_s for
     phase 2; syncthreads.
  2. thread -> units (r, m): dh_{t-1}[r, m] = sum_q W_hh[q, m] dg_s[r, q] (a column of W_hh),
     written over dh_s[r, m], which phase 1 of this step has finished reading; padding leaves
     it; syncthreads. dg_s rows are padded by one value so that threads of neighbouring rows
     read different shared-memory banks.
Shared memory: 4H*H (staged W_hh) + R(5H + 1) values. The weight gradients stay large GEMMs.
"""
import contextlib

import numpy as np

from seqtool.kernels.cuda import common

MAX_H = 256
SMEM_BYTES = 48 * 1024
THREADS = 256  # threads per block (tests shrink it)
ROWS = None  # batch rows per block; None: THREADS // H, at least 1 (tests set it)
# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None
FORCE = None  # None: use_persistent decides; True / False: always / never (tests, benchmarks)


@contextlib.contextmanager
def forced(mode):
    """with forced(True): ... runs lstm_forward on the persistent kernel (False: per-step)."""
    global FORCE
    old, FORCE = FORCE, mode
    try:
        yield
    finally:
        FORCE = old


def rows_per_block(N, H):
    return max(1, min(N, ROWS if ROWS is not None else THREADS // H))


def staged(H, R, dtype, backward=False):
    per_row = 5 * H + 1 if backward else 2 * H  # dh_s (R, H), dg_s (R, 4H + 1); hs (2, R, H)
    return (4 * H * H + R * per_row) * np.dtype(dtype).itemsize <= SMEM_BYTES


# (pass, N, H, dtype, T rounded up to a power of two) -> True if the persistent kernel measured
# faster; pass is "forward" or "backward", each timed on its own.
MEASURED: dict = {}


def _shape_key(T, N, H, dtype, which="forward"):
    return which, N, H, np.dtype(dtype).str, 1 << max(0, int(T - 1).bit_length())


def choose(T, N, H, dtype, time_path, which="forward"):
    """Whether lstm_forward (which="forward") or lstm_backward ("backward") takes the
    persistent kernel for this shape.

    Eligible shapes (policy_allows) are decided by measurement on a real GPU: the first call of
    a shape times one forward each way (``time_path(persistent: bool) -> seconds``, synchronized)
    and remembers the faster; later calls reuse the answer. Under the simulator timings mean
    nothing, so the static policy decides. FORCE overrides both.
    """
    if FORCE is not None:
        return bool(FORCE)
    if not policy_allows(T, N, H, dtype):
        return False
    if common.simulator():
        return use_persistent(T, N, H, dtype)
    key = _shape_key(T, N, H, dtype, which)
    if key not in MEASURED:
        MEASURED[key] = time_path(True) < time_path(False)
    return MEASURED[key]


def policy_allows(T, N, H, dtype=np.float32):
    """Shapes the persistent kernel can run at all."""
    return H <= MAX_H and T >= 2


def use_persistent(T, N, H, dtype=np.float32):
    """Static policy: the persistent kernel for small H and few blocks' worth of rows.

    Not measured on a GPU yet (none available when this was written). The reasoning: per step,
    the per-step path costs two launches plus a GEMM call (~10-20 us of latency when N, H are
    small); the persistent kernel costs one serial dot product of length H per gate per thread.
    Unstaged weights are re-read from L2 by every block every step (4H^2 values), so that case
    is limited to few blocks.
    """
    if FORCE is not None:
        return bool(FORCE)
    if H > MAX_H or T < 2:
        return False
    R = rows_per_block(N, H)
    blocks = -(-N // R)
    return blocks <= (128 if staged(H, R, dtype) else 16)


def _builder(dtype, H, stage):
    """What both kernel builders start from: numba.cuda (also set as this module's `cuda`),
    `one` of the dtype, the LSTM unit's device functions, the shared-memory element type and
    the staged weights' shape."""
    global cuda
    cu = cuda = common.cuda()
    one = common.activations(dtype)[0]
    return (cu, one, *common.lstm_unit(dtype), common.numba_type(dtype),
            (4 * H, H) if stage else (1, 1))


@common.kernel_cache
def _kernel(dtype, H, R, stage):
    cu, one, unit_forward, _, ty, W_SHAPE = _builder(dtype, H, stage)
    HS_SHAPE = (2, R, H)

    @cu.jit(device=True)
    def rec4(W, hs, p, r, j):
        # Row r of h_{t-1} times rows j, H+j, 2H+j, 3H+j of W_hh. The accumulators start
        # from one - one: a literal 0 times a float32 is float64 in Numba, which would run
        # every float32 dot product and gate in double precision.
        a_i = one - one
        a_f = a_i
        a_g = a_i
        a_o = a_i
        for m in range(H):
            hm = hs[p, r, m]
            a_i += W[j, m] * hm
            a_f += W[H + j, m] * hm
            a_g += W[2 * H + j, m] * hm
            a_o += W[3 * H + j, m] * hm
        return a_i, a_f, a_g, a_o

    @cu.jit
    def lstm_persistent(gates, b, w_hh, h, c, y, lengths, reverse):
        # Layouts of lstm.py: gates (4H, T, N), h (T+1, N, H), c (T+1, H, N), y (T, N, H).
        T = y.shape[0]
        N = y.shape[1]
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n0 = cuda.blockIdx.x * R
        w_s = cuda.shared.array(W_SHAPE, ty)
        hs = cuda.shared.array(HS_SHAPE, ty)
        if stage:
            for k in range(tid, 4 * H * H, nt):
                w_s[k // H, k % H] = w_hh[k // H, k % H]
        first = T if reverse else 0
        for k in range(tid, R * H, nt):
            j = k // R
            r = k - j * R
            if n0 + r < N:
                hs[0, r, j] = h[first, n0 + r, j]
        cuda.syncthreads()
        for s in range(T):
            t = T - 1 - s if reverse else s
            prev = t + 1 if reverse else t
            cur = t if reverse else t + 1
            p = s % 2
            for k in range(tid, R * H, nt):  # units (r, j), r fastest
                j = k // R
                r = k - j * R
                n = n0 + r
                if n < N:
                    if t >= lengths[n]:
                        for q in range(4):
                            gates[q * H + j, t, n] = 0
                        c[cur, j, n] = c[prev, j, n]
                        hv = hs[p, r, j]
                        y[t, n, j] = 0
                    else:
                        if stage:
                            a_i, a_f, a_g, a_o = rec4(w_s, hs, p, r, j)
                        else:
                            a_i, a_f, a_g, a_o = rec4(w_hh, hs, p, r, j)
                        i_, f_, g_, o_, cv, hv = unit_forward(
                            gates[j, t, n] + a_i + b[j], gates[H + j, t, n] + a_f + b[H + j],
                            gates[2 * H + j, t, n] + a_g + b[2 * H + j],
                            gates[3 * H + j, t, n] + a_o + b[3 * H + j], c[prev, j, n])
                        gates[j, t, n] = i_
                        gates[H + j, t, n] = f_
                        gates[2 * H + j, t, n] = g_
                        gates[3 * H + j, t, n] = o_
                        c[cur, j, n] = cv
                        y[t, n, j] = hv
                    h[cur, n, j] = hv
                    hs[1 - p, r, j] = hv
            cuda.syncthreads()  # every read of hs[p] is done before step s+1 overwrites it

    return lstm_persistent


def run(gates, b, w_hh, h, c, y, lengths, reverse):
    """The recurrence of lstm.lstm_forward in one launch: fills gates, h, c, y in place.

    gates holds the input projection on entry, h and c their initial slot (see lstm.py).
    """
    xp = common.array_module(gates)
    T, N, H = y.shape
    if H > MAX_H:
        raise ValueError(f"the persistent LSTM kernel takes H <= {MAX_H}, got {H}")
    R = rows_per_block(N, H)
    stage = staged(H, R, gates.dtype)
    kernel = _kernel(np.dtype(gates.dtype), H, R, stage)
    threads = min(THREADS, R * H)
    kernel[-(-N // R), threads](gates, b, xp.ascontiguousarray(w_hh), h, c, y, lengths, bool(reverse))


@common.kernel_cache
def _backward_kernel(dtype, H, R, stage):
    cu, one, _, unit_backward, ty, W_SHAPE = _builder(dtype, H, stage)
    DH_SHAPE = (R, H)
    DG_SHAPE = (R, 4 * H + 1)

    @cu.jit(device=True)
    def column_dot(W, dg_s, r, m):
        # Column m of W_hh times row r of the step's gate gradients: (W_hh^T dg)[m].
        acc = one - one  # dtype-typed zero, as in rec4
        for q in range(4 * H):
            acc += W[q, m] * dg_s[r, q]
        return acc

    @cu.jit
    def lstm_persistent_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse):
        # dgates (4H, T, N) out; dh, dc (H, N): in, the gradients reaching the last state;
        # out, those reaching the initial state. Layouts of lstm.py otherwise.
        T = dy.shape[0]
        N = dy.shape[1]
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n0 = cuda.blockIdx.x * R
        w_s = cuda.shared.array(W_SHAPE, ty)
        dh_s = cuda.shared.array(DH_SHAPE, ty)
        dg_s = cuda.shared.array(DG_SHAPE, ty)
        if stage:
            for k in range(tid, 4 * H * H, nt):
                w_s[k // H, k % H] = w_hh[k // H, k % H]
        for k in range(tid, R * H, nt):
            j = k // R
            r = k - j * R
            if n0 + r < N:
                dh_s[r, j] = dh[j, n0 + r]
        cuda.syncthreads()
        for s in range(T):
            t = s if reverse else T - 1 - s  # the opposite order of the forward sweep
            prev = t + 1 if reverse else t
            cur = t if reverse else t + 1
            for k in range(tid, R * H, nt):  # phase 1: gate gradients of units (r, j)
                j = k // R
                r = k - j * R
                n = n0 + r
                if n < N:
                    if t >= lengths[n]:  # padding: dh and dc pass through
                        for q in range(4):
                            dgates[q * H + j, t, n] = 0
                    else:
                        d_i, d_f, d_g, d_o, dc_prev = unit_backward(
                            gates[j, t, n], gates[H + j, t, n], gates[2 * H + j, t, n],
                            gates[3 * H + j, t, n], c[prev, j, n], c[cur, j, n],
                            dh_s[r, j] + dy[t, n, j], dc[j, n])
                        dc[j, n] = dc_prev
                        dgates[j, t, n] = d_i
                        dgates[H + j, t, n] = d_f
                        dgates[2 * H + j, t, n] = d_g
                        dgates[3 * H + j, t, n] = d_o
                        dg_s[r, j] = d_i
                        dg_s[r, H + j] = d_f
                        dg_s[r, 2 * H + j] = d_g
                        dg_s[r, 3 * H + j] = d_o
            cuda.syncthreads()
            for k in range(tid, R * H, nt):  # phase 2: dh_{t-1} of units (r, m)
                m = k // R
                r = k - m * R
                n = n0 + r
                if n < N and t < lengths[n]:  # padding: dh passes through
                    if stage:
                        dh_s[r, m] = column_dot(w_s, dg_s, r, m)
                    else:
                        dh_s[r, m] = column_dot(w_hh, dg_s, r, m)
            cuda.syncthreads()  # dh_s is complete and dg_s free for step s+1
        for k in range(tid, R * H, nt):
            j = k // R
            r = k - j * R
            if n0 + r < N:
                dh[j, n0 + r] = dh_s[r, j]

    return lstm_persistent_backward


def run_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse):
    """The recurrence of lstm.lstm_backward in one launch: fills dgates and turns dh, dc (H, N)
    from the gradients at the last state into those at the initial state, in place."""
    xp = common.array_module(gates)
    T, N, H = dy.shape
    if H > MAX_H:
        raise ValueError(f"the persistent LSTM kernel takes H <= {MAX_H}, got {H}")
    R = rows_per_block(N, H)
    stage = staged(H, R, gates.dtype, backward=True)
    kernel = _backward_kernel(np.dtype(gates.dtype), H, R, stage)
    threads = min(THREADS, R * H)
    kernel[-(-N // R), threads](dgates, dh, dc, gates, c, dy, xp.ascontiguousarray(w_hh), lengths,
                                bool(reverse))
