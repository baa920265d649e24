"""Text generation from a stacked unidirectional RNN language model, inside compiled code.

One call generates `n` tokens with no Python in between: for each token, the head turns the
top layer's state into logits, one token is picked (argmax, or temperature / top-k sampling
with a pre-drawn uniform), and the token is fed through every layer. The caller's h and c
advance when the call returns, so a caller generating in chunks (--stream) carries the state
from call to call.

Speed is set by how fast each core reads the weights (a 2 x 256 LSTM reads ~3.2 MB per
token). Measured on a 2-core Xeon with 2 MB of L2 per core, four choices follow:
- Threads: one token's work is too small to start a parallel loop per layer, so each thread
  runs the whole loop over tokens on its own share of the hidden units, and the threads meet
  at a spin barrier (spin.py) after each layer (and once before the first token; the classic
  GRU also halfway through each layer, for r * h). Split in two, each half of the weights stays
  in its core's L2 (one core alone streams them from L3 at ~8k tokens/s). The state is
  double-buffered: hbuf[p] is read while hbuf[1 - p] is written, so no thread overwrites
  units another is still reading.
- The head needs no barrier of its own: right after the top layer, each thread multiplies its
  own units' new state by their head columns (partials), and after the layer's barrier every
  thread adds up the partials and picks the same token from the same logits and uniform.
  (+5% measured against vocabulary rows split over threads and a barrier before the pick.)
  The logits' rounding thus depends on the block count, i.e. on the thread count: the same
  seed gives the same text on the same machine with the same threads.
- One product per hidden vector below the top: h_l(t) is multiplied once, by the rows of
  both of its consumers, W_ih of layer l+1 and W_hh of layer l, whose product is kept in
  gh[l] for token t+1; the top layer's W_hh product joins its own layer's phase. So the
  products leave the phase that waits for the token, and each layer's phase reads ~1.5 MB.
- Panels are stored transposed, (H, columns), for vector-matrix products that run along
  memory, and each phase reverses the order of its panels from token to token, so a token
  starts on what the previous one read last: at ~1.5 MB per core the weights sit at the edge
  of what L2 keeps, and this order is worth 5-8%.

Packed layout (built by seqtool.tasks.charlm.sampler._kernel_weights): the hidden units are cut into
`nblocks` blocks; a thread takes a contiguous run of blocks. Gate rows are ordered block by
block, each block holding its units' rows in gate order: [i f g o of block 0][i f g o of
block 1]... `panels` holds, for block b and layer l,
  C(b, l) at offsets[b, l, 0]: (H, G nb) = the block's W_ih rows of layer l+1, transposed;
           for the top layer (nb, V) = the head's columns of the block's units, transposed
  R(b, l) at offsets[b, l, 1]: (H, G' nb) = the block's W_hh rows of layer l, transposed
           (G' = 2 for the classic GRU: its n rows multiply r * h, known only within the
           step, so they stay in w_hn)
With nthreads = 1 the same arrays serve one thread.

Convention: the state passed in has already consumed every token so far (the prime text),
so there is no "last token" argument; with a zero state and no prime, the first token is
drawn from softmax(head_b).

Shapes (G = 4 lstm, 3 gru, 1 rnn; L layers; nb units in a block; rows packed as above):
  x0        (V, D0)         per-token input of layer 0: embeddings (V, E), or, when w_ih0 has
                            no rows, the precomputed products embed @ W_ih0^T (V, GH)
  w_ih0     (GH, E) or (0, 0)  layer 0 input weights
  panels    (P,)            every C and R panel
  offsets   (nblocks, L, 2) int64
  w_hn      (L, H, H)       classic GRU: W_hn of each layer, natural unit order; else (0, 0, 0)
  b_ih, b_hh (L, GH)        biases (LSTM, RNN: b_ih holds b_ih + b_hh, b_hh is unused)
  head_b    (V,)
  h, c      (L, H)          state, in/out, natural unit order (c only matters for the LSTM)
  uniforms  (n,) float64    one U[0, 1) per token (unused with argmax)
  out       (n,) int64      the generated token ids
cell: 0 lstm, 1 gru, 2 rnn. Products use np.dot (SciPy's BLAS, one thread per caller).
"""
import numpy as np
from numba import njit, prange

from seqtool.kernels.activations import sigm, tanh_, unit
from seqtool.kernels.blas import block
from seqtool.kernels.spin import STRIDE, barrier

LSTM, GRU, RNN = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _lstm_cell(gx, gh, b, h_new, c):
    # gx = W_ih x, gh = W_hh h of one block's nb units (4 nb,): gates i, f, g, o; b the block's
    # b_ih + b_hh. Writes h_new (nb,), updates c (nb,) in place, in one pass.
    nb = h_new.shape[0]
    for j in range(nb):
        i_ = sigm(gx[j] + gh[j] + b[j])
        f_ = sigm(gx[nb + j] + gh[nb + j] + b[nb + j])
        g_ = tanh_(gx[2 * nb + j] + gh[2 * nb + j] + b[2 * nb + j])
        o_ = sigm(gx[3 * nb + j] + gh[3 * nb + j] + b[3 * nb + j])
        c_new = f_ * c[j] + i_ * g_
        c[j] = c_new
        h_new[j] = o_ * tanh_(c_new)


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
def _rnn_cell(gx, gh, b, h_new, relu):
    zero = unit(h_new) - unit(h_new)
    for j in range(h_new.shape[0]):
        v = gx[j] + gh[j] + b[j]
        h_new[j] = max(v, zero) if relu else tanh_(v)


# exp(x) for x <= 0 in float64 without a libm call, so the loop over the vocabulary
# vectorizes (a libm exp per token of the vocabulary cost ~0.6 us per generated token):
# x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^13 / 13! (truncation
# < 2e-16), 2^n written into the exponent bits. Below -708, where exp(x) turns subnormal, the
# weight is 0: such a token is at most ~1e-307 times as likely as the best one.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 = _LN2_HI + _LN2_LO; n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_FLOOR = -708.0
_C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (
    1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
    1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800)  # 1 / k!


@njit(cache=True, error_model="numpy")
def softmax_weights(logits, temperature, threshold, p):
    """p[v] = exp((logits[v] - max(logits)) * (1 / temperature)) where logits[v] >= threshold,
    else 0 (float64; temperature > 0)."""
    m = np.float64(np.max(logits))
    inv_t = min(1.0 / temperature, 1e300)  # a subnormal temperature must not give inf * 0
    bits = np.empty(p.shape[0], np.int64)  # 2^n as float64 bit patterns
    for v in range(p.shape[0]):
        x = (np.float64(logits[v]) - m) * inv_t
        keep = x >= _EXP_FLOOR and logits[v] >= threshold
        x = min(max(x, _EXP_FLOOR), 0.0)  # the exponent bits below assume x <= 0
        n = np.floor(x * _LOG2E + 0.5)
        r = (x - n * _LN2_HI) - n * _LN2_LO
        q = ((((_C13 * r + _C12) * r + _C11) * r + _C10) * r + _C9) * r + _C8
        q = ((((((q * r + _C7) * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + 0.5) * r
        q = (q + 1.0) * r + 1.0
        p[v] = q if keep else 0.0
        bits[v] = (np.int64(n) + 1023) << 52
    p *= bits.view(np.float64)


@njit(cache=True, fastmath={"reassoc"})
def _sum(p):
    # In any order: a total that rounds below the running sum is caught by `last` in pick.
    t = 0.0
    for v in range(p.shape[0]):
        t += p[v]
    return t


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
    p = np.empty(V, np.float64)
    softmax_weights(logits, temperature, thr, p)
    total = _sum(p)
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
def _panel(panels, offsets, b, l, which, rows, cols):
    """Panel C (which = 0) or R (which = 1) of block b and layer l, as (rows, cols)."""
    o = offsets[b, l, which]
    return panels[o:o + rows * cols].reshape(rows, cols)


# What a phase multiplies (bits of `parts`): C(l) and R(l) by h_l, R(l+1) by h_{l+1} of the
# previous token.
_C, _R, _R_NEXT = 1, 2, 4


@njit(cache=True)
def _phase(l, vec, parts, vec_next, odd, panels, offsets, gx, gh, G, Gr, b0, b1, nblocks):
    """One phase's products for blocks b0..b1-1: C(l) @ vec into gx (layer l+1's input
    products), R(l) @ vec into gh[l], R(l+1) @ vec_next into gh[l+1], as `parts` asks. On odd
    tokens the panels run in reverse order (see the header)."""
    H = vec.shape[0]
    lo = block(b0, nblocks, H)[0]
    n = 3 * (b1 - b0)
    for s in range(n):
        k = n - 1 - s if odd else s
        b, item = b0 + k // 3, k % 3
        if not parts & (1 << item):
            continue
        ulo, uhi = block(b, nblocks, H)
        g0 = G * (ulo - lo)  # the block's slice of gx, gh
        at = l + max(item - 1, 0)  # the panel's layer
        cols = (Gr if item > 0 else G) * (uhi - ulo)
        if cols > 0:
            np.dot(vec if item < 2 else vec_next,
                   _panel(panels, offsets, b, at, min(item, 1), H, cols),
                   gh[at, g0:g0 + cols] if item > 0 else gx[g0:g0 + cols])


@njit(cache=True)
def _head_partials(top, panels, offsets, partial, b0, b1, nblocks):
    """partial[b] = the head's columns for block b's units times those units of the new top
    state (each block needs only its own units, so no thread waits for this)."""
    L, H = offsets.shape[1], top.shape[0]
    for b in range(b0, b1):
        ulo, uhi = block(b, nblocks, H)
        if uhi > ulo:
            np.dot(top[ulo:uhi], _panel(panels, offsets, b, L - 1, 0, uhi - ulo, partial.shape[1]),
                   partial[b])
        else:
            partial[b] = 0


@njit(cache=True, error_model="numpy")
def _cells(l, p, cell, reset_after, relu, b_ih, b_hh, hbuf, cbuf, gx, gh, rh, b0, b1, nblocks):
    """The gate arithmetic of layer l for each of the thread's blocks (gx: input products,
    gh: recurrent ones). LSTM and RNN write the new state; GRU leaves gates in gx (and classic
    GRU r * h in the shared rh) for _gru_finish."""
    H = hbuf.shape[2]
    G = b_ih.shape[1] // H
    lo = block(b0, nblocks, H)[0]
    for b in range(b0, b1):
        ulo, uhi = block(b, nblocks, H)
        g0, g1 = G * (ulo - lo), G * (uhi - lo)  # the block's slice of gx, gh
        R0, R1 = G * ulo, G * uhi  # and of the packed biases
        bi, bh, h_new = b_ih[l, R0:R1], b_hh[l, R0:R1], hbuf[1 - p, l, ulo:uhi]
        if cell == LSTM:
            _lstm_cell(gx[g0:g1], gh[g0:g1], bi, h_new, cbuf[l, ulo:uhi])
        elif cell == RNN:
            _rnn_cell(gx[g0:g1], gh[g0:g1], bi, h_new, relu)
        else:
            _gru_gates(gx[g0:g1], gh[g0:g1], bi, bh, uhi - ulo, reset_after)
            if not reset_after:
                for j in range(uhi - ulo):
                    rh[ulo + j] = gx[g0 + j] * hbuf[p, l, ulo + j]


@njit(cache=True, error_model="numpy")
def _gru_finish(l, p, reset_after, w_hn, b_ih, b_hh, hbuf, gx, gh, rh, b0, b1, nblocks):
    """GRU: classic form's n = tanh(W_in x + b_in + W_hn (r h) + b_hn) (every unit's r h is in
    rh by now), then h' = (1 - z) n + z h for each of the thread's blocks."""
    H = hbuf.shape[2]
    lo = block(b0, nblocks, H)[0]
    for b in range(b0, b1):
        ulo, uhi = block(b, nblocks, H)
        nb, g0, R0 = uhi - ulo, 3 * (ulo - lo), 3 * ulo
        if not reset_after:
            np.dot(w_hn[l, ulo:uhi], rh, gh[g0 + 2 * nb:g0 + 3 * nb])
            for j in range(2 * nb, 3 * nb):
                gx[g0 + j] = tanh_(gx[g0 + j] + b_ih[l, R0 + j] + gh[g0 + j] + b_hh[l, R0 + j])
        _gru_update(gx[g0:g0 + 3 * nb], hbuf[p, l, ulo:uhi], hbuf[1 - p, l, ulo:uhi])


@njit(cache=True, error_model="numpy")
def _worker(me, nthreads, nblocks, x0, w_ih0, panels, offsets, w_hn, b_ih, b_hh, head_b, hbuf,
            cbuf, partials, rh, cell, reset_after, relu, temperature, top_k, argmax, uniforms,
            out, counters, limit):
    """Thread `me`'s share of sample_tokens; False if a barrier wait was abandoned."""
    L, H = cbuf.shape
    G = b_ih.shape[1] // H
    classic_gru = cell == GRU and not reset_after
    Gr = 2 if classic_gru else G  # gate rows in the R panels
    b0, b1 = block(me, nthreads, nblocks)  # this thread's blocks of hidden units
    r0, r1 = G * block(b0, nblocks, H)[0], G * block(b1, nblocks, H)[0]
    gx = np.zeros(max(r1 - r0, 1), hbuf.dtype)  # input products of the thread's rows, then gates
    gh = np.zeros((L, max(r1 - r0, 1)), hbuf.dtype)  # recurrent products, layer by layer
    logits = np.empty(head_b.shape[0], hbuf.dtype)  # every thread sums its own copy
    # The starting state: W_hh products below the top layer, the head's partial logits.
    for l in range(L - 1):
        _phase(l, hbuf[0, l], _R, hbuf[0, l], False, panels, offsets, gx, gh, G, Gr, b0, b1,
               nblocks)
    _head_partials(hbuf[0, L - 1], panels, offsets, partials[0], b0, b1, nblocks)
    k = 1  # barriers passed
    if not barrier(counters, me, nthreads, k, limit):
        return False
    for i in range(out.shape[0]):
        p = i & 1  # hbuf[p]: the state before token i; hbuf[1 - p] receives the next one
        odd = p == 1
        top = hbuf[p, L - 1]
        logits[:] = head_b
        for b in range(nblocks):
            logits += partials[p, b]
        if L == 1:  # the only layer's recurrent products (in deeper stacks, the lower layers'
            # come with the next layer's phase of the previous token, the top one's in its own)
            _phase(0, top, _R, top, odd, panels, offsets, gx, gh, G, Gr, b0, b1, nblocks)
        tok = pick(logits, temperature, top_k, argmax, uniforms[i])
        if me == 0:
            out[i] = tok
        if w_ih0.shape[0] > 0:
            if r1 > r0:
                np.dot(w_ih0[r0:r1], x0[tok], gx[:r1 - r0])
        else:  # x0 holds embed @ W_ih0^T
            gx[:r1 - r0] = x0[tok, r0:r1]
        for l in range(L):
            if l > 0:  # layer l's input products, layer l-1's recurrent ones for token i+1,
                # and for the top layer its own recurrent products
                _phase(l - 1, hbuf[1 - p, l - 1], _C | _R | (_R_NEXT if l == L - 1 else 0),
                       top, odd, panels, offsets, gx, gh, G, Gr, b0, b1, nblocks)
            _cells(l, p, cell, reset_after, relu, b_ih, b_hh, hbuf, cbuf, gx, gh[l], rh, b0, b1,
                   nblocks)
            if classic_gru:  # _gru_finish reads every unit's r * h
                k += 1
                if not barrier(counters, me, nthreads, k, limit):
                    return False
            if cell == GRU:
                _gru_finish(l, p, reset_after, w_hn, b_ih, b_hh, hbuf, gx, gh[l], rh, b0, b1,
                            nblocks)
            if l == L - 1:  # token i+1's logits, in parts (partials[1 - p]: read while
                # partials[p] may still be)
                _head_partials(hbuf[1 - p, L - 1], panels, offsets, partials[1 - p], b0, b1,
                               nblocks)
            k += 1
            if not barrier(counters, me, nthreads, k, limit):
                return False
    return True


@njit(parallel=True, cache=True)
def sample_tokens(x0, w_ih0, panels, offsets, w_hn, b_ih, b_hh, head_b, h, c, nblocks, cell,
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
    partials = np.empty((2, nblocks, head_b.shape[0]), h.dtype)  # by token parity
    rh = np.zeros(H, h.dtype)  # classic GRU: r * h of every unit, shared
    counters = np.zeros((nthreads + 1) * STRIDE, np.int64)
    ok = np.zeros(nthreads, np.bool_)
    for me in prange(nthreads):
        ok[me] = _worker(me, nthreads, nblocks, x0, w_ih0, panels, offsets, w_hn, b_ih, b_hh,
                         head_b, hbuf, cbuf, partials, rh, cell, reset_after, relu, temperature,
                         top_k, argmax, uniforms, out, counters, limit)
    if not ok.all():
        return False
    h[:] = hbuf[out.shape[0] & 1]
    c[:] = cbuf
    return True
