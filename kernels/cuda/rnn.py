"""Vanilla RNN layer on the GPU, one direction: the CUDA twin of seqtool.kernels.rnn.

  h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  act = tanh or relu
Shapes and saved arrays as in kernels/rnn.py: x (T, N, D); w_ih (H, D); w_hh (H, H); b (H,);
h (T+1, N, H) state chain; a (H, T, N) the activations (gate-major, zero on padding), from
which backward reads the derivative.
The recurrence runs as one persistent launch per pass (persistent_rnn.py); with settings mode
"steps", per step: one GEMM through the array module, one fused kernel with a thread per (j, n).
"""
from seqtool.kernels.cuda import common, persistent_rnn, settings
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
    zero = one - one

    @cu.jit
    def forward_step(act, rec, b, h, y, lengths, t, prev, cur, relu):
        # act[:, t] (H, N): input projection in, activation out; rec (H, N) = W_hh h_{t-1}^T
        N, H = h.shape[1], h.shape[2]
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            act[j, t, n] = 0
            h[cur, n, j] = h[prev, n, j]
            y[t, n, j] = 0
            return
        a = act[j, t, n] + rec[j, n] + b[j]
        hv = max(a, zero) if relu else tanh_(a)
        act[j, t, n] = hv
        h[cur, n, j] = hv
        y[t, n, j] = hv

    @cu.jit
    def backward_step(dpre, dh, act, dy, lengths, t, relu):
        # dh (H, N): gradient carried into step t; replaced afterwards by W_hh^T dpre_t.
        H, N = dh.shape
        j, n = cell(cuda.grid(1), N, H)
        if j == H:
            return
        if t >= lengths[n]:
            dpre[j, t, n] = 0  # padding: dh passes through unchanged
            return
        a = act[j, t, n]
        g = dh[j, n] + dy[t, n, j]
        if relu:
            dpre[j, t, n] = g if a > zero else zero
        else:
            dpre[j, t, n] = g * (one - a * a)

    return forward_step, backward_step


def rnn_forward(x, h0, w_ih, w_hh, b, lengths, reverse, relu, nthreads):
    """Returns y (T, N, H) and what backward needs: h (T+1, N, H), a (H, T, N)."""
    cu, xp, lengths = common.prepare(x, lengths)
    T, N, _ = x.shape
    H = h0.shape[1]
    act = common.project_inputs(x, w_ih)
    h, y = common.start_chain(x, h0, reverse, xp)
    if settings.current().whole_sequence:
        persistent_rnn.run(act, b, w_hh, h, y, lengths, reverse, relu)
        return y, h, act
    forward_step, _ = _kernels(x.dtype)
    launch = grid(N * H)
    for t, prev, cur in steps(T, reverse):
        forward_step[launch](act, w_hh @ h[prev].T, b, h, y, lengths, t, prev, cur, bool(relu))
    return y, h, act


def rnn_backward(x, w_ih, w_hh, h, act, lengths, reverse, relu, dy, dh_n, need_dx, nthreads):
    """Returns dx (T, N, D), dh0 (N, H), dw_ih (H, D), dw_hh (H, H), db (H,)."""
    cu, xp, lengths = common.prepare(x, lengths)
    T, N, _ = x.shape
    H = h.shape[2]
    dpre = xp.empty((H, T, N), x.dtype)
    dh = dh_n.T.copy()  # (H, N), C order; a copy even when N or H is 1 (updated in place)
    if settings.current().whole_sequence:
        persistent_rnn.run_backward(dpre, dh, act, dy, w_hh, lengths, reverse, relu)
    else:
        _, backward_step = _kernels(x.dtype)
        w_hh_t = xp.ascontiguousarray(w_hh.T)
        launch = grid(N * H)
        for t, _, _ in steps(T, reverse, backward=True):
            backward_step[launch](dpre, dh, act, dy, lengths, t, bool(relu))
            common.merge_rows(dh, w_hh_t @ dpre[:, t], lengths, t, False, batch_axis=1)
    dx, dw_ih, d2 = common.input_grads(x, w_ih, dpre, need_dx, xp)
    return dx, xp.ascontiguousarray(dh.T), dw_ih, d2 @ common.states_in(h, reverse), d2.sum(axis=1)
