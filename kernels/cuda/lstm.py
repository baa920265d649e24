"""LSTM layer on the GPU, one direction: the CUDA twin of seqtool.kernels.lstm.

Same names, arguments, shapes and saved arrays as the CPU kernel (see kernels/lstm.py):
  x (T, N, D); w_ih (4H, D); w_hh (4H, H); b (4H,); lengths (N,) int64
  h      (T+1, N, H)  state chain (slot convention of kernels/lstm.py)
  c      (T+1, H, N)  cell chain, same slots, gate-major
  gates  (4H, T, N)   activated i, f, g, o (zero on padding)
The recurrence runs as one persistent launch per pass (persistent.py); with settings mode
"steps", per step: one GEMM through the array module, rec (4H, N) = W_hh h_{t-1}^T, then one
fused kernel with a thread per (j, n), n fastest, so that gate-major reads and writes coalesce.
"""
from seqtool.kernels.cuda import common, persistent, settings
from seqtool.kernels.cuda.common import grid, kernel_cache, steps

# numba.cuda, set on first build: the simulator swaps module globals that refer to numba.cuda
# for its fake (a closure variable would keep the real module).
cuda = None


@kernel_cache
def _kernels(dtype):
    global cuda
    cu = cuda = common.cuda()
    cell = common.cell_of()
    unit_forward, unit_backward = common.lstm_unit(dtype)

    @cu.jit
    def forward_step(gates, rec, b, h, c, y, lengths, t, prev, cur):
        # gates[:, t] (4H, N): input projection in, activated gates out
        N, H = h.shape[1], h.shape[2]
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            for q in range(4):
                gates[q * H + j, t, n] = 0
            c[cur, j, n] = c[prev, j, n]
            h[cur, n, j] = h[prev, n, j]
            y[t, n, j] = 0
            return
        i_, f_, g_, o_, cv, hv = unit_forward(
            gates[j, t, n] + rec[j, n] + b[j], gates[H + j, t, n] + rec[H + j, n] + b[H + j],
            gates[2 * H + j, t, n] + rec[2 * H + j, n] + b[2 * H + j],
            gates[3 * H + j, t, n] + rec[3 * H + j, n] + b[3 * H + j], c[prev, j, n])
        gates[j, t, n] = i_
        gates[H + j, t, n] = f_
        gates[2 * H + j, t, n] = g_
        gates[3 * H + j, t, n] = o_
        c[cur, j, n] = cv
        h[cur, n, j] = hv
        y[t, n, j] = hv

    @cu.jit
    def backward_step(dgates, dh, dc, gates, c, dy, lengths, t, prev, cur):
        # dh, dc (H, N): gradients carried into step t. dc leaves as the one reaching c_{t-1};
        # dh is replaced afterwards by (W_hh^T dgates_t) on the valid rows (common.merge_rows).
        H, N = dh.shape
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            for q in range(4):
                dgates[q * H + j, t, n] = 0  # padding: the carried gradients pass through
            return
        d_i, d_f, d_g, d_o, dc_prev = unit_backward(
            gates[j, t, n], gates[H + j, t, n], gates[2 * H + j, t, n], gates[3 * H + j, t, n],
            c[prev, j, n], c[cur, j, n], dh[j, n] + dy[t, n, j], dc[j, n])
        dc[j, n] = dc_prev
        dgates[j, t, n] = d_i
        dgates[H + j, t, n] = d_f
        dgates[2 * H + j, t, n] = d_g
        dgates[3 * H + j, t, n] = d_o

    return forward_step, backward_step


def _start(x, h0, c0, w_ih, H, reverse, xp):
    """The input projection of all steps, gate-major, and the chains with their initial slot."""
    T, N, _ = x.shape
    gates = common.project_inputs(x, w_ih)  # (4H, T, N)
    h, y = common.start_chain(x, h0, reverse, xp)
    c = xp.empty((T + 1, H, N), x.dtype)
    c[T if reverse else 0] = c0.T
    return gates, h, c, y


def lstm_forward(x, h0, c0, w_ih, w_hh, b, lengths, reverse, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), c (T+1, H, N), gates (4H, T, N)."""
    _, xp, lengths = common.prepare(x, lengths)
    T, N, _ = x.shape
    H = h0.shape[1]
    gates, h, c, y = _start(x, h0, c0, w_ih, H, reverse, xp)

    if settings.current().whole_sequence:
        persistent.run(gates, b, w_hh, h, c, y, lengths, reverse)
        return y, h, c, gates
    forward_step, _ = _kernels(x.dtype)
    launch = grid(N * H)
    for t, prev, cur in steps(T, reverse):
        rec = w_hh @ h[prev].T  # (4H, N)
        forward_step[launch](gates, rec, b, h, c, y, lengths, t, prev, cur)
    return y, h, c, gates


def lstm_backward(x, w_ih, w_hh, h, c, gates, lengths, reverse, dy, dh_n, dc_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0, dc0 (N, H), dw_ih (4H, D), dw_hh (4H, H), db (4H,)."""
    _, xp, lengths = common.prepare(x, lengths)
    T, N, _ = x.shape
    H = h.shape[2]
    dgates = xp.empty((4 * H, T, N), x.dtype)  # gradients of the gate pre-activations
    dh = dh_n.T.copy()  # (H, N), C order; a copy even when N or H is 1 (updated in place)
    dc = dc_n.T.copy()

    if settings.current().whole_sequence:
        persistent.run_backward(dgates, dh, dc, gates, c, dy, w_hh, lengths, reverse)
    else:
        _, backward_step = _kernels(x.dtype)
        w_hh_t = xp.ascontiguousarray(w_hh.T)  # (H, 4H)
        launch = grid(N * H)
        for t, prev, cur in steps(T, reverse, backward=True):
            backward_step[launch](dgates, dh, dc, gates, c, dy, lengths, t, prev, cur)
            common.merge_rows(dh, w_hh_t @ dgates[:, t], lengths, t, False, batch_axis=1)
    dx, dw_ih, dg2 = common.input_grads(x, w_ih, dgates, need_dx, xp)
    return (dx, xp.ascontiguousarray(dh.T), xp.ascontiguousarray(dc.T), dw_ih,
            dg2 @ common.states_in(h, reverse), dg2.sum(axis=1))
