"""Text generation on the GPU: every token of a chunk in ONE launch (the CUDA twin of
seqtool.kernels.sample.sample_tokens), the weights on chip for the whole chunk.

As the persistent recurrences (persistent.py): the gate rows of every layer (and the head's
vocabulary rows) are dealt out to NVB (virtual) blocks, row r to block r % NVB, and each block
stages its rows of W_ih, W_hh and the head in shared memory once (or, where they do not fit,
reads them from global memory/L2 at every token). Per token, with a barrier (grid sync) between
stages:
  1. logits[v] = head_b[v] + head_W[v] . h_top             (a thread per owned vocabulary row)
  2. with top-k, keep[v] = (#{w: logits[w] > logits[v]} < k), i.e. logits[v] >= the k-th
     largest, ties kept, as np.sort(logits)[V - k] on the CPU   (threads over the vocabulary)
  3. one thread picks the token: argmax, or the draw with the caller's uniform from
     softmax(logits / temperature) over the kept tokens, in float64 (`pick`, as the CPU's);
  4. layer by layer: a thread per owned gate row computes its input product (the token's row of
     embed @ W_ih0^T for layer 0, W_ih times the layer below's new state above) and W_hh times
     the layer's old state; barrier; a thread per unit applies the cell (the classic GRU first
     publishes r * h, multiplies the W_hn rows by it, and finishes n and h: two more barriers).
The state is double-buffered (hbuf[p] read while hbuf[1 - p] is written), c updated in place by
its unit's owner. Layouts: one block (NVB virtual blocks looped over, syncthreads: the simulator
and devices refusing a cooperative launch) or NVB blocks with the grid sync (a GPU). The same
uniforms give the same tokens as the CPU sampler up to float32 rounding of the logits (a near
tie may break the other way).

Arrays (float32 unless said; G = 4 lstm, 3 gru, 1 rnn; gate rows q * H + j as in PyTorch):
  x0 (V, GH) embed @ W_ih0^T;  w_ih (L, GH, H) of layers 1.. (slot 0 unused);  w_hh (L, GH, H);
  b_ih, b_hh (L, GH);  head_w (V, H);  head_b (V,)
  h, c (L, H) state in/out;  uniforms (n,) float64;  out (n,) int64
"""
import math

import numpy as np

from seqtool.kernels.cuda import common, persistent

THREADS = 128  # threads per block (tests shrink it)
VIRTUAL_BLOCKS = 3  # blocks the rows are dealt to under the simulator (tests vary it)
LSTM, GRU, RNN = 0, 1, 2
# numba.cuda, set on first build (the simulator swaps module globals referring to it).
cuda = None


def pack(embed, w_ih, w_hh, b_ih, b_hh, head_w, head_b):
    """The kernel's weight arrays from a charlm's (per-layer lists in PyTorch layouts), on the
    device of `embed` (one GEMM for the layer-0 table)."""
    xp = common.array_module(embed)
    f32 = lambda a: xp.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    GH, H = w_hh[0].shape
    w_in = xp.zeros((len(w_hh), GH, H), np.float32)
    for l in range(1, len(w_hh)):
        w_in[l] = w_ih[l]
    return {"x0": f32(embed @ w_ih[0].T), "w_ih": w_in, "w_hh": f32(xp.stack(w_hh)),
            "b_ih": f32(xp.stack(b_ih)), "b_hh": f32(xp.stack(b_hh)), "head_w": f32(head_w),
            "head_b": f32(head_b)}


def plan(GH, grid_wide=True):
    """(grid blocks, virtual blocks NVB, virtual blocks per block VPB)."""
    if not grid_wide:
        return 1, 1, 1
    if common.simulator():
        nvb = max(1, min(GH, VIRTUAL_BLOCKS))
        return 1, nvb, nvb
    nvb = max(1, min(GH, persistent._sm_count()))
    return nvb, nvb, 1


def fits(L, H, V, G, nvb, vpb):
    """Whether a block's rows (every layer's W_ih and W_hh rows, its head rows) fit in shared
    memory (rows padded by one value against bank conflicts)."""
    rows, head_rows = -(-G * H // nvb), -(-V // nvb)
    return 4 * vpb * (L * rows * (2 * H + 1) + head_rows * (H + 1)) <= persistent.SMEM_BYTES


@common.kernel_cache
def _pick():
    """pick(logits, keep, p, temperature, use_keep, argmax, u) as a device function: the CPU
    sampler's pick (kernels/sample.py) in float64 over float32 logits."""
    cu = common.cuda()

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

    return pick


@common.kernel_cache
def _kernel(L, H, V, G, NVB, VPB, STAGED, GRID_SYNC):
    global cuda
    cu = cuda = common.cuda()
    one, sigm, tanh_ = common.activations(np.float32)
    zero = one - one
    f32 = common.numba_type(np.float32)
    pick = _pick()
    GH = G * H
    RPB, VPR = -(-GH // NVB), -(-V // NVB)  # gate rows (per layer) and head rows of a block
    W_SHAPE = (VPB, L, RPB, 2 * H + 1) if STAGED else (1, 1, 1, 1)
    HEAD_SHAPE = (VPB, VPR, H + 1) if STAGED else (1, 1, 1)

    if GRID_SYNC:
        @cu.jit(device=True)
        def barrier():
            cuda.cg.this_grid().sync()
    else:
        @cu.jit(device=True)
        def barrier():
            cuda.syncthreads()

    @cu.jit(device=True)
    def stage(w_s, head_s, w_ih, w_hh, head_w, blk, nblk, tid, nt):
        # the block's rows: gate row r of every layer and head row v belong to block r % NVB
        for k in range(tid, VPB * L * RPB * H, nt):
            lv, l, i, m = k // (L * RPB * H), k // (RPB * H) % L, k // H % RPB, k % H
            r = blk + lv * nblk + i * NVB
            if blk + lv * nblk < NVB and r < GH:
                w_s[lv, l, i, m] = w_ih[l, r, m]
                w_s[lv, l, i, H + m] = w_hh[l, r, m]
        for k in range(tid, VPB * VPR * H, nt):
            lv, i, m = k // (VPR * H), k // H % VPR, k % H
            v = blk + lv * nblk + i * NVB
            if blk + lv * nblk < NVB and v < V:
                head_s[lv, i, m] = head_w[v, m]
        cuda.syncthreads()

    @cu.jit(device=True)
    def rows(w_s, w_ih, w_hh, x0, tok, l, lv, i, r, hbuf, p_, pre_in, pre_h, b_ih, b_hh):
        # gate row r of layer l: its input product (with b_ih) and recurrent product (with b_hh)
        a_in = x0[tok, r] if l == 0 else zero
        a_h = zero
        for m in range(H):
            wi = w_s[lv, l, i, m] if STAGED else w_ih[l, r, m]
            wh = w_s[lv, l, i, H + m] if STAGED else w_hh[l, r, m]
            if l > 0:
                a_in += wi * hbuf[1 - p_, l - 1, m]  # the layer below, this token
            a_h += wh * hbuf[p_, l, m]  # this layer, the previous token
        pre_in[r] = a_in + b_ih[l, r]
        pre_h[r] = a_h + b_hh[l, r]

    @cu.jit(device=True)
    def cell_step(cell, reset_after, relu, j, l, pre_in, pre_h, hbuf, p_, c, scratch):
        # the cell of unit j from its rows' products; the classic GRU leaves z and r * h
        if cell == LSTM:
            cv = (sigm(pre_in[H + j] + pre_h[H + j]) * c[l, j]
                  + sigm(pre_in[j] + pre_h[j]) * tanh_(pre_in[2 * H + j] + pre_h[2 * H + j]))
            c[l, j] = cv
            hbuf[1 - p_, l, j] = sigm(pre_in[3 * H + j] + pre_h[3 * H + j]) * tanh_(cv)
        elif cell == RNN:
            v_ = pre_in[j] + pre_h[j]
            hbuf[1 - p_, l, j] = max(v_, zero) if relu else tanh_(v_)
        else:
            r_ = sigm(pre_in[j] + pre_h[j])
            z_ = sigm(pre_in[H + j] + pre_h[H + j])
            if reset_after:
                n_ = tanh_(pre_in[2 * H + j] + r_ * pre_h[2 * H + j])
                hbuf[1 - p_, l, j] = (one - z_) * n_ + z_ * hbuf[p_, l, j]
            else:  # W_hn multiplies r * h of every unit: after a barrier
                scratch[0, j] = z_
                scratch[1, j] = r_ * hbuf[p_, l, j]

    @cu.jit
    def sample(x0, w_ih, w_hh, b_ih, b_hh, head_w, head_b, h, c, hbuf, logits, keep, p, pre_in, pre_h,
               scratch, tokbuf, cell, reset_after, relu, temperature, top_k, argmax, uniforms, out):
        tid, nt = cuda.threadIdx.x, cuda.blockDim.x
        blk, nblk = cuda.blockIdx.x, cuda.gridDim.x
        gt, gn = blk * nt + tid, nblk * nt  # this thread among all
        w_s = cuda.shared.array(W_SHAPE, f32)
        head_s = cuda.shared.array(HEAD_SHAPE, f32)
        if STAGED:
            stage(w_s, head_s, w_ih, w_hh, head_w, blk, nblk, tid, nt)
        for k in range(gt, L * H, gn):
            hbuf[0, k // H, k % H] = h[k // H, k % H]
        barrier()
        use_keep = not argmax and 0 < top_k < V
        classic = cell == GRU and not reset_after
        for t in range(out.shape[0]):
            p_ = t & 1
            for k in range(tid, VPB * VPR, nt):  # 1. the logits of the block's head rows
                lv, i = k // VPR, k % VPR
                v = blk + lv * nblk + i * NVB
                if blk + lv * nblk < NVB and v < V:
                    acc = head_b[v]
                    for m in range(H):
                        acc += (head_s[lv, i, m] if STAGED else head_w[v, m]) * hbuf[p_, L - 1, m]
                    logits[v] = acc
            barrier()
            if use_keep:  # 2. top-k
                for v in range(gt, V, gn):
                    above = 0
                    for w in range(V):
                        if logits[w] > logits[v]:
                            above += 1
                    keep[v] = above < top_k
                barrier()
            if gt == 0:  # 3. the token
                tok = pick(logits, keep, p, temperature, use_keep, argmax, uniforms[t])
                out[t] = tok
                tokbuf[0] = tok
            barrier()
            tok = tokbuf[0]
            for l in range(L):  # 4. the layers
                for k in range(tid, VPB * RPB, nt):
                    lv, i = k // RPB, k % RPB
                    r = blk + lv * nblk + i * NVB
                    if blk + lv * nblk < NVB and r < GH:
                        rows(w_s, w_ih, w_hh, x0, tok, l, lv, i, r, hbuf, p_, pre_in, pre_h, b_ih, b_hh)
                barrier()
                for j in range(gt, H, gn):
                    cell_step(cell, reset_after, relu, j, l, pre_in, pre_h, hbuf, p_, c, scratch)
                barrier()
                if classic:  # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn), then h
                    for k in range(tid, VPB * RPB, nt):
                        lv, i = k // RPB, k % RPB
                        r = blk + lv * nblk + i * NVB
                        if blk + lv * nblk < NVB and 2 * H <= r < GH:
                            acc = b_hh[l, r]
                            for m in range(H):
                                acc += (w_s[lv, l, i, H + m] if STAGED else w_hh[l, r, m]) * scratch[1, m]
                            pre_h[r] = acc
                    barrier()
                    for j in range(gt, H, gn):
                        z_ = scratch[0, j]
                        n_ = tanh_(pre_in[2 * H + j] + pre_h[2 * H + j])
                        hbuf[1 - p_, l, j] = (one - z_) * n_ + z_ * hbuf[p_, l, j]
                    barrier()
        last = out.shape[0] & 1
        for k in range(gt, L * H, gn):
            h[k // H, k % H] = hbuf[last, k // H, k % H]

    return sample


def _launcher(L, H, V, G, grid_wide):
    """The configured kernel for this model shape and layout (built once per layout)."""
    grid_blocks, nvb, vpb = plan(G * H, grid_wide)
    threads = max(1, min(THREADS, vpb * max(-(-G * H // nvb), -(-V // nvb), -(-H // nvb))))
    return _configured(L, H, V, G, nvb, vpb, fits(L, H, V, G, nvb, vpb), grid_wide, grid_blocks, threads)


@common.kernel_cache
def _configured(L, H, V, G, nvb, vpb, staged, grid_wide, grid_blocks, threads):
    return common.configure(_kernel(L, H, V, G, nvb, vpb, staged, grid_wide), grid_blocks, threads)


def sample_tokens(weights, cell, reset_after, relu, h, c, temperature, top_k, argmax, uniforms, out):
    """Fill `out` (n,) with generated token ids in one launch; h, c (L, H) host float32 arrays
    advance past them in place (see seqtool.kernels.sample.sample_tokens for the convention)."""
    from seqtool.core.xp import to_host

    x0 = weights["x0"]
    xp = common.array_module(x0)
    on = (lambda a: xp.asarray(a)) if xp is not np else (lambda a: np.array(a))  # noqa: E731
    L, H = h.shape
    V, GH = x0.shape
    hd, cd = on(np.ascontiguousarray(h, np.float32)), on(np.ascontiguousarray(c, np.float32))
    outd = xp.zeros(out.shape[0], np.int64)
    scratch = [xp.zeros((2, L, H), np.float32), xp.zeros(V, np.float32), xp.zeros(V, np.bool_),
               xp.zeros(V, np.float64), xp.zeros(GH, np.float32), xp.zeros(GH, np.float32),
               xp.zeros((2, H), np.float32), xp.zeros(1, np.int64)]
    args = (x0, weights["w_ih"], weights["w_hh"], weights["b_ih"], weights["b_hh"], weights["head_w"],
            weights["head_b"], hd, cd, *scratch, int(cell), bool(reset_after), bool(relu), float(temperature),
            int(top_k), bool(argmax), on(np.asarray(uniforms, np.float64)), outd)
    persistent.with_fallback(("sample", L, H, V, GH), lambda grid_wide: persistent.run_kernel(
        _launcher(L, H, V, GH // H, grid_wide), args))
    out[:] = to_host(outd)
    h[...] = to_host(hd)
    c[...] = to_host(cd)
