"""Text generation from a stacked unidirectional RNN language model, inside compiled code.

One call generates `n` tokens with no Python in between: for each token, the head turns the
top layer's state into logits, one token is picked (argmax, or temperature / top-k sampling
with a pre-drawn uniform), and the token is fed through every layer. The state arrays are
updated in place, so a caller generating in chunks (--stream) carries it from call to call.

Convention: the state passed in has already consumed every token so far (the prime text),
so there is no "last token" argument; with a zero state and no prime, the first token is
drawn from softmax(head_b).

Shapes (G = 4 lstm, 3 gru, 1 rnn; L layers; per-layer weights stacked so one call takes any
depth; layer 0's input weights are separate because E need not equal H):
  embed     (V, E)          token embeddings
  w_ih0     (GH, E)         layer 0 input weights (PyTorch layout and gate order)
  w_ih_rest (L-1, GH, H)    input weights of layers 1.. (shape (0, GH, H) when L == 1)
  w_hh      (L, GH, H)      recurrent weights
  b_ih, b_hh (L, GH)        biases
  head_w    (V, H), head_b (V,)
  h, c      (L, H)          state, in/out (c is ignored except for the LSTM)
  uniforms  (n,) float64    one U[0, 1) per token (unused with argmax)
  out       (n,) int64      the generated token ids
cell: 0 lstm, 1 gru, 2 rnn. Matrix-vector products use np.dot (SciPy's BLAS, one thread).
Per token, 2x256 LSTM: ~1.05 M multiply-adds, ~4.2 MB of float32 weights read.
"""
import numpy as np
from numba import njit

from seqtool.kernels.activations import sigm, tanh_, unit

LSTM, GRU, RNN = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _lstm_cell(gx, gh, b_ih, b_hh, h, c):
    # gx = W_ih x, gh = W_hh h (4H,): gates i, f, g, o; updates h, c (H,) in place.
    H = h.shape[0]
    for k in range(4 * H):
        gx[k] += gh[k] + b_ih[k] + b_hh[k]
    for j in range(H):
        i_ = sigm(gx[j])
        f_ = sigm(gx[H + j])
        g_ = tanh_(gx[2 * H + j])
        o_ = sigm(gx[3 * H + j])
        c[j] = f_ * c[j] + i_ * g_
        h[j] = o_ * tanh_(c[j])


@njit(cache=True, error_model="numpy")
def _gru_cell(gx, gh, b_ih, b_hh, w_hh, h, rh, reset_after):
    # gx = W_ih x (3H,): r, z, n. reset_after: gh = W_hh h (3H,); classic: gh = W_hr,hz h (2H,)
    # and the n gate needs W_hn (r * h) first, a second product. Updates h (H,) in place.
    H = h.shape[0]
    one = unit(h)
    for k in range(2 * H):
        gx[k] = sigm(gx[k] + b_ih[k] + gh[k] + b_hh[k])  # r, z
    if reset_after:
        for j in range(H):
            gx[2 * H + j] = tanh_(gx[2 * H + j] + b_ih[2 * H + j] + gx[j] * (gh[2 * H + j] + b_hh[2 * H + j]))
    else:
        for j in range(H):
            rh[j] = gx[j] * h[j]
        np.dot(w_hh[2 * H:], rh, gh[2 * H:])
        for j in range(H):
            gx[2 * H + j] = tanh_(gx[2 * H + j] + b_ih[2 * H + j] + gh[2 * H + j] + b_hh[2 * H + j])
    for j in range(H):
        z_ = gx[H + j]
        h[j] = (one - z_) * gx[2 * H + j] + z_ * h[j]


@njit(cache=True, error_model="numpy")
def _rnn_cell(gx, gh, b_ih, b_hh, h, relu):
    H = h.shape[0]
    zero = unit(h) - unit(h)
    for j in range(H):
        v = gx[j] + b_ih[j] + gh[j] + b_hh[j]
        h[j] = max(v, zero) if relu else tanh_(v)


@njit(cache=True, error_model="numpy")
def pick(logits, temperature, top_k, argmax, u):
    """One token id from logits (V,): argmax, or a draw with uniform u from
    softmax(logits / temperature) restricted to the top_k largest (0 = all)."""
    V = logits.shape[0]
    if argmax:
        return np.argmax(logits)
    thr = -np.inf
    if 0 < top_k < V:
        thr = np.sort(logits)[V - top_k]  # ties with the k-th largest are kept too
    m = np.max(logits)
    p = np.empty(V, np.float64)
    total = 0.0
    for v in range(V):
        p[v] = np.exp((np.float64(logits[v]) - m) / temperature) if logits[v] >= thr else 0.0
        total += p[v]
    target = u * total
    acc = 0.0
    last = 0
    for v in range(V):
        if p[v] > 0.0:
            acc += p[v]
            last = v
            if acc > target:
                return v
    return last  # u * total rounded past the sum


@njit(cache=True, error_model="numpy")
def sample_tokens(embed, w_ih0, w_ih_rest, w_hh, b_ih, b_hh, head_w, head_b, h, c,
                  cell, reset_after, relu, temperature, top_k, argmax, uniforms, out):
    """Generate out.shape[0] tokens into out; h, c (L, H) advance past them (see the header)."""
    L, H = h.shape
    GH = w_hh.shape[1]
    gx = np.empty(GH, h.dtype)  # W_ih x of the current layer, then its activated gates
    gh = np.empty(GH, h.dtype)  # W_hh h
    rh = np.empty(H, h.dtype)  # classic GRU: r * h
    logits = np.empty(head_w.shape[0], h.dtype)
    n_hh = 2 * H if (cell == GRU and not reset_after) else GH
    for i in range(out.shape[0]):
        np.dot(head_w, h[L - 1], logits)  # (V,)
        logits += head_b
        tok = pick(logits, temperature, top_k, argmax, uniforms[i])
        out[i] = tok
        for l in range(L):
            if l == 0:
                np.dot(w_ih0, embed[tok], gx)
            else:
                np.dot(w_ih_rest[l - 1], h[l - 1], gx)
            np.dot(w_hh[l, :n_hh], h[l], gh[:n_hh])
            if cell == LSTM:
                _lstm_cell(gx, gh, b_ih[l], b_hh[l], h[l], c[l])
            elif cell == GRU:
                _gru_cell(gx, gh, b_ih[l], b_hh[l], w_hh[l], h[l], rh, reset_after)
            else:
                _rnn_cell(gx, gh, b_ih[l], b_hh[l], h[l], relu)
