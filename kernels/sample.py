"""Text generation from a stacked unidirectional RNN language model, inside compiled code.

One call generates `n` tokens with no Python in between: for each token, the head turns the
top layer's state into logits, one token is picked (argmax, or temperature / top-k sampling
with a pre-drawn uniform), and the token is fed through every layer. The caller's h and c
advance when the call returns, so a caller generating in chunks (--stream) carries the state
from call to call.

Threads: one token's work is too small to start a parallel loop per layer, so each thread
runs the whole loop over tokens on its own share of the hidden units and of the vocabulary
(head rows), and the threads meet at a spin barrier (spin.py) after the head and after each
layer; every thread then picks the same token from the same logits and uniform. The state is
double-buffered (hbuf[p] is read while hbuf[1 - p] is written), so no thread overwrites units
another is still reading. Measured on a 2-core Xeon (2 MB L2 per core): a 2 x 256 LSTM reads
~3.2 MB of weights per token, which one core streams from L3 at ~8k tokens/s; split in two,
each half stays in its core's L2 (~60 GB/s) and the pair runs at ~36k tokens/s (with the
weights on 2 MB pages, see seqtool.sampling._on_huge_pages).

Packed layout: the hidden units are cut into `nblocks` blocks (seqtool.sampling._kernel_weights),
and the rows of every (G H, .) matrix and (G H,) bias are reordered block by block, each
block holding its units' gate rows in gate order: [i f g o of block 0][i f g o of block 1]...
A thread takes a contiguous run of blocks, so its rows are one contiguous slice (one matrix-
vector product per matrix), and with nthreads = 1 the same arrays serve one thread.

Convention: the state passed in has already consumed every token so far (the prime text),
so there is no "last token" argument; with a zero state and no prime, the first token is
drawn from softmax(head_b).

Shapes (G = 4 lstm, 3 gru, 1 rnn; L layers; rows packed as above):
  x0        (V, D0)         per-token input of layer 0: embeddings (V, E), or, when w_ih0 has
                            no rows, the precomputed products embed @ W_ih0^T (V, GH)
  w_ih0     (GH, E) or (0, 0)  layer 0 input weights
  w_ih_rest (L-1, GH, H)    input weights of layers 1.. (shape (0, GH, H) when L == 1)
  w_hh      (L, GH, H)      recurrent weights
  b_ih, b_hh (L, GH)        biases
  head_w    (V, H), head_b (V,)   (not packed)
  h, c      (L, H)          state, in/out, natural unit order (c only matters for the LSTM)
  uniforms  (n,) float64    one U[0, 1) per token (unused with argmax)
  out       (n,) int64      the generated token ids
cell: 0 lstm, 1 gru, 2 rnn. Matrix-vector products use np.dot (SciPy's BLAS, one thread).
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import block
from seqtool.kernels.spin import STRIDE, barrier

LSTM, GRU, RNN = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _lstm_cell(gx, gh, b_ih, b_hh, h_new, c):
    # gx = W_ih x, gh = W_hh h of one block's nb units (4 nb,): gates i, f, g, o; b_ih, b_hh
    # the block's biases. Writes h_new (nb,), updates c (nb,) in place.
    nb = h_new.shape[0]
    for k in range(4 * nb):
        gx[k] += gh[k] + b_ih[k] + b_hh[k]
    for j in range(nb):
        i_ = sigm(gx[j])
        f_ = sigm(gx[nb + j])
        g_ = tanh_(gx[2 * nb + j])
        o_ = sigm(gx[3 * nb + j])
        c[j] = f_ * c[j] + i_ * g_
        h_new[j] = o_ * tanh_(c[j])


@njit(cache=True, error_model="numpy")
def _gru_gates(gx, gh, b_ih, b_hh, nb, reset_after):
    # r, z = sigmoid(...) in gx[:2 nb]; reset_after: n = tanh(W_in x + b_in + r (W_hn h + b_hn))
    # in gx[2 nb:]. (Classic: n needs W_hn (r h) over all units first; see _worker.)
    for k in range(2 * nb):
        gx[k] = sigm(gx[k] + b_ih[k] + gh[k] + b_hh[k])
    if reset_after:
        for j in range(2 * nb, 3 * nb):
            gx[j] = tanh_(gx[j] + b_ih[j] + gx[j - 2 * nb] * (gh[j] + b_hh[j]))


@njit(cache=True, error_model="numpy")
def _gru_update(gx, h_old, h_new):
    # h' = (1 - z) n + z h, with gx = [r, z, n] (3 nb,) activated.
    nb = h_new.shape[0]
    one = unit(h_new)
    for j in range(nb):
        z_ = gx[nb + j]
        h_new[j] = (one - z_) * gx[2 * nb + j] + z_ * h_old[j]


@njit(cache=True, error_model="numpy")
def _rnn_cell(gx, gh, b_ih, b_hh, h_new, relu):
    zero = unit(h_new) - unit(h_new)
    for j in range(h_new.shape[0]):
        v = gx[j] + b_ih[j] + gh[j] + b_hh[j]
        h_new[j] = max(v, zero) if relu else tanh_(v)


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


@njit(cache=True)
def _products(l, tok, p, x0, w_ih0, w_ih_rest, w_hh, hbuf, gx, gh, b0, b1, nblocks, classic_gru):
    """Layer l's input (gx) and recurrent (gh) products for the thread's rows: blocks b0..b1-1
    of hidden units, rows G*lo..G*hi of the packed matrices. Classic GRU: r and z rows only in
    gh (its n rows multiply r * h, after a barrier)."""
    H = hbuf.shape[2]
    G = w_hh.shape[1] // H
    lo, hi = block(b0, nblocks, H)[0], block(b1, nblocks, H)[0]
    r0, r1 = G * lo, G * hi
    if r1 == r0:
        return
    if l > 0:
        np.dot(w_ih_rest[l - 1, r0:r1], hbuf[1 - p, l - 1], gx[:r1 - r0])
    elif w_ih0.shape[0] > 0:
        np.dot(w_ih0[r0:r1], x0[tok], gx[:r1 - r0])
    else:  # x0 holds embed @ W_ih0^T
        gx[:r1 - r0] = x0[tok, r0:r1]
    if not classic_gru:
        np.dot(w_hh[l, r0:r1], hbuf[p, l], gh[:r1 - r0])
        return
    for b in range(b0, b1):
        ulo, uhi = block(b, nblocks, H)
        nb, g0 = uhi - ulo, G * (ulo - lo)
        np.dot(w_hh[l, G * ulo:G * ulo + 2 * nb], hbuf[p, l], gh[g0:g0 + 2 * nb])


@njit(cache=True, error_model="numpy")
def _cells(l, p, cell, reset_after, relu, b_ih, b_hh, hbuf, cbuf, gx, gh, rh, b0, b1, nblocks):
    """The gate arithmetic of layer l for each of the thread's blocks. LSTM and RNN write the
    new state; GRU leaves gates in gx (and classic GRU r * h in the shared rh) for _gru_finish."""
    H = hbuf.shape[2]
    G = b_ih.shape[1] // H
    lo = block(b0, nblocks, H)[0]
    for b in range(b0, b1):
        ulo, uhi = block(b, nblocks, H)
        g0, g1 = G * (ulo - lo), G * (uhi - lo)  # the block's slice of gx, gh
        R0, R1 = G * ulo, G * uhi  # and of the packed biases
        bi, bh, h_new = b_ih[l, R0:R1], b_hh[l, R0:R1], hbuf[1 - p, l, ulo:uhi]
        if cell == LSTM:
            _lstm_cell(gx[g0:g1], gh[g0:g1], bi, bh, h_new, cbuf[l, ulo:uhi])
        elif cell == RNN:
            _rnn_cell(gx[g0:g1], gh[g0:g1], bi, bh, h_new, relu)
        else:
            _gru_gates(gx[g0:g1], gh[g0:g1], bi, bh, uhi - ulo, reset_after)
            if not reset_after:
                for j in range(uhi - ulo):
                    rh[ulo + j] = gx[g0 + j] * hbuf[p, l, ulo + j]


@njit(cache=True, error_model="numpy")
def _gru_finish(l, p, reset_after, w_hh, b_ih, b_hh, hbuf, gx, gh, rh, b0, b1, nblocks):
    """GRU: classic form's n = tanh(W_in x + b_in + W_hn (r h) + b_hn) (every unit's r h is in
    rh by now), then h' = (1 - z) n + z h for each of the thread's blocks."""
    H = hbuf.shape[2]
    lo = block(b0, nblocks, H)[0]
    for b in range(b0, b1):
        ulo, uhi = block(b, nblocks, H)
        nb, g0, R0 = uhi - ulo, 3 * (ulo - lo), 3 * ulo
        if not reset_after:
            np.dot(w_hh[l, R0 + 2 * nb:R0 + 3 * nb], rh, gh[g0 + 2 * nb:g0 + 3 * nb])
            for j in range(2 * nb, 3 * nb):
                gx[g0 + j] = tanh_(gx[g0 + j] + b_ih[l, R0 + j] + gh[g0 + j] + b_hh[l, R0 + j])
        _gru_update(gx[g0:g0 + 3 * nb], hbuf[p, l, ulo:uhi], hbuf[1 - p, l, ulo:uhi])


@njit(cache=True, error_model="numpy")
def _worker(me, nthreads, nblocks, x0, w_ih0, w_ih_rest, w_hh, b_ih, b_hh, head_w, head_b, hbuf,
            cbuf, logits, rh, cell, reset_after, relu, temperature, top_k, argmax, uniforms, out,
            counters, limit):
    """Thread `me`'s share of sample_tokens; False if a barrier wait was abandoned."""
    L, H = cbuf.shape
    b0, b1 = block(me, nthreads, nblocks)  # this thread's blocks of hidden units
    rows = (w_hh.shape[1] // H) * (block(b1, nblocks, H)[0] - block(b0, nblocks, H)[0])
    vlo, vhi = block(me, nthreads, head_w.shape[0])  # and its vocabulary rows
    gx = np.empty(max(rows, 1), hbuf.dtype)  # W_ih x of the thread's rows, then gates
    gh = np.empty(max(rows, 1), hbuf.dtype)  # W_hh h
    classic_gru = cell == GRU and not reset_after
    k = 0  # barriers passed
    for i in range(out.shape[0]):
        p = i & 1  # hbuf[p]: the state before token i; hbuf[1 - p] receives the next one
        if vhi > vlo:
            np.dot(head_w[vlo:vhi], hbuf[p, L - 1], logits[vlo:vhi])
            logits[vlo:vhi] += head_b[vlo:vhi]
        k += 1
        if not barrier(counters, me, nthreads, k, limit):
            return False
        tok = pick(logits, temperature, top_k, argmax, uniforms[i])
        if me == 0:
            out[i] = tok
        for l in range(L):
            _products(l, tok, p, x0, w_ih0, w_ih_rest, w_hh, hbuf, gx, gh, b0, b1, nblocks,
                      classic_gru)
            _cells(l, p, cell, reset_after, relu, b_ih, b_hh, hbuf, cbuf, gx, gh, rh, b0, b1,
                   nblocks)
            if classic_gru:  # _gru_finish reads every unit's r * h
                k += 1
                if not barrier(counters, me, nthreads, k, limit):
                    return False
            if cell == GRU:
                _gru_finish(l, p, reset_after, w_hh, b_ih, b_hh, hbuf, gx, gh, rh, b0, b1, nblocks)
            k += 1
            if not barrier(counters, me, nthreads, k, limit):
                return False
    return True


@njit(parallel=True, cache=True)
def sample_tokens(x0, w_ih0, w_ih_rest, w_hh, b_ih, b_hh, head_w, head_b, h, c, nblocks, cell,
                  reset_after, relu, temperature, top_k, argmax, uniforms, out, nthreads, limit):
    """Generate out.shape[0] tokens into out with `nthreads` threads (<= nblocks, the packing's
    block count; see the header); h, c (L, H) advance past them. Returns False, with h and c
    untouched and out undefined, if the threads did not all run side by side (a barrier wait
    passed `limit` polls): rerun with nthreads = 1, which never waits."""
    L, H = h.shape
    nthreads = max(1, min(nthreads, nblocks))
    hbuf = np.empty((2, L, H), h.dtype)
    hbuf[0] = h
    cbuf = c.copy()
    logits = np.empty(head_w.shape[0], h.dtype)
    rh = np.zeros(H, h.dtype)  # classic GRU: r * h of every unit, shared
    counters = np.zeros((nthreads + 1) * STRIDE, np.int64)
    ok = np.zeros(nthreads, np.bool_)
    for me in prange(nthreads):
        ok[me] = _worker(me, nthreads, nblocks, x0, w_ih0, w_ih_rest, w_hh, b_ih, b_hh, head_w,
                         head_b, hbuf, cbuf, logits, rh, cell, reset_after, relu, temperature,
                         top_k, argmax, uniforms, out, counters, limit)
    if not ok.all():
        return False
    h[:] = hbuf[out.shape[0] & 1]
    c[:] = cbuf
    return True
