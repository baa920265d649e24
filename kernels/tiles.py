"""Register-blocked products for the recurrences: out = W @ src on a weight packed once per call.

A recurrent layer multiplies the same W_hh by a thin state block (H x M, M = the thread's
batch rows) once per step. Calling BLAS for that pays its per-call cost (argument checks,
packing W_hh again, thread hand-off) T times per sequence; here W is packed once, at the start
of the kernel call, into panels of PANEL rows, panel p stored (K, PANEL) so that one k step
reads PANEL consecutive weights, and a tile multiplies one panel by a block of LANES columns
of src with every accumulator in a vector register:

    for k in range(K):                   # one vector load of src[k, cols]
        for r in range(PANEL):           # PANEL broadcast-FMAs
            acc[r] += panel[k, r] * src[k, cols]

The tile is emitted as LLVM IR (an explicit <LANES x float> loop with its accumulators in phi
nodes): Numba's loops over a small accumulator array left it in memory and used gathers
(measured: 1.2 GFLOP/s). With the IR form LLVM emits exactly the loop above, on this AVX-512
machine one `vmovups` and eight `vfmadd231ps mem{1to16}` per k; AVX2 machines get the same
loop on ymm pairs. Measured on the 2-core Zen 4 (one thread, CPU time, best of 9, 100
products W @ src and W.T @ src, H = 128, 256, 512, 16 or 32 columns): 107-117 GFLOP/s against
68-90 for np.dot (OpenBLAS, AVX-512 kernels) called from the compiled loop.

Columns are padded to a multiple of HALF = LANES/2 by the callers (padding columns hold
zeros; the last half block runs on a half-width tile), rows to a multiple of PANEL by the
packing (missing rows are zero weights).

The same tile, reading its weights straight from strided rows and accumulating over blocks of
K, also computes a layer's weight gradients (gemm_panels: dG @ x, dG @ h over all T*N steps)
and its input gradient (gemm_tn_panels: dG.T @ W_ih), 10-30% faster than OpenBLAS on the
layers' shapes (figures at each function).
"""
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic



def _avx512_target():
    """Whether Numba compiles for a CPU with AVX-512 (32 vector registers)."""
    from numba.core import config

    if config.CPU_FEATURES:  # NUMBA_CPU_FEATURES: exactly what Numba targets
        return "+avx512f" in config.CPU_FEATURES
    if config.CPU_NAME and config.CPU_NAME != "host":  # a named CPU without its features: be safe
        return False
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("avx512f", False))


LANES = 16  # columns per tile: one AVX-512 register of float32, two AVX2 ones
# Weight rows per panel = accumulators per tile. AVX-512 has 32 vector registers: 8 rows (8 of
# them; 16 measured no faster on the Zen 4). AVX2 has 16 and needs two per 16 columns: 4 rows
# (8 registers) leave room for the loaded columns instead of spilling.
PANEL = 8 if _avx512_target() else 4


def _make_tile(rows, blocks, strided=False, accumulate=False, lanes=None):
    """Intrinsic tile(panel (K, rows), src (K, >= blocks*LANES), out (rows, >= blocks*LANES)):
    out[:, :blocks*LANES] = panel.T @ src[:, :blocks*LANES] (+= with accumulate). Inner strides
    of src and out must be 1; so must the panel's, unless strided: then its rows may be any
    view, such as a[r:r + rows, k0:k1].T of a row-major a (each weight one broadcast load)."""

    @intrinsic
    def tile(typingctx, panel, src, out):
        def codegen(context, builder, sig, args):
            dt = context.get_value_type(sig.args[0].dtype)
            width = lanes or LANES
            vt = ir.VectorType(dt, width)
            i64 = ir.IntType(64)
            item = context.get_abi_sizeof(dt)
            arrays = [context.make_array(t)(context, builder, a) for t, a in zip(sig.args, args)]
            K = cgutils.unpack_tuple(builder, arrays[0].shape, 2)[0]
            w_step, w_rstep = cgutils.unpack_tuple(builder, arrays[0].strides, 2)
            s_step = cgutils.unpack_tuple(builder, arrays[1].strides, 2)[0]
            o_step = cgutils.unpack_tuple(builder, arrays[2].strides, 2)[0]
            steps = (w_step, s_step, o_step, w_rstep)
            w_ld, s_ld, o_ld, w_rd = (builder.sdiv(x, ir.Constant(i64, item)) for x in steps)
            wptr, sptr, optr = arrays[0].data, arrays[1].data, arrays[2].data
            name = "llvm.fma.v%d%s" % (width, "f32" if sig.args[0].dtype == types.float32 else "f64")
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), name)
            zero = ir.Constant(vt, [ir.Constant(dt, 0.0)] * width)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)

            def vec_at(ptr, offset):
                return builder.bitcast(builder.gep(ptr, [offset]), vt.as_pointer())

            def out_at(r, c):
                return vec_at(optr, builder.add(builder.mul(ir.Constant(i64, r), o_ld), ir.Constant(i64, c * width)))

            row_ptrs = [builder.gep(wptr, [builder.mul(ir.Constant(i64, r), w_rd)]) for r in range(rows)]
            starts = [builder.load(out_at(r, c), align=4) if accumulate else zero
                      for r in range(rows) for c in range(blocks)]
            entry = builder.basic_block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", K, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            accs = [builder.phi(vt) for _ in range(rows * blocks)]
            s_row = builder.mul(k, s_ld)
            src_v = [builder.load(vec_at(sptr, builder.add(s_row, ir.Constant(i64, c * width))), align=4)
                     for c in range(blocks)]
            w_row = builder.mul(k, w_ld)
            new = []
            for r in range(rows):
                if strided:
                    w_at = builder.gep(row_ptrs[r], [w_row])
                else:
                    w_at = builder.gep(wptr, [builder.add(w_row, ir.Constant(i64, r))])
                w = builder.load(w_at, align=4)
                wv = builder.insert_element(ir.Constant(vt, ir.Undefined), w, ir.Constant(ir.IntType(32), 0))
                wv = builder.shuffle_vector(wv, ir.Constant(vt, ir.Undefined), splat)
                new.extend(builder.call(fma, [wv, src_v[c], accs[r * blocks + c]]) for c in range(blocks))
            k_next = builder.add(k, ir.Constant(i64, 1))
            builder.cbranch(builder.icmp_signed("<", k_next, K), loop, done)
            k.add_incoming(ir.Constant(i64, 0), entry)
            k.add_incoming(k_next, loop)
            for acc, value, start in zip(accs, new, starts):
                acc.add_incoming(start, entry)
                acc.add_incoming(value, loop)
            builder.position_at_end(done)
            results = []
            for value, start in zip(new, starts):  # all phis first: LLVM wants them at the top of the block
                res = builder.phi(vt)
                res.add_incoming(start, entry)
                res.add_incoming(value, loop)
                results.append(res)
            for r in range(rows):
                for c in range(blocks):
                    builder.store(results[r * blocks + c], out_at(r, c), align=4)
            return context.get_dummy_value()

        return types.void(panel, src, out), codegen

    return tile


# One vector of columns per tile: 8 accumulators. Two (16 accumulators, each weight used twice)
# measured 2-4% slower on the Zen 4 (H=128..256, 16 and 32 columns), so the callers loop over
# column blocks of LANES instead.
tile = _make_tile(PANEL, 1)


# Half a vector of columns for the last block: a batch block of 50 rows then runs as 56
# columns, not 64 (the charlm step, one thread, N=50: 52.2 -> 47.5 ms).
HALF = LANES // 2
tile_half = _make_tile(PANEL, 1, lanes=HALF)


@njit(inline="always")
def padded(n):
    """n rounded up to whole half vector registers (the column count of the tile buffers)."""
    return (n + HALF - 1) // HALF * HALF


@njit(cache=True)
def pack_panels(w, order):
    """Panels (len(order) // PANEL, K, PANEL) of w (rows, K): panel row i is w[order[i]], or
    zeros where order[i] < 0. len(order) must be a multiple of PANEL."""
    P, K = order.shape[0] // PANEL, w.shape[1]
    panels = np.zeros((P, K, PANEL), w.dtype)
    for p in range(P):
        for r in range(PANEL):
            src = order[p * PANEL + r]
            if src >= 0:
                for k in range(K):
                    panels[p, k, r] = w[src, k]
    return panels


@njit(cache=True)
def natural_order(rows):
    """Row order 0..rows-1 padded with -1 to whole panels."""
    order = np.full((rows + PANEL - 1) // PANEL * PANEL, -1, np.int64)
    order[:rows] = np.arange(rows)
    return order


@njit(inline="always", fastmath={"contract"})
def panel_tile(panel, src, out):
    """out (PANEL, C) = panel.T @ src (K, C), C a multiple of HALF."""
    whole = src.shape[1] // LANES * LANES
    for c in range(0, whole, LANES):
        tile(panel, src[:, c:c + LANES], out[:, c:c + LANES])
    if whole < src.shape[1]:
        tile_half(panel, src[:, whole:whole + HALF], out[:, whole:whole + HALF])


@njit(cache=True, fastmath={"contract"})
def panel_matmul(panels, src, out):
    """out (P*PANEL, C) = (the packed W) @ src (K, C), C a multiple of HALF."""
    for p in range(panels.shape[0]):
        panel_tile(panels[p], src, out[p * PANEL:(p + 1) * PANEL])


# Weight gradients (sums over all T*N steps of a layer) on the same tiles: each weight is one
# broadcast load straight from the gradient rows (no packing), K taken KC at a time so a panel's
# slice stays in L1 while the tile walks the columns. Measured one thread, CPU time, against
# np.dot (OpenBLAS) from compiled code: (1024 x 3200) @ (3200 x 256) 15.2 against 16.4 ms,
# (512 x 2500) @ (2500 x 64) 1.46 against 1.67 ms.
KC = 256
_gemm_first = _make_tile(PANEL, 1, strided=True)
_gemm_more = _make_tile(PANEL, 1, strided=True, accumulate=True)
_tn_more = _make_tile(PANEL, 1, accumulate=True)


@njit(inline="always")
def panel_rows(k, nblocks, rows):
    """Rows of block k when rows are split into nblocks runs of whole panels (the last run
    also takes the rows past the last whole panel)."""
    panels = rows // PANEL
    lo, hi = k * panels // nblocks * PANEL, (k + 1) * panels // nblocks * PANEL
    return lo, (rows if k == nblocks - 1 else hi)


@njit(inline="always", fastmath={"contract"})
def _slice(panel, b_cols, out_cols, first, strided):
    """out_cols (+)= panel.T @ b_cols, LANES columns at a time; strided: the panel's rows are
    any view (weight gradients), else they lie as a packed panel's (input gradient)."""
    for c in range(0, b_cols.shape[1], LANES):
        src, dst = b_cols[:, c:c + LANES], out_cols[:, c:c + LANES]
        if strided:
            if first:
                _gemm_first(panel, src, dst)
            else:
                _gemm_more(panel, src, dst)
        elif first:
            tile(panel, src, dst)
        else:
            _tn_more(panel, src, dst)


@njit(cache=True, fastmath={"contract"})
def _panels_product(a, b, out, lo, hi, transposed):
    """out[lo:hi] = a[lo:hi] @ b, or a[:, lo:hi].T @ b when transposed. b (S, P): S the summed
    dimension, taken KC at a time; PANEL rows of out per tile, lo a multiple of PANEL. Columns
    past the last whole vector go through zero-padded copies of b's and out's tails."""
    S, P = b.shape
    whole = lo + (hi - lo) // PANEL * PANEL
    P_full = P // LANES * LANES
    tail = P - P_full
    b_tail = np.zeros((min(S, KC), LANES if tail else 0), b.dtype)
    out_tail = np.zeros((whole - lo, LANES if tail else 0), b.dtype)
    out[lo:hi] = 0  # the result of an empty sum, and the start of the rows past the panels
    for s0 in range(0, S, KC):
        s1 = min(S, s0 + KC)
        for i in range(s1 - s0):
            for c in range(tail):
                b_tail[i, c] = b[s0 + i, P_full + c]
        for r in range(lo, whole, PANEL):
            panel = a[s0:s1, r:r + PANEL] if transposed else a[r:r + PANEL, s0:s1].T
            _slice(panel, b[s0:s1, :P_full], out[r:r + PANEL, :P_full], s0 == 0, not transposed)
            _slice(panel, b_tail[:s1 - s0], out_tail[r - lo:r - lo + PANEL], s0 == 0, not transposed)
    for r in range(lo, whole):
        for c in range(tail):
            out[r, P_full + c] = out_tail[r - lo, c]
    for r in range(whole, hi):  # rows past the last whole panel
        row = out[r]
        for g in range(S):
            a_g = a[g, r] if transposed else a[r, g]
            b_g = b[g]
            for c in range(P):
                row[c] += a_g * b_g[c]


@njit(cache=True)
def gemm_panels(a, b, out, lo, hi):
    """out[lo:hi] = a[lo:hi] @ b (a layer's weight gradients dG @ x, dG @ h) for a (R, K), b
    (K, P) with inner strides 1: each weight one broadcast load from a's rows."""
    _panels_product(a, b, out, lo, hi, False)


@njit(cache=True)
def gemm_tn_panels(a, b, out, lo, hi):
    """out[lo:hi] = a[:, lo:hi].T @ b (the input gradient dG.T @ W_ih) for a (G, K), b (G, P)
    with inner strides 1: PANEL columns of a are a tile's panel as they lie. Measured one
    thread, CPU time, against np.dot on the transposed operand: (512 x 2504).T @ (512 x 128)
    2.9 against 3.9 ms."""
    _panels_product(a, b, out, lo, hi, True)
