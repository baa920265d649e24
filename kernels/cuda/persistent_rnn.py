"""Persistent vanilla RNN (tanh / relu), forward and backward: the whole sequence in one launch.

The pattern, layouts and launch of persistent.py with G = 1; arrays as in rnn.py:
act (H, T, N) input projection in, activations out; h (T+1, N, H); y (T, N, H).
"""
from seqtool.kernels.cuda import common, persistent

# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None


@common.kernel_cache
def _kernel(dtype, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    global cuda
    (cu, one, ty, owned, stage_rows, _, row, _, barrier,
     W_SHAPE, _) = persistent.parts(dtype, 1, H, NVB, UB, VPB, STAGED, GRID_SYNC)
    cuda = cu
    tanh_ = common.activations(dtype)[2]

    @cu.jit
    def rnn_persistent(act, b, w_hh, h, y, lengths, reverse, relu):
        T, N = y.shape[0], y.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)  # the row of W_hh of each owned unit
        stage_rows(w_s, w_hh, blk, nblk, tid, nt)
        zero = one - one
        for s in range(T):
            t = T - 1 - s if reverse else s
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            for k in range(tid, VPB * UB * N, nt):  # owned units (lu, n), n fastest
                n, lv, u, j, mine = owned(k, N, blk, nblk)
                if mine:
                    if t >= lengths[n]:  # padding: the state carries over
                        act[j, t, n] = 0
                        h[cur, n, j] = h[prev, n, j]
                        y[t, n, j] = 0
                    else:
                        a = act[j, t, n] + b[j]
                        for m in range(H):
                            a += row(w_s, w_hh, lv, u, j, m) * h[prev, n, m]
                        hv = max(a, zero) if relu else tanh_(a)
                        act[j, t, n] = hv
                        h[cur, n, j] = hv
                        y[t, n, j] = hv
            barrier()  # all of h_t is written before any block reads it

    return rnn_persistent


def run(act, b, w_hh, h, y, lengths, reverse, relu):
    """The recurrence of rnn.rnn_forward in one launch: fills act, h, y in place."""
    xp = common.array_module(act)
    T, N, H = y.shape
    persistent.launch(_kernel, 1, act.dtype, H, N, (act, b, xp.ascontiguousarray(w_hh), h, y, lengths,
                                                     bool(reverse), bool(relu)))


@common.kernel_cache
def _backward_kernel(dtype, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    global cuda
    (cu, one, ty, owned, _, stage_cols, _, col_dot, barrier,
     _, W_SHAPE) = persistent.parts(dtype, 1, H, NVB, UB, VPB, STAGED, GRID_SYNC)
    cuda = cu

    @cu.jit
    def rnn_persistent_backward(dpre, dh, act, dy, w_hh, lengths, reverse, relu):
        # dpre (H, T, N) out; dh (H, N): in at the last state, out at the initial one.
        T, N = dy.shape[0], dy.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)  # column m of W_hh of each owned unit m
        stage_cols(w_s, w_hh, blk, nblk, tid, nt)
        zero = one - one
        for s in range(T):
            t = s if reverse else T - 1 - s
            for k in range(tid, VPB * UB * N, nt):  # phase 1: pre-activation gradients
                n, _, _, j, mine = owned(k, N, blk, nblk)
                if mine:
                    if t >= lengths[n]:  # padding: dh passes through
                        dpre[j, t, n] = 0
                    else:
                        a = act[j, t, n]
                        g = dh[j, n] + dy[t, n, j]
                        if relu:
                            dpre[j, t, n] = g if a > zero else zero
                        else:
                            dpre[j, t, n] = g * (one - a * a)
            barrier()  # every gradient of step t is written
            for k in range(tid, VPB * UB * N, nt):  # phase 2: dh_{t-1} of units (m, n)
                n, lv, u, m, mine = owned(k, N, blk, nblk)
                if mine and t < lengths[n]:
                    dh[m, n] = col_dot(w_s, w_hh, dpre, lv, u, m, 0, H, t, n)

    return rnn_persistent_backward


def run_backward(dpre, dh, act, dy, w_hh, lengths, reverse, relu):
    """The recurrence of rnn.rnn_backward in one launch: fills dpre, turns dh (H, N) into the
    gradient at the initial state, in place."""
    xp = common.array_module(act)
    T, N, H = dy.shape
    persistent.launch(_backward_kernel, 1, act.dtype, H, N, (dpre, dh, act, dy, xp.ascontiguousarray(w_hh),
                                                              lengths, bool(reverse), bool(relu)))
