"""Deliberately naive recurrent layers: one example, one time step, one formula at a time.

Independent of the kernels (no shared code, no packing tricks), so that the kernels, their
CUDA twins and `seqtool check` have something obviously correct to agree with.
"""
import numpy as np


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _cell_step(cell, x_t, h, c, w_ih, w_hh, b_ih, b_hh, relu, reset_after):
    H = h.shape[0]
    if cell == "lstm":
        z = w_ih @ x_t + b_ih + w_hh @ h + b_hh
        i, f, g, o = _sigmoid(z[:H]), _sigmoid(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), _sigmoid(z[3 * H:])
        c = f * c + i * g
        return o * np.tanh(c), c
    if cell == "gru":
        gx = w_ih @ x_t + b_ih
        r = _sigmoid(gx[:H] + w_hh[:H] @ h + b_hh[:H])
        z = _sigmoid(gx[H:2 * H] + w_hh[H:2 * H] @ h + b_hh[H:2 * H])
        if reset_after:
            n = np.tanh(gx[2 * H:] + r * (w_hh[2 * H:] @ h + b_hh[2 * H:]))
        else:
            n = np.tanh(gx[2 * H:] + w_hh[2 * H:] @ (r * h) + b_hh[2 * H:])
        return (1 - z) * n + z * h, c
    a = w_ih @ x_t + b_ih + w_hh @ h + b_hh
    return (np.maximum(a, 0.0) if relu else np.tanh(a)), c


def layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse=False, relu=False, reset_after=True):
    """x (T, N, D) -> y (T, N, H) zero past each length, h_n, c_n (N, H) at each example's end."""
    T, N, _ = x.shape
    H = h0.shape[1]
    y = np.zeros((T, N, H))
    h_n = np.zeros((N, H))
    c_n = np.zeros((N, H))
    for n in range(N):
        h, c = h0[n].astype(np.float64), (c0[n] if c0 is not None else np.zeros(H)).astype(np.float64)
        steps = range(lengths[n] - 1, -1, -1) if reverse else range(lengths[n])
        for t in steps:
            h, c = _cell_step(cell, x[t, n], h, c, w_ih, w_hh, b_ih, b_hh, relu, reset_after)
            y[t, n] = h
        h_n[n], c_n[n] = h, c
    return y, h_n, c_n
