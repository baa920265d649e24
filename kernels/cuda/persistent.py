"""Persistent recurrences: a layer's whole sequence, one direction and pass, in ONE launch.

The per-step path (lstm.py, gru.py, rnn.py with settings mode "steps") launches a GEMM and a
gate kernel for every step: mostly launch latency and host overhead. Here, as in cuDNN's
persistent RNNs, the blocks step through time together inside one kernel:
  - the H hidden units are dealt out to NVB (virtual) blocks: block vb owns units
    j = vb + u * NVB, u < UB = ceil(H / NVB) (see `unit_of`), and reads only the rows of W_hh
    that feed them: its units' G gate rows (forward), or their columns of W_hh (backward).
    Where those fit (`fits`), they are staged in shared memory once; otherwise every step reads
    them from global memory (L2 on a GPU holds them across steps): no limit on H;
  - step t: every block computes its units for all N batch rows, reading h_{t-1} (N, H) from
    global memory (every block writes its slice, every block reads it all), then a barrier:
    all of h_t is written before anyone starts step t+1.
Two launch layouts, the same code:
  grid   NVB blocks, one per SM at most, synchronized by the cooperative grid sync (a
         cooperative launch needs every block resident at once: <= 256 threads and <= 48 KiB
         of static shared memory a block, so one block per SM always fits);
  block  one block hosts every unit and syncs with syncthreads: a plain launch any device
         takes, used where the cooperative one is refused (settings mode "auto") or asked for.
Under the CUDA simulator a grid sync only works with one block, so one block hosts all NVB
virtual blocks (VPB = NVB virtual blocks per block, a loop per step); on a GPU each block hosts
one (VPB = 1). The simulator thus exercises the unit partition of several blocks; the grid
sync across real blocks is checked by tests/test_cuda_grid_races.py.

The cells' kernels follow one pattern (this module: LSTM; persistent_gru.py, persistent_rnn.py):
forward, one barrier per step (two for the classic GRU, whose W_hn multiplies r * h of every
unit); backward in reverse time order,
  1. units (j, n): gate gradients from dh_t[j, n] + dy (and dc, one owner per unit), written
     to the gradient arrays at step t; barrier;
  2. units (m, n): dh_{t-1}[m, n] = sum_q W_hh[q, m] dgates[q, t, n] with column m of W_hh
     (padding rows: dh passes through).
The same thread owns (j, n) in both phases, so phase 2 -> the next phase 1 needs no barrier,
and the next phase 1 writes step t-1's gradients while slower blocks may still read step t's.
Outputs have the per-step kernels' layouts, so either backward runs on either forward's arrays.
Input projections and weight gradients stay single GEMMs (lstm.py, gru.py, rnn.py).
"""
import functools
import warnings

import numpy as np

from seqtool.errors import SeqtoolError
from seqtool.kernels.cuda import common, settings, toolchain

SMEM_BYTES = 48 * 1024  # static shared memory per block
THREADS = 256  # threads per block at most (tests shrink it)
VIRTUAL_BLOCKS = 2  # blocks the units are dealt to under the simulator (tests vary it)
# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None


def unit_of(block, grid_blocks, lv, u, nvb):
    """Hidden unit u of the lv-th virtual block hosted by `block` (of grid_blocks): virtual
    block vb = block + lv * grid_blocks owns units vb, vb + NVB, vb + 2 NVB, ... Returns
    (vb, j); (vb, j) is real only when vb < nvb and j < H. Compiled as a device function too."""
    vb = block + lv * grid_blocks
    return vb, vb + u * nvb


@functools.lru_cache(maxsize=None)
def _sm_count():
    return common.cuda().get_current_device().MULTIPROCESSOR_COUNT


def plan(H, grid_wide=True):
    """(grid blocks, virtual blocks NVB, units per virtual block UB, virtual blocks per block)."""
    if not grid_wide:
        return 1, 1, H, 1
    if common.simulator():
        nvb = max(1, min(H, VIRTUAL_BLOCKS))
        return 1, nvb, -(-H // nvb), nvb
    ub = -(-H // min(H, _sm_count()))
    nvb = -(-H // ub)
    return nvb, nvb, ub, 1


def fits(G, H, ub, vpb, dtype):
    """Whether a block's weights (G gate rows per unit forward, a column of G*H backward; rows
    padded by one value against bank conflicts) fit in shared memory."""
    size = np.dtype(dtype).itemsize
    return vpb * max(G * ub * (H + 1), ub * (G * H + 1)) * size <= SMEM_BYTES


def parts(dtype, G, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    """What every persistent kernel is built from: numba.cuda (also set as this module's
    `cuda`), the dtype's `one`, the shared-memory element type, and device functions:
      owned(k, N, blk, nblk) -> (n, lv, u, j, mine): the unit (lv, u) = global unit j and batch
                     row n of a block's k-th (unit, row) pair; mine: it exists (j < H)
      stage_rows     the G gate rows of W_hh (G*H, H) of a block's units -> shared (forward)
      stage_cols     the columns of W_hh of a block's units -> shared (backward)
      row(w_s, w, lv, srow, grow, m)   W_hh[grow, m] of a forward row (staged or global)
      col_dot(w_s, w, d, lv, u, m, q0, q1, t, n)   sum over q in [q0, q1) of W_hh[q, m] d[q, t, n]
                                                   (the backward column staged or global)
      barrier()      grid sync (GRID_SYNC) or syncthreads (one block)
    and the shared arrays' shapes (a dummy (1, 1, 1) when not STAGED)."""
    global cuda
    cu = cuda = common.cuda()
    one = common.activations(dtype)[0]
    unit_at = cu.jit(device=True)(unit_of)
    rows_shape = (VPB, G * UB, H + 1) if STAGED else (1, 1, 1)
    cols_shape = (VPB, UB, G * H + 1) if STAGED else (1, 1, 1)

    @cu.jit(device=True)
    def stage_rows(w_s, w_hh, blk, nblk, tid, nt):
        if STAGED:
            for k in range(tid, VPB * G * UB * H, nt):
                lv, rest = k // (G * UB * H), k % (G * UB * H)
                r, m = rest // H, rest % H  # r = q * UB + u
                vb, j = unit_at(blk, nblk, lv, r % UB, NVB)
                if vb < NVB and j < H:
                    w_s[lv, r, m] = w_hh[(r // UB) * H + j, m]
            cuda.syncthreads()

    @cu.jit(device=True)
    def stage_cols(w_s, w_hh, blk, nblk, tid, nt):
        if STAGED:
            for k in range(tid, VPB * UB * G * H, nt):
                lu, q = k // (G * H), k % (G * H)
                vb, m = unit_at(blk, nblk, lu // UB, lu % UB, NVB)
                if vb < NVB and m < H:
                    w_s[lu // UB, lu % UB, q] = w_hh[q, m]
            cuda.syncthreads()

    @cu.jit(device=True)
    def row(w_s, w, lv, srow, grow, m):
        if STAGED:
            return w_s[lv, srow, m]
        return w[grow, m]

    @cu.jit(device=True)
    def owned(k, N, blk, nblk):
        lu, n = k // N, k % N
        lv, u = lu // UB, lu % UB
        vb, j = unit_at(blk, nblk, lv, u, NVB)
        return n, lv, u, j, vb < NVB and j < H

    @cu.jit(device=True)
    def col_dot(w_s, w, d, lv, u, m, q0, q1, t, n):
        acc = one - one  # dtype-typed zero
        for q in range(q0, q1):
            if STAGED:
                acc += w_s[lv, u, q] * d[q, t, n]
            else:
                acc += w[q, m] * d[q, t, n]
        return acc

    if GRID_SYNC:
        @cu.jit(device=True)
        def barrier():
            cuda.cg.this_grid().sync()
    else:
        @cu.jit(device=True)
        def barrier():
            cuda.syncthreads()

    return (cu, one, common.numba_type(dtype), owned, stage_rows, stage_cols, row, col_dot, barrier,
            rows_shape, cols_shape)


@functools.lru_cache(maxsize=None)
def _configured(builder, dtype, G, H, nvb, ub, vpb, staged, grid_sync, grid_blocks, threads):
    """The kernel built and configured once per shape (common.configure): later launches skip
    building, configuring and, on a GPU, Numba's argument typing."""
    return common.configure(builder(np.dtype(dtype), H, nvb, ub, vpb, staged, grid_sync), grid_blocks, threads)


def layout(G, H, N, dtype, grid_wide):
    """(grid blocks, threads, NVB, UB, VPB, staged) of a launch."""
    grid_blocks, nvb, ub, vpb = plan(H, grid_wide)
    threads = max(1, min(THREADS, vpb * ub * N))
    return grid_blocks, threads, nvb, ub, vpb, fits(G, H, ub, vpb, dtype)


# (builder name, dtype, H, N) of grid launches this device refused: straight to one block
REFUSED: set = set()


def launch(builder, G, dtype, H, N, args):
    """One launch of `builder`'s kernel on `args`, laid out by the current settings mode."""
    key = (builder.__name__, np.dtype(dtype).str, H, N)
    with_fallback(key, lambda grid_wide: _launch(builder, G, dtype, H, N, args, grid_wide))


def with_fallback(key, run):
    """run(grid_wide=True) for settings modes "auto" and "grid"; in "auto", where the device
    refuses the cooperative launch (remembered by `key`), run(False): the one-block layout,
    which modes "block" and "steps" take directly."""
    mode = settings.current().mode
    if mode == "grid" or (mode == "auto" and key not in REFUSED):
        try:
            return run(True)
        except SeqtoolError:
            raise
        except Exception as err:
            if mode == "grid" or not _refused(err):
                raise
            REFUSED.add(key)
            warnings.warn(f"cooperative launch refused here ({toolchain.first_line(err)}); the "
                          "kernel runs in one block", RuntimeWarning, stacklevel=3)
    return run(False)


def _launch(builder, G, dtype, H, N, args, grid_wide):
    grid_blocks, threads, nvb, ub, vpb, staged = layout(G, H, N, dtype, grid_wide)
    kernel = _configured(builder, np.dtype(dtype), G, H, nvb, ub, vpb, staged, grid_wide, grid_blocks,
                         threads)
    run_kernel(kernel, args)


def run_kernel(kernel, args):
    """kernel(*args), with a CUDA setup failure met there (no driver, no NVVM) as one line."""
    try:
        kernel(*args)
    except Exception as err:
        setup = toolchain.toolchain_error(err) if not common.simulator() else None
        if setup is not None:
            raise setup from None
        raise


def _refused(err) -> bool:
    """A cooperative launch the device or driver does not take (too many blocks resident,
    no cooperative launch support): Numba's CudaAPIError, or, where numba-cuda launches through
    cuda.core, its CUDAError naming a cooperative launch."""
    if "COOPERATIVE" in str(err).upper():
        return True
    try:
        from numba.cuda.cudadrv.driver import CudaAPIError
    except ImportError:  # the simulator has no driver
        return False
    return isinstance(err, CudaAPIError)


# --------------------------------------------------------------------------- LSTM (G = 4)


@common.kernel_cache
def _kernel(dtype, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    (cu, one, ty, owned, stage_rows, _, row, _, barrier,
     W_SHAPE, _) = parts(dtype, 4, H, NVB, UB, VPB, STAGED, GRID_SYNC)
    unit_forward = common.lstm_unit(dtype)[0]

    @cu.jit
    def lstm_persistent(gates, b, w_hh, h, c, y, lengths, reverse):
        # Layouts of lstm.py: gates (4H, T, N), h (T+1, N, H), c (T+1, H, N), y (T, N, H).
        T, N = y.shape[0], y.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)  # the 4 gate rows of each owned unit
        stage_rows(w_s, w_hh, blk, nblk, tid, nt)
        for s in range(T):
            t = T - 1 - s if reverse else s
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            for k in range(tid, VPB * UB * N, nt):  # owned units (lu, n), n fastest
                n, lv, u, j, mine = owned(k, N, blk, nblk)
                if mine:
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
                            a_i += row(w_s, w_hh, lv, u, j, m) * hm
                            a_f += row(w_s, w_hh, lv, UB + u, H + j, m) * hm
                            a_g += row(w_s, w_hh, lv, 2 * UB + u, 2 * H + j, m) * hm
                            a_o += row(w_s, w_hh, lv, 3 * UB + u, 3 * H + j, m) * hm
                        i_, f_, g_, o_, cv, hv = unit_forward(a_i, a_f, a_g, a_o, c[prev, j, n])
                        gates[j, t, n] = i_
                        gates[H + j, t, n] = f_
                        gates[2 * H + j, t, n] = g_
                        gates[3 * H + j, t, n] = o_
                        c[cur, j, n] = cv
                        h[cur, n, j] = hv
                        y[t, n, j] = hv
            barrier()  # all of h_t is written before any block reads it

    return lstm_persistent


def run(gates, b, w_hh, h, c, y, lengths, reverse):
    """The recurrence of lstm.lstm_forward in one launch: fills gates, h, c, y in place.

    gates holds the input projection on entry, h and c their initial slot (see lstm.py).
    """
    xp = common.array_module(gates)
    T, N, H = y.shape
    launch(_kernel, 4, gates.dtype, H, N, (gates, b, xp.ascontiguousarray(w_hh), h, c, y, lengths,
                                           bool(reverse)))


@common.kernel_cache
def _backward_kernel(dtype, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    (cu, one, ty, owned, _, stage_cols, _, col_dot, barrier,
     _, W_SHAPE) = parts(dtype, 4, H, NVB, UB, VPB, STAGED, GRID_SYNC)
    unit_backward = common.lstm_unit(dtype)[1]

    @cu.jit
    def lstm_persistent_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse):
        # dgates (4H, T, N) out; dh, dc (H, N): in, the gradients reaching the last state;
        # out, those reaching the initial state. Layouts of lstm.py otherwise.
        T, N = dy.shape[0], dy.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)  # column m of W_hh of each owned unit m
        stage_cols(w_s, w_hh, blk, nblk, tid, nt)
        for s in range(T):
            t = s if reverse else T - 1 - s  # the opposite order of the forward sweep
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            for k in range(tid, VPB * UB * N, nt):  # phase 1: gate gradients of units (j, n)
                n, _, _, j, mine = owned(k, N, blk, nblk)
                if mine:
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
            barrier()  # every gate gradient of step t is written
            for k in range(tid, VPB * UB * N, nt):  # phase 2: dh_{t-1} of units (m, n)
                n, lv, u, m, mine = owned(k, N, blk, nblk)
                if mine and t < lengths[n]:
                    dh[m, n] = col_dot(w_s, w_hh, dgates, lv, u, m, 0, 4 * H, t, n)

    return lstm_persistent_backward


def run_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse):
    """The recurrence of lstm.lstm_backward in one launch: fills dgates and turns dh, dc (H, N)
    from the gradients at the last state into those at the initial state, in place."""
    xp = common.array_module(gates)
    T, N, H = dy.shape
    launch(_backward_kernel, 4, gates.dtype, H, N, (dgates, dh, dc, gates, c, dy,
                                                    xp.ascontiguousarray(w_hh), lengths, bool(reverse)))
