"""Persistent GRU (both forms), forward and backward: the whole sequence in one launch.

The pattern, layouts and launch of persistent.py with G = 3; arrays as in gru.py:
gates (3H, T, N) input projection in, activated r, z, n out; hn (H, T, N) W_hn h + b_hn
(reset_after) or r * h_{t-1} (classic); h (T+1, N, H); y (T, N, H).
The classic form's n needs W_hn (r * h) over every unit's r, so its forward takes two barriers
a step (r, z and r * h; then n and h), and its backward three phases (gates; r's gradient
through W_hn^T; dh through W_hr, W_hz).
"""
from seqtool.kernels.cuda import common, persistent

# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None


@common.kernel_cache
def _kernel(dtype, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    global cuda
    (cu, one, ty, owned, stage_rows, _, row, _, barrier,
     W_SHAPE, _) = persistent.parts(dtype, 3, H, NVB, UB, VPB, STAGED, GRID_SYNC)
    cuda = cu
    _, sigm, tanh_ = common.activations(dtype)

    @cu.jit
    def gru_persistent(gates, b_ih, b_hh, w_hh, h, hn, y, lengths, reverse, reset_after):
        T, N = y.shape[0], y.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)  # the 3 gate rows of each owned unit
        stage_rows(w_s, w_hh, blk, nblk, tid, nt)
        for s in range(T):
            t = T - 1 - s if reverse else s
            prev, cur = (t + 1, t) if reverse else (t, t + 1)
            for k in range(tid, VPB * UB * N, nt):  # r, z (and n, h when reset_after)
                n, lv, u, j, mine = owned(k, N, blk, nblk)
                if mine:
                    if t >= lengths[n]:  # padding: the state carries over
                        for q in range(3):
                            gates[q * H + j, t, n] = 0
                        hn[j, t, n] = 0
                        h[cur, n, j] = h[prev, n, j]
                        y[t, n, j] = 0
                        continue
                    a_r = gates[j, t, n] + b_ih[j] + b_hh[j]
                    a_z = gates[H + j, t, n] + b_ih[H + j] + b_hh[H + j]
                    a_n = b_hh[2 * H + j]
                    for m in range(H):
                        hm = h[prev, n, m]
                        a_r += row(w_s, w_hh, lv, u, j, m) * hm
                        a_z += row(w_s, w_hh, lv, UB + u, H + j, m) * hm
                        if reset_after:
                            a_n += row(w_s, w_hh, lv, 2 * UB + u, 2 * H + j, m) * hm
                    r_ = sigm(a_r)
                    z_ = sigm(a_z)
                    gates[j, t, n] = r_
                    gates[H + j, t, n] = z_
                    if reset_after:
                        hn[j, t, n] = a_n
                        nv = tanh_(gates[2 * H + j, t, n] + b_ih[2 * H + j] + r_ * a_n)
                        gates[2 * H + j, t, n] = nv
                        hv = (one - z_) * nv + z_ * h[prev, n, j]
                        h[cur, n, j] = hv
                        y[t, n, j] = hv
                    else:
                        hn[j, t, n] = r_ * h[prev, n, j]
            barrier()  # reset_after: all of h_t written; classic: every r * h_{t-1} written
            if not reset_after:
                for k in range(tid, VPB * UB * N, nt):  # classic: n = tanh(... + W_hn (r * h))
                    n, lv, u, j, mine = owned(k, N, blk, nblk)
                    if mine and t < lengths[n]:
                        a_n = b_hh[2 * H + j]
                        for m in range(H):
                            a_n += row(w_s, w_hh, lv, 2 * UB + u, 2 * H + j, m) * hn[m, t, n]
                        nv = tanh_(gates[2 * H + j, t, n] + b_ih[2 * H + j] + a_n)
                        gates[2 * H + j, t, n] = nv
                        z_ = gates[H + j, t, n]
                        hv = (one - z_) * nv + z_ * h[prev, n, j]
                        h[cur, n, j] = hv
                        y[t, n, j] = hv
                barrier()  # all of h_t is written

    return gru_persistent


def run(gates, b_ih, b_hh, w_hh, h, hn, y, lengths, reverse, reset_after):
    """The recurrence of gru.gru_forward in one launch: fills gates, hn, h, y in place."""
    xp = common.array_module(gates)
    T, N, H = y.shape
    persistent.launch(_kernel, 3, gates.dtype, H, N, (gates, b_ih, b_hh, xp.ascontiguousarray(w_hh), h, hn, y,
                                                       lengths, bool(reverse), bool(reset_after)))


@common.kernel_cache
def _backward_kernel(dtype, H, NVB, UB, VPB, STAGED, GRID_SYNC):
    global cuda
    (cu, one, ty, owned, _, stage_cols, _, col_dot, barrier,
     _, W_SHAPE) = persistent.parts(dtype, 3, H, NVB, UB, VPB, STAGED, GRID_SYNC)
    cuda = cu

    @cu.jit
    def gru_persistent_backward(dgx, dgh, dh, gates, hn, h, dy, w_hh, lengths, reverse, reset_after):
        # dgx, dgh (3H, T, N) out: gradients of the input-side and hidden-side pre-activations;
        # dh (H, N): in at the last state, out at the initial one.
        T, N = dy.shape[0], dy.shape[1]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        w_s = cuda.shared.array(W_SHAPE, ty)  # column m of W_hh of each owned unit m
        stage_cols(w_s, w_hh, blk, nblk, tid, nt)
        for s in range(T):
            t = s if reverse else T - 1 - s
            prev = t + 1 if reverse else t
            for k in range(tid, VPB * UB * N, nt):  # phase 1: gate gradients of units (j, n)
                n, _, _, j, mine = owned(k, N, blk, nblk)
                if mine:
                    if t >= lengths[n]:  # padding: dh passes through
                        for q in range(3):
                            dgx[q * H + j, t, n] = 0
                            dgh[q * H + j, t, n] = 0
                        continue
                    r_, z_, n_ = gates[j, t, n], gates[H + j, t, n], gates[2 * H + j, t, n]
                    dh_t = dh[j, n] + dy[t, n, j]
                    dn_pre = dh_t * (one - z_) * (one - n_ * n_)
                    dz = dh_t * (h[prev, n, j] - n_) * z_ * (one - z_)
                    dgx[H + j, t, n] = dz
                    dgh[H + j, t, n] = dz
                    dgx[2 * H + j, t, n] = dn_pre
                    dh[j, n] = dh_t * z_  # the direct path; the products are added below
                    if reset_after:
                        dr = dn_pre * hn[j, t, n] * r_ * (one - r_)
                        dgx[j, t, n] = dr
                        dgh[j, t, n] = dr
                        dgh[2 * H + j, t, n] = dn_pre * r_
                    else:
                        dgh[2 * H + j, t, n] = dn_pre
            barrier()  # every gradient of phase 1 is written
            if not reset_after:
                for k in range(tid, VPB * UB * N, nt):  # phase 2: r through W_hn^T (dn_pre)
                    n, lv, u, j, mine = owned(k, N, blk, nblk)
                    if mine and t < lengths[n]:
                        d_rh = col_dot(w_s, w_hh, dgx, lv, u, j, 2 * H, 3 * H, t, n)
                        r_ = gates[j, t, n]
                        dr = d_rh * h[prev, n, j] * r_ * (one - r_)
                        dgx[j, t, n] = dr
                        dgh[j, t, n] = dr
                        dh[j, n] += d_rh * r_
                barrier()  # every r gradient is written
            for k in range(tid, VPB * UB * N, nt):  # phase 3: dh_{t-1} += W_h^T (gate gradients)
                n, lv, u, m, mine = owned(k, N, blk, nblk)
                if mine and t < lengths[n]:
                    if reset_after:
                        dh[m, n] += col_dot(w_s, w_hh, dgh, lv, u, m, 0, 3 * H, t, n)
                    else:  # W_hn multiplies r * h: its share came in phase 2
                        dh[m, n] += col_dot(w_s, w_hh, dgx, lv, u, m, 0, 2 * H, t, n)

    return gru_persistent_backward


def run_backward(dgx, dgh, dh, gates, hn, h, dy, w_hh, lengths, reverse, reset_after):
    """The recurrence of gru.gru_backward in one launch: fills dgx, dgh, turns dh (H, N) into the
    gradient at the initial state, in place."""
    xp = common.array_module(gates)
    T, N, H = dy.shape
    persistent.launch(_backward_kernel, 3, gates.dtype, H, N, (dgx, dgh, dh, gates, hn, h, dy,
                                                                xp.ascontiguousarray(w_hh), lengths,
                                                                bool(reverse), bool(reset_after)))
