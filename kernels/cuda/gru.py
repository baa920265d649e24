"""GRU layer on the GPU, one direction: the CUDA twin of seqtool.kernels.gru.

Gate order r, z, n; both forms (see kernels/gru.py):
  reset_after=True:  n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   one GEMM per step
  reset_after=False: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)   two GEMMs per step
Shapes and saved arrays as in kernels/gru.py:
  h      (T+1, N, H)  state chain
  gates  (3H, T, N)   activated r, z, n (zero on padding)
  hn     (H, T, N)    reset_after: W_hn h + b_hn; classic: r * h_{t-1} (the input of W_hn)
The recurrence runs as one persistent launch per pass (persistent_gru.py); with settings mode
"steps", each step: GEMM(s) through the array module, fused kernels with a thread per (j, n).
"""
from seqtool.kernels.cuda import common, persistent_gru, settings
from seqtool.kernels.cuda.common import grid, kernel_cache, steps

# numba.cuda, set on first build: the simulator swaps module globals that refer to numba.cuda
# for its fake (a closure variable would keep the real module).
cuda = None


@kernel_cache
def _kernels(dtype):
    global cuda
    cu = cuda = common.cuda()
    cell = common.cell_of()
    one, sigm, tanh_ = common.activations(dtype)

    @cu.jit
    def forward_rz(gates, rec, b_ih, b_hh, h, hn, lengths, t, prev, reset_after):
        # r, z from the input projection and rec (3H or 2H, N) = W_h h_{t-1}^T;
        # hn: W_hn h + b_hn (reset_after) or r * h_{t-1} (classic: the next GEMM's input).
        N, H = h.shape[1], h.shape[2]
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            for q in range(3):
                gates[q * H + j, t, n] = 0
            hn[j, t, n] = 0
            return
        r_ = sigm(gates[j, t, n] + b_ih[j] + rec[j, n] + b_hh[j])
        gates[j, t, n] = r_
        gates[H + j, t, n] = sigm(gates[H + j, t, n] + b_ih[H + j] + rec[H + j, n] + b_hh[H + j])
        if reset_after:
            hn[j, t, n] = rec[2 * H + j, n] + b_hh[2 * H + j]
        else:
            hn[j, t, n] = r_ * h[prev, n, j]

    @cu.jit
    def forward_n(gates, rec_n, b_ih, b_hh, h, hn, y, lengths, t, prev, cur, reset_after):
        # rec_n (H, N) = W_hn (r * h_{t-1})^T, classic form only (unused otherwise).
        N, H = h.shape[1], h.shape[2]
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            h[cur, n, j] = h[prev, n, j]
            y[t, n, j] = 0
            return
        if reset_after:
            nv = tanh_(gates[2 * H + j, t, n] + b_ih[2 * H + j] + gates[j, t, n] * hn[j, t, n])
        else:
            nv = tanh_(gates[2 * H + j, t, n] + b_ih[2 * H + j] + rec_n[j, n] + b_hh[2 * H + j])
        gates[2 * H + j, t, n] = nv
        z_ = gates[H + j, t, n]
        hv = (one - z_) * nv + z_ * h[prev, n, j]
        h[cur, n, j] = hv
        y[t, n, j] = hv

    @cu.jit
    def backward_a(dgx, dgh, dh, gates, hn, h, dy, lengths, t, prev, reset_after):
        # dgx: gradients of the input-side pre-activations, dgh: of the hidden-side ones.
        # dh (H, N) leaves holding the direct path dh_t * z; the GEMM terms are added after.
        H, N = dh.shape
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            for q in range(3):
                dgx[q * H + j, t, n] = 0
                dgh[q * H + j, t, n] = 0
            return
        r_ = gates[j, t, n]
        z_ = gates[H + j, t, n]
        n_ = gates[2 * H + j, t, n]
        dh_t = dh[j, n] + dy[t, n, j]
        dn_pre = dh_t * (one - z_) * (one - n_ * n_)
        dz = dh_t * (h[prev, n, j] - n_) * z_ * (one - z_)
        dgx[H + j, t, n] = dz
        dgh[H + j, t, n] = dz
        dgx[2 * H + j, t, n] = dn_pre
        dh[j, n] = dh_t * z_
        if reset_after:
            dr = dn_pre * hn[j, t, n] * r_ * (one - r_)
            dgx[j, t, n] = dr
            dgh[j, t, n] = dr
            dgh[2 * H + j, t, n] = dn_pre * r_
        else:
            dgh[2 * H + j, t, n] = dn_pre

    @cu.jit
    def backward_r(dgx, dgh, dh, d_rh, gates, h, lengths, t, prev):
        # Classic form: d_rh (H, N) = W_hn^T dn_pre is the gradient of r * h_{t-1}.
        H, N = dh.shape
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            return
        r_ = gates[j, t, n]
        dr = d_rh[j, n] * h[prev, n, j] * r_ * (one - r_)
        dgx[j, t, n] = dr
        dgh[j, t, n] = dr
        dh[j, n] += d_rh[j, n] * r_

    return forward_rz, forward_n, backward_a, backward_r


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), gates (3H, T, N), hn (H, T, N)."""
    cu, xp, lengths = common.prepare(x, lengths)
    T, N, _ = x.shape
    H = h0.shape[1]
    gates = common.project_inputs(x, w_ih)
    hn = xp.empty((H, T, N), x.dtype)
    h, y = common.start_chain(x, h0, reverse, xp)
    if settings.current().whole_sequence:
        persistent_gru.run(gates, b_ih, b_hh, w_hh, h, hn, y, lengths, reverse, reset_after)
        return y, h, gates, hn
    forward_rz, forward_n, _, _ = _kernels(x.dtype)
    w_h = w_hh if reset_after else w_hh[:2 * H]
    w_hn = w_hh[2 * H:]
    launch = grid(N * H)
    ra = bool(reset_after)
    for t, prev, cur in steps(T, reverse):
        rec = w_h @ h[prev].T  # (3H or 2H, N)
        forward_rz[launch](gates, rec, b_ih, b_hh, h, hn, lengths, t, prev, ra)
        rec_n = rec if reset_after else w_hn @ hn[:, t]  # classic: W_hn (r * h)^T, (H, N)
        forward_n[launch](gates, rec_n, b_ih, b_hh, h, hn, y, lengths, t, prev, cur, ra)
    return y, h, gates, hn


def gru_backward(x, w_ih, w_hh, h, gates, hn, lengths, reverse, reset_after, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (3H, D), dw_hh (3H, H), db_ih, db_hh (3H,)."""
    cu, xp, lengths = common.prepare(x, lengths)
    T, N, _ = x.shape
    H = h.shape[2]
    dgx = xp.empty((3 * H, T, N), x.dtype)
    dgh = xp.empty((3 * H, T, N), x.dtype)
    dh = dh_n.T.copy()  # (H, N), C order; a copy even when N or H is 1 (updated in place)
    if settings.current().whole_sequence:
        persistent_gru.run_backward(dgx, dgh, dh, gates, hn, h, dy, w_hh, lengths, reverse, reset_after)
    else:
        _steps_backward(x.dtype, dgx, dgh, dh, gates, hn, h, dy, w_hh, lengths, reverse, reset_after)
    dx, dw_ih, gx2 = common.input_grads(x, w_ih, dgx, need_dx, xp)
    gh2 = dgh.reshape(3 * H, T * N)
    dw_hh = gh2 @ common.states_in(h, reverse)
    if not reset_after:
        dw_hh[2 * H:] = gh2[2 * H:] @ hn.reshape(H, T * N).T  # W_hn multiplies r * h, not h
    return dx, xp.ascontiguousarray(dh.T), dw_ih, dw_hh, gx2.sum(axis=1), gh2.sum(axis=1)


def _steps_backward(dtype, dgx, dgh, dh, gates, hn, h, dy, w_hh, lengths, reverse, reset_after):
    """gru_backward's recurrence on the per-step kernels (settings mode "steps")."""
    xp = common.array_module(dgx)
    H, T, N = hn.shape
    _, _, backward_a, backward_r = _kernels(dtype)
    w_hh_t = xp.ascontiguousarray(w_hh.T)  # (H, 3H)
    w_hrz_t, w_hn_t = w_hh_t[:, :2 * H], w_hh_t[:, 2 * H:]
    launch = grid(N * H)
    ra = bool(reset_after)
    for t, prev, _ in steps(T, reverse, backward=True):
        backward_a[launch](dgx, dgh, dh, gates, hn, h, dy, lengths, t, prev, ra)
        if reset_after:
            dh_rec = w_hh_t @ dgh[:, t]
        else:
            d_rh = w_hn_t @ dgx[2 * H:, t]  # (H, N); zero columns on padding
            backward_r[launch](dgx, dgh, dh, d_rh, gates, h, lengths, t, prev)
            dh_rec = w_hrz_t @ dgx[:2 * H, t]
        common.merge_rows(dh, dh_rec, lengths, t, True, batch_axis=1)
