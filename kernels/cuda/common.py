"""What the CUDA kernels share: the device check, the array module, launch shapes, activations.

Split of the work (same as the CPU kernels, different engines):
  GEMMs  input projection of all steps, the per-step h_{t-1} W_hh^T, dW summed over time:
         through the array module of the inputs (CuPy -> cuBLAS; NumPy under the simulator)
  gates  per-step fused elementwise arithmetic: @cuda.jit kernels, one thread per (n, j)

numba.cuda is imported on first use, never at import time, so that `import seqtool.kernels.cuda`
works on a CPU-only install; the kernels are built per dtype on first call (see `kernel_cache`).
"""
import functools
import os
import warnings

import numpy as np

from seqtool.device import NO_GPU
from seqtool.errors import SeqtoolError
from seqtool.kernels.cuda import toolchain

# Threads per block of the elementwise kernels. Module-level so tests can shrink it (the
# simulator runs each thread as a Python thread; tiny blocks exercise the grid arithmetic).
BLOCK = 128

# numba.cuda once loaded, as a module global: the simulator swaps module globals that
# refer to numba.cuda for its fake (a closure variable would keep the real one).
_cuda = None


def simulator():
    """Numba's CUDA simulator is on (kernels run in Python threads). Read here, not through
    seqtool.device, whose notion of host arrays the tests of device arrays patch separately."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"


def cuda():
    """numba.cuda, or a clear SeqtoolError when it is missing or there is no usable device."""
    numba_cuda = toolchain.import_numba_cuda()
    if not numba_cuda.is_available():  # the simulator counts as available
        raise SeqtoolError(NO_GPU)
    return numba_cuda


def array_module(a):
    """cupy for CuPy arrays; numpy for host arrays, which only the simulator may take."""
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    if not simulator():
        raise SeqtoolError("the CUDA kernels take CuPy arrays (NumPy arrays only under NUMBA_ENABLE_CUDASIM=1)")
    return np


def prepare(x, lengths):
    """(numba.cuda, array module, lengths on the device as int64 (N,)). Called by every entry point."""
    cu = cuda()
    xp = array_module(x)
    T, N = x.shape[0], x.shape[1]
    if lengths is None:
        lengths = np.full(N, T, np.int64)
    return cu, xp, xp.ascontiguousarray(xp.asarray(lengths), dtype=xp.int64)


def grid(total):
    """Blocks of BLOCK threads covering `total` threads (at least one block)."""
    return max(1, -(-total // BLOCK)), BLOCK


def step_slots(t, reverse):
    """(prev, cur): the state-chain slots read and written by step t (see kernels/lstm.py)."""
    return (t + 1, t) if reverse else (t, t + 1)


def time_order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def steps(T, reverse, backward=False):
    """(t, prev, cur) for each step in sweep order; a backward sweep runs opposite to the forward one."""
    for t in time_order(T, reverse != backward):
        yield (t,) + step_slots(t, reverse)


def project_inputs(x, w_ih):
    """All steps' input projection W_ih x_t at once, gate-major: (rows of w_ih, T, N)."""
    T, N, D = x.shape
    return (w_ih @ x.reshape(T * N, D).T).reshape(w_ih.shape[0], T, N)


def start_chain(x, h0, reverse, xp):
    """The state chain h (T+1, N, H) holding h0 in the slot read first, and the output y (T, N, H)."""
    T, N, _ = x.shape
    H = h0.shape[1]
    h = xp.empty((T + 1, N, H), x.dtype)
    y = xp.empty((T, N, H), x.dtype)
    h[T if reverse else 0] = h0
    return h, y


def input_grads(x, w_ih, d, need_dx, xp):
    """From the pre-activation gradients d (G, T, N): dx (T, N, D) (empty unless need_dx),
    dw_ih (G, D) and d as a (G, T*N) matrix for the remaining weight gradients."""
    T, N, D = x.shape
    d2 = d.reshape(d.shape[0], T * N)
    dx = (d2.T @ w_ih).reshape(T, N, D) if need_dx else xp.empty((0, N, D), x.dtype)
    return dx, d2 @ x.reshape(T * N, D), d2


def states_in(h, reverse):
    """The states that fed each step, (T*N, H): the rows dW_hh is summed over."""
    T = h.shape[0] - 1
    return (h[1:] if reverse else h[:T]).reshape(T * h.shape[1], h.shape[2])


def kernel_cache(builder):
    """Memoize a kernel builder on its (hashable) arguments, typically the numpy dtype."""
    return functools.lru_cache(maxsize=None)(builder)


def activations(dtype):
    """(one, sigm, tanh_) device functions typed for dtype.

    `one` is a numpy scalar of the dtype: captured as a constant, it keeps float32 arithmetic in
    float32 (a bare 1.0 literal is float64 in Numba and would promote every gate to double).
    Both precisions use the exact functions (tanhf/expf on the device).
    """
    import math

    cu = cuda()
    one = np.dtype(dtype).type(1.0)

    @cu.jit(device=True)
    def sigm(v):
        # exp of a non-positive argument only: no overflow (the simulator's math.exp raises
        # on one, a GPU would give inf and still the right limit)
        if v >= 0:
            return one / (one + math.exp(-v))
        e = math.exp(v)
        return e / (one + e)

    @cu.jit(device=True)
    def tanh_(v):
        return math.tanh(v)

    return one, sigm, tanh_


@kernel_cache
def cell_of():
    """Device function cell(k, N, H) -> (j, n): the unit and batch row of thread k of a per-step
    kernel, n fastest so that gate-major (H, N) reads coalesce; j == H for the threads past N * H."""
    cu = cuda()

    @cu.jit(device=True)
    def cell(k, N, H):
        if k >= N * H:
            return H, 0
        j = k // N
        return j, k - j * N

    return cell


def numba_type(dtype):
    """The Numba scalar type of a NumPy float dtype (for shared-memory arrays)."""
    from numba import types

    return {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}[np.dtype(dtype)]


@kernel_cache
def lstm_unit(dtype):
    """Device functions for one LSTM unit, shared by the per-step kernels (lstm.py) and the
    persistent ones (persistent.py), so both compute the same numbers:
      forward(a_i, a_f, a_g, a_o, c_prev) -> (i, f, g, o, c, h) from the pre-activations;
      backward(i, f, g, o, c_prev, c, dh, dc) -> (d_i, d_f, d_g, d_o, dc reaching c_prev)
    with dh, dc the gradients reaching h_t and c_t from later steps and the outputs."""
    cu = cuda()
    one, sigm, tanh_ = activations(dtype)

    @cu.jit(device=True)
    def forward(a_i, a_f, a_g, a_o, c_prev):
        i_ = sigm(a_i)
        f_ = sigm(a_f)
        g_ = tanh_(a_g)
        o_ = sigm(a_o)
        cv = f_ * c_prev + i_ * g_
        return i_, f_, g_, o_, cv, o_ * tanh_(cv)

    @cu.jit(device=True)
    def backward(i_, f_, g_, o_, c_prev, cv, dh, dc):
        tc = tanh_(cv)
        dc_t = dc + dh * o_ * (one - tc * tc)
        return (dc_t * g_ * i_ * (one - i_), dc_t * c_prev * f_ * (one - f_),
                dc_t * i_ * (one - g_ * g_), dh * tc * o_ * (one - o_), dc_t * f_)

    return forward, backward


def _layout(a):
    """What Numba's argument typing depends on: an array's dtype, rank and contiguity (its
    layout C, F or A), a scalar's Python type."""
    flags = getattr(a, "flags", None)
    if flags is None:
        return type(a)
    return a.dtype.str, a.ndim, bool(flags.c_contiguous), bool(flags.f_contiguous)


class PretypedLaunch:
    """kernel[grid, block], with Numba's per-launch argument typing done once per argument
    layout instead of at every launch (the issue-17 profile: ~0.8 ms of host time per launch,
    most of it typing CuPy arrays). The first launch of a layout goes through the dispatcher
    (typing, compiling), which then holds the compiled kernel for those types; later launches of
    the same layout hand the arguments to it directly. A layout the dispatcher did not compile
    (a stand-in dispatcher, e.g. in the PTX tests) keeps the dispatcher path."""

    def __init__(self, dispatcher, grid, block):
        with warnings.catch_warnings():  # the persistent kernels take one block per SM on purpose
            warnings.filterwarnings("ignore", message="Grid size .* under-utilization")
            self.config = dispatcher[grid, block]
        self.dispatcher = dispatcher
        self.kernels = {}

    def __call__(self, *args):
        key = tuple(_layout(a) for a in args)
        kernel = self.kernels.get(key)
        if kernel is not None:
            c = self.config
            kernel.launch(args, c.griddim, c.blockdim, c.stream, c.sharedmem)
            return
        self.config(*args)
        types = tuple(self.dispatcher.typeof_pyval(a) for a in args)
        self.kernels[key] = self.dispatcher.overloads.get(types)


def configure(dispatcher, grid, block):
    """A launcher for kernel[grid, block]: pre-typed on a GPU (PretypedLaunch); under the
    simulator, whose kernel[...] configures the kernel object itself, configured at each call."""
    if simulator():
        return lambda *args: dispatcher[grid, block](*args)
    return PretypedLaunch(dispatcher, grid, block)


@kernel_cache
def _merge_kernel(dtype):
    cu = cuda()
    global _cuda
    _cuda = cu

    @cu.jit
    def merge(dst, src, lengths, t, add, batch_axis):
        # dst (+)= src for the batch rows still inside their sequence at step t.
        k = _cuda.grid(1)
        if k >= dst.shape[0] * dst.shape[1]:
            return
        if batch_axis == 1:  # (H, N): n fastest, coalesced
            N = dst.shape[1]
            j = k // N
            n = k - j * N
            if t < lengths[n]:
                if add:
                    dst[j, n] += src[j, n]
                else:
                    dst[j, n] = src[j, n]
        else:  # (N, H)
            H = dst.shape[1]
            n = k // H
            j = k - n * H
            if t < lengths[n]:
                if add:
                    dst[n, j] += src[n, j]
                else:
                    dst[n, j] = src[n, j]

    return merge


def merge_rows(dst, src, lengths, t, add, batch_axis=0):
    """The recurrent gradient (dgates_t through W_hh) reaches only the rows valid at step t."""
    _merge_kernel(dst.dtype)[grid(dst.size)](dst, src, lengths, t, bool(add), batch_axis)
