"""Text generation on the GPU: every token of a chunk in ONE launch (the CUDA twin of
seqtool.kernels.sample.sample_tokens).

One block steps through the tokens; per token, with a block barrier between stages:
  1. logits[v] = head_b[v] + head_W[v] . h_top            (threads over the vocabulary)
  2. with top-k, keep[v] = (#{w: logits[w] > logits[v]} < k), which is logits[v] >= the k-th
     largest, ties kept, as np.sort(logits)[V - k] on the CPU   (threads over the vocabulary)
  3. thread 0 picks the token: argmax, or the draw with the caller's uniform from
     softmax(logits / temperature) over the kept tokens, in float64 (`pick`, as the CPU's);
  4. layer by layer, threads over hidden units: gate pre-activations from the token's row of
     embed @ W_ih0^T (layer 0) or the layer below's new state, plus W_hh times the layer's old
     state; the classic GRU takes a second barrier for W_hn (r * h).
The state is double-buffered (hbuf[p] read while hbuf[1 - p] is written), c updated in place by
its unit's owner. Weights are stored transposed, (inputs, gate rows), so the threads of a
stage read consecutive addresses. The same uniforms give the same tokens as the CPU sampler
up to float32 rounding of the logits (a near tie may break the other way).

Arrays (float32 unless said; G = 4 lstm, 3 gru, 1 rnn; gate rows q * H + j as in PyTorch):
  x0 (V, GH) embed @ W_ih0^T;  w_ih_t (L, H, GH) W_ih^T of layers 1.. (slot 0 unused);
  w_hh_t (L, H, GH);  b_ih, b_hh (L, GH);  head_w_t (H, V);  head_b (V,)
  h, c (L, H) state in/out;  uniforms (n,) float64;  out (n,) int64
"""
import math

import numpy as np

from seqtool.kernels.cuda import common

THREADS = 256  # threads of the block (tests shrink it)
LSTM, GRU, RNN = 0, 1, 2
# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None


def pack(embed, w_ih, w_hh, b_ih, b_hh, head_w, head_b):
    """The kernel's weight arrays from a charlm's (per-layer lists in PyTorch layouts), on the
    device of `embed` (one GEMM for the layer-0 table)."""
    xp = common.array_module(embed)
    f32 = lambda a: xp.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    GH, H = w_hh[0].shape
    w_ih_t = xp.zeros((len(w_hh), H, GH), np.float32)
    for l in range(1, len(w_hh)):
        w_ih_t[l] = w_ih[l].T
    return {"x0": f32(embed @ w_ih[0].T), "w_ih_t": w_ih_t,
            "w_hh_t": f32(xp.stack([w.T for w in w_hh])), "b_ih": f32(xp.stack(b_ih)),
            "b_hh": f32(xp.stack(b_hh)), "head_w_t": f32(head_w.T), "head_b": f32(head_b)}


@common.kernel_cache
def _kernel():
    global cuda
    cu = cuda = common.cuda()
    one, sigm, tanh_ = common.activations(np.float32)
    zero = one - one
    f32 = common.numba_type(np.float32)

    @cu.jit(device=True)
    def pick(logits, keep, p, temperature, use_keep, argmax, u):
        V = logits.shape[0]
        best = 0
        for v in range(1, V):
            if logits[v] > logits[best]:
                best = v  # the first of equal maxima, as np.argmax
        if argmax:
            return best
        m = float(logits[best])
        inv_t = min(1.0 / temperature, 1e300)
        total = 0.0
        for v in range(V):
            x = (float(logits[v]) - m) * inv_t
            p[v] = math.exp(x) if x >= -708.0 and (not use_keep or keep[v]) else 0.0
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
        return last

    @cu.jit(device=True)
    def pre(l, q, j, tok, x0, w_ih_t, w_hh_t, hbuf, p_, H):
        # W_ih (input) and W_hh h_old products of gate row q * H + j of layer l
        r = q * H + j
        a_in = x0[tok, r] if l == 0 else zero
        a_h = zero
        for m in range(H):
            if l > 0:
                a_in += w_ih_t[l, m, r] * hbuf[1 - p_, l - 1, m]
            a_h += w_hh_t[l, m, r] * hbuf[p_, l, m]
        return a_in, a_h

    @cu.jit
    def sample(x0, w_ih_t, w_hh_t, b_ih, b_hh, head_w_t, head_b, h, c, hbuf, logits, keep, p, scratch,
               tokbuf, cell, reset_after, relu, temperature, top_k, argmax, uniforms, out):
        L, H = h.shape
        V = x0.shape[0]
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        a = cuda.local.array(4, f32)  # an LSTM unit's gate pre-activations
        for k in range(tid, L * H, nt):
            hbuf[0, k // H, k % H] = h[k // H, k % H]
        cuda.syncthreads()
        use_keep = not argmax and 0 < top_k < V
        for i in range(out.shape[0]):
            p_ = i & 1
            for v in range(tid, V, nt):  # 1. logits
                acc = head_b[v]
                for m in range(H):
                    acc += head_w_t[m, v] * hbuf[p_, L - 1, m]
                logits[v] = acc
            cuda.syncthreads()
            if use_keep:  # 2. top-k
                for v in range(tid, V, nt):
                    above = 0
                    for w in range(V):
                        if logits[w] > logits[v]:
                            above += 1
                    keep[v] = above < top_k
                cuda.syncthreads()
            if tid == 0:  # 3. the token
                tok = pick(logits, keep, p, temperature, use_keep, argmax, uniforms[i])
                out[i] = tok
                tokbuf[0] = tok
            cuda.syncthreads()
            tok = tokbuf[0]
            for l in range(L):  # 4. the layers
                for j in range(tid, H, nt):
                    if cell == LSTM:
                        for q in range(4):
                            a_in, a_h = pre(l, q, j, tok, x0, w_ih_t, w_hh_t, hbuf, p_, H)
                            a[q] = a_in + a_h + b_ih[l, q * H + j] + b_hh[l, q * H + j]
                        cv = sigm(a[1]) * c[l, j] + sigm(a[0]) * tanh_(a[2])
                        c[l, j] = cv
                        hbuf[1 - p_, l, j] = sigm(a[3]) * tanh_(cv)
                    elif cell == RNN:
                        a_in, a_h = pre(l, 0, j, tok, x0, w_ih_t, w_hh_t, hbuf, p_, H)
                        v_ = a_in + a_h + b_ih[l, j] + b_hh[l, j]
                        hbuf[1 - p_, l, j] = max(v_, zero) if relu else tanh_(v_)
                    else:
                        r_in, r_h = pre(l, 0, j, tok, x0, w_ih_t, w_hh_t, hbuf, p_, H)
                        z_in, z_h = pre(l, 1, j, tok, x0, w_ih_t, w_hh_t, hbuf, p_, H)
                        n_in, n_h = pre(l, 2, j, tok, x0, w_ih_t, w_hh_t, hbuf, p_, H)
                        r_ = sigm(r_in + b_ih[l, j] + r_h + b_hh[l, j])
                        z_ = sigm(z_in + b_ih[l, H + j] + z_h + b_hh[l, H + j])
                        if reset_after:
                            n_ = tanh_(n_in + b_ih[l, 2 * H + j] + r_ * (n_h + b_hh[l, 2 * H + j]))
                            hbuf[1 - p_, l, j] = (one - z_) * n_ + z_ * hbuf[p_, l, j]
                        else:  # W_hn multiplies r * h of every unit: after the barrier
                            scratch[0, j] = z_
                            scratch[1, j] = n_in + b_ih[l, 2 * H + j]
                            scratch[2, j] = r_ * hbuf[p_, l, j]
                cuda.syncthreads()
                if cell == GRU and not reset_after:
                    for j in range(tid, H, nt):
                        a_n = b_hh[l, 2 * H + j]
                        for m in range(H):
                            a_n += w_hh_t[l, m, 2 * H + j] * scratch[2, m]
                        n_ = tanh_(scratch[1, j] + a_n)
                        z_ = scratch[0, j]
                        hbuf[1 - p_, l, j] = (one - z_) * n_ + z_ * hbuf[p_, l, j]
                    cuda.syncthreads()
        last = out.shape[0] & 1
        for k in range(tid, L * H, nt):
            h[k // H, k % H] = hbuf[last, k // H, k % H]

    return sample


@common.kernel_cache
def _launcher(threads):
    return common.configure(_kernel(), 1, threads)


def sample_tokens(weights, cell, reset_after, relu, h, c, temperature, top_k, argmax, uniforms, out):
    """Fill `out` (n,) with generated token ids in one launch; h, c (L, H) host float32 arrays
    advance past them in place (see seqtool.kernels.sample.sample_tokens for the convention)."""
    from seqtool.xp import to_host

    x0 = weights["x0"]
    xp = common.array_module(x0)
    on = (lambda a: xp.asarray(a)) if xp is not np else (lambda a: np.array(a))  # noqa: E731
    L, H = h.shape
    V = x0.shape[0]
    hd, cd = on(np.ascontiguousarray(h, np.float32)), on(np.ascontiguousarray(c, np.float32))
    outd = xp.zeros(out.shape[0], np.int64)
    scratch = [xp.zeros((2, L, H), np.float32), xp.zeros(V, np.float32), xp.zeros(V, np.bool_),
               xp.zeros(V, np.float64), xp.zeros((3, H), np.float32), xp.zeros(1, np.int64)]
    launch = _launcher(max(1, min(THREADS, max(H, V))))
    launch(x0, weights["w_ih_t"], weights["w_hh_t"], weights["b_ih"], weights["b_hh"], weights["head_w_t"],
           weights["head_b"], hd, cd, *scratch, int(cell), bool(reset_after), bool(relu), float(temperature),
           int(top_k), bool(argmax), on(np.asarray(uniforms, np.float64)), outd)
    out[:] = to_host(outd)
    h[...] = to_host(hd)
    c[...] = to_host(cd)
