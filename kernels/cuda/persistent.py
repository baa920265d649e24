"""Persistent LSTM forward and backward: the whole sequence in ONE cooperative launch (small H).

The per-step path launches a GEMM and a gate kernel for every step; for small N and H each of
those is mostly launch latency. Here, as in cuDNN's persistent RNNs, the recurrent weights stay
on chip for the whole sequence and the blocks step through time together:
  - the H hidden units are dealt out to NVB blocks: block vb owns units j = vb + u * NVB,
    u < UB = ceil(H / NVB) (see `unit_of`), and stages the rows of W_hh that feed them into
    shared memory once: the 4 gate rows of each owned unit (forward), or its column of W_hh
    (backward);
  - step t: every block computes its units for all N batch rows, reading h_{t-1} (N, H) from
    global memory (L2: every block writes its slice, every block reads it all), then
    cuda.cg.this_grid().sync(): all of h_t is written before anyone starts step t+1.
One grid sync per step. A cooperative launch needs every block resident at once, so on a GPU
NVB <= the SM count (one block per SM always fits: <= 256 threads, <= 48 KiB shared memory).

Under the CUDA simulator a grid sync only works with one block, so one block hosts all NVB
virtual blocks (VPB = NVB virtual blocks per block, a loop per step); on a GPU each block hosts
one (VPB = 1). The code is the same, so the simulator exercises the unit partition of several
blocks; what it cannot check is the synchronization across real blocks.

Backward, in reverse time order, two phases per step:
  1. units (j, n): gate gradients from dh_t[j, n] + dy, dc (global, one owner per unit, as
     lstm.backward_step), written to dgates[:, t, n]; grid sync;
  2. units (m, n): dh_{t-1}[m, n] = sum_q W_hh[q, m] dgates[q, t, n] with column m of W_hh from
     shared memory (padding rows: dh passes through).
The same thread owns (j, n) in both phases, so phase 2 -> the next phase 1 needs no sync, and
the next phase 1 writes dgates[:, t-1] while slower blocks may still read dgates[:, t].
Outputs have lstm.lstm_forward's layouts (gates activated, zero on padding), so either backward
runs on either forward's arrays. The weight gradients stay large GEMMs (lstm.py).
"""
import contextlib
import functools
import warnings

import numpy as np

from seqtool.errors import SeqtoolError
from seqtool.kernels.cuda import common

MAX_H = 256
MAX_N = 64  # static policy (simulator): beyond this the per-step path's GEMMs win
SMEM_BYTES = 48 * 1024  # static shared memory per block
THREADS = 256  # threads per block at most (tests shrink it)
VIRTUAL_BLOCKS = 2  # blocks the units are dealt to under the simulator (tests vary it)
# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None
FORCE = None  # None: choose() decides; True / False: always / never (tests, benchmarks)


@contextlib.contextmanager
def forced(mode):
    """with forced(True): ... runs the LSTM recurrences on the persistent kernels (False: per-step)."""
    global FORCE
    old, FORCE = FORCE, mode
    try:
        yield
    finally:
        FORCE = old


def unit_of(block, grid_blocks, lv, u, nvb):
    """Hidden unit u of the lv-th virtual block hosted by `block` (of grid_blocks): virtual
    block vb = block + lv * grid_blocks owns units vb, vb + NVB, vb + 2 NVB, ... Returns
    (vb, j); (vb, j) is real only when vb < nvb and j < H. Compiled as a device function too."""
    vb = block + lv * grid_blocks
    return vb, vb + u * nvb


@functools.lru_cache(maxsize=None)
def _sm_count():
    return common.cuda().get_current_device().MULTIPROCESSOR_COUNT


def plan(H):
    """(grid blocks, virtual blocks NVB, units per virtual block UB, virtual blocks per block)."""
    if common.simulator():
        nvb = max(1, min(H, VIRTUAL_BLOCKS))
        return 1, nvb, -(-H // nvb), nvb
    ub = -(-H // min(H, _sm_count()))
    nvb = -(-H // ub)
    return nvb, nvb, ub, 1


def fits(H, ub, dtype):
    """Whether one virtual block's staged weights fit in shared memory, forward and backward
    (rows padded by one value against bank conflicts)."""
    size = np.dtype(dtype).itemsize
    return max(4 * ub * (H + 1), ub * (4 * H + 1)) * size <= SMEM_BYTES


# (pass, N, H, dtype, T rounded up to a power of two) -> True if the persistent kernel measured
# faster; pass is "forward" or "backward", each timed on its own.
MEASURED: dict = {}


def _shape_key(T, N, H, dtype, which="forward"):
    return which, N, H, np.dtype(dtype).str, 1 << max(0, int(T - 1).bit_length())


def choose(T, N, H, dtype, time_path, which="forward"):
    """Whether lstm_forward (which="forward") or lstm_backward ("backward") takes the
    persistent kernel for this shape.

    Eligible shapes (policy_allows) are decided by measurement on a real GPU: the first call of
    a shape times one recurrence each way (``time_path(persistent: bool) -> ms``, synchronized)
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
        try:
            persistent_ms = time_path(True)
        except Exception as err:  # e.g. a cooperative launch this device or driver refuses
            warnings.warn(f"persistent LSTM kernel unavailable here ({type(err).__name__}: {err}); "
                          "using the per-step kernels", RuntimeWarning, stacklevel=2)
            persistent_ms = float("inf")
        MEASURED[key] = persistent_ms < time_path(False)
    return MEASURED[key]


def policy_allows(T, N, H, dtype=np.float32):
    """Shapes the persistent kernels can run at all."""
    return H <= MAX_H and T >= 2 and (common.simulator() or fits(H, plan(H)[2], dtype))


def use_persistent(T, N, H, dtype=np.float32):
    """Static policy (the simulator; not measured on a GPU yet): small H and few batch rows.
    Each thread computes a unit's four dot products of length H serially, so the work per
    block grows with N, while the per-step path's GEMMs spread it over the whole GPU."""
    if FORCE is not None:
        return bool(FORCE)
    return H <= MAX_H and T >= 2 and N <= MAX_N


def _builder(dtype):
    """numba.cuda (also set as this module's `cuda`), `one` of the dtype, the LSTM unit's
    device functions, the shared-memory element type and unit_of as a device function."""
    global cuda
    cu = cuda = common.cuda()
    one = common.activations(dtype)[0]
    return (cu, one, *common.lstm_unit(dtype), common.numba_type(dtype),
            cu.jit(device=True)(unit_of))


@common.kernel_cache
def _kernel(dtype, H, NVB, UB, VPB):
    cu, one, unit_forward, _, ty, unit_at = _builder(dtype)
    W_SHAPE = (VPB, 4 * UB, H + 1)  # the 4 gate rows of W_hh of each owned unit

    @cu.jit
    def lstm_persistent(gates, b, w_hh, h, c, y, lengths, reverse):
        # Layouts of lstm.py: gates (4H, T, N), h (T+1, N, H), c (T+1, H, N), y (T, N, H).
        T, N = y.shape[0], y.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)
        for k in range(tid, VPB * 4 * UB * H, nt):
            lv, rest = k // (4 * UB * H), k % (4 * UB * H)
            row, m = rest // H, rest % H  # row = q * UB + u
            vb, j = unit_at(blk, nblk, lv, row % UB, NVB)
            if vb < NVB and j < H:
                w_s[lv, row, m] = w_hh[(row // UB) * H + j, m]
        cuda.syncthreads()
        g = cuda.cg.this_grid()
        for s in range(T):
            t = T - 1 - s if reverse else s
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            for k in range(tid, VPB * UB * N, nt):  # owned units (lu, n), n fastest
                lu, n = k // N, k % N
                lv, u = lu // UB, lu % UB
                vb, j = unit_at(blk, nblk, lv, u, NVB)
                if vb < NVB and j < H:
                    if t >= lengths[n]:  # padding: the state carries over
                        for q in range(4):
                            gates[q * H + j, t, n] = 0
                        c[cur, j, n] = c[prev, j, n]
                        h[cur, n, j] = h[prev, n, j]
                        y[t, n, j] = 0
                    else:
                        a_i = gates[j, t, n] + b[j]
                        a_f = gates[H + j, t, n] + b[H + j]
                        a_g = gates[2 * H + j, t, n] + b[2 * H + j]
                        a_o = gates[3 * H + j, t, n] + b[3 * H + j]
                        for m in range(H):
                            hm = h[prev, n, m]
                            a_i += w_s[lv, u, m] * hm
                            a_f += w_s[lv, UB + u, m] * hm
                            a_g += w_s[lv, 2 * UB + u, m] * hm
                            a_o += w_s[lv, 3 * UB + u, m] * hm
                        i_, f_, g_, o_, cv, hv = unit_forward(a_i, a_f, a_g, a_o, c[prev, j, n])
                        gates[j, t, n] = i_
                        gates[H + j, t, n] = f_
                        gates[2 * H + j, t, n] = g_
                        gates[3 * H + j, t, n] = o_
                        c[cur, j, n] = cv
                        h[cur, n, j] = hv
                        y[t, n, j] = hv
            g.sync()  # all of h_t is written before any block reads it

    return lstm_persistent


def _launch(kernel_builder, dtype, H, N, *args):
    # reached when forced (seqtool bench --persistent on) without choose()'s checks: say why not
    if H > MAX_H:
        raise SeqtoolError(f"the persistent LSTM kernel takes H <= {MAX_H}, got {H}; use --persistent off")
    grid_blocks, nvb, ub, vpb = plan(H)
    if not common.simulator() and not fits(H, ub, dtype):
        raise SeqtoolError(f"the persistent LSTM kernel at H={H} needs more than {SMEM_BYTES // 1024} KiB of "
                           f"shared memory per block on this GPU ({_sm_count()} SMs); use --persistent off")
    kernel = kernel_builder(np.dtype(dtype), H, nvb, ub, vpb)
    kernel[grid_blocks, max(1, min(THREADS, vpb * ub * N))](*args)


def run(gates, b, w_hh, h, c, y, lengths, reverse):
    """The recurrence of lstm.lstm_forward in one launch: fills gates, h, c, y in place.

    gates holds the input projection on entry, h and c their initial slot (see lstm.py).
    """
    xp = common.array_module(gates)
    T, N, H = y.shape
    _launch(_kernel, gates.dtype, H, N, gates, b, xp.ascontiguousarray(w_hh), h, c, y, lengths,
            bool(reverse))


@common.kernel_cache
def _backward_kernel(dtype, H, NVB, UB, VPB):
    cu, one, _, unit_backward, ty, unit_at = _builder(dtype)
    W_SHAPE = (VPB, UB, 4 * H + 1)  # column m of W_hh of each owned unit m

    @cu.jit
    def lstm_persistent_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse):
        # dgates (4H, T, N) out; dh, dc (H, N): in, the gradients reaching the last state;
        # out, those reaching the initial state. Layouts of lstm.py otherwise.
        T, N = dy.shape[0], dy.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)
        for k in range(tid, VPB * UB * 4 * H, nt):
            lu, q = k // (4 * H), k % (4 * H)
            vb, m = unit_at(blk, nblk, lu // UB, lu % UB, NVB)
            if vb < NVB and m < H:
                w_s[lu // UB, lu % UB, q] = w_hh[q, m]
        cuda.syncthreads()
        g = cuda.cg.this_grid()
        for s in range(T):
            t = s if reverse else T - 1 - s  # the opposite order of the forward sweep
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            for k in range(tid, VPB * UB * N, nt):  # phase 1: gate gradients of units (j, n)
                lu, n = k // N, k % N
                vb, j = unit_at(blk, nblk, lu // UB, lu % UB, NVB)
                if vb < NVB and j < H:
                    if t >= lengths[n]:  # padding: dh and dc pass through
                        for q in range(4):
                            dgates[q * H + j, t, n] = 0
                    else:
                        d_i, d_f, d_g, d_o, dc_prev = unit_backward(
                            gates[j, t, n], gates[H + j, t, n], gates[2 * H + j, t, n],
                            gates[3 * H + j, t, n], c[prev, j, n], c[cur, j, n],
                            dh[j, n] + dy[t, n, j], dc[j, n])
                        dc[j, n] = dc_prev
                        dgates[j, t, n] = d_i
                        dgates[H + j, t, n] = d_f
                        dgates[2 * H + j, t, n] = d_g
                        dgates[3 * H + j, t, n] = d_o
            g.sync()  # every gate gradient of step t is written
            for k in range(tid, VPB * UB * N, nt):  # phase 2: dh_{t-1} of units (m, n)
                lu, n = k // N, k % N
                lv, u = lu // UB, lu % UB
                vb, m = unit_at(blk, nblk, lv, u, NVB)
                if vb < NVB and m < H and t < lengths[n]:
                    acc = one - one  # dtype-typed zero
                    for q in range(4 * H):
                        acc += w_s[lv, u, q] * dgates[q, t, n]
                    dh[m, n] = acc

    return lstm_persistent_backward


def run_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse):
    """The recurrence of lstm.lstm_backward in one launch: fills dgates and turns dh, dc (H, N)
    from the gradients at the last state into those at the initial state, in place."""
    xp = common.array_module(gates)
    T, N, H = dy.shape
    _launch(_backward_kernel, gates.dtype, H, N, dgates, dh, dc, gates, c, dy,
            xp.ascontiguousarray(w_hh), lengths, bool(reverse))
