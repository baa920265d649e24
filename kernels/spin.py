"""A spin barrier for threads that stay inside one compiled parallel region.

Generating text is a chain of tiny steps (one token through every layer): starting a Numba
parallel loop per layer costs more than the layer's arithmetic. Instead, the sampling kernel
starts one `prange` iteration per thread for the whole call and the threads meet at this
barrier after each layer. Numba has no CPU atomics, so the loads and stores are emitted as
LLVM atomic instructions (a plain load would be hoisted out of the waiting loop).

Each thread owns one counter (on its own 128-byte line, so waiting threads do not bounce the
writer's line) and raises it to k when it reaches barrier k; waiting means every other counter
is >= k. A wait gives up after `limit` rounds of polling (the other thread was never scheduled,
e.g. fewer OS threads than iterations), raises the shared abort flag and returns False; every
waiter sees the flag and returns False too, and the caller redoes the work another way.
"""
import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

STRIDE = 16  # int64 counters 128 bytes apart
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def atomic_load(typingctx, arr, idx):
    """arr[idx] read with acquire ordering (int64 1-d array)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.load_atomic(ptr, ordering="acquire", align=8)
    return types.int64(arr, idx), codegen


@intrinsic
def atomic_store(typingctx, arr, idx, value):
    """arr[idx] = value with release ordering (int64 1-d array)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()
    return types.void(arr, idx, value), codegen


@intrinsic
def cpu_relax(typingctx):
    """x86 PAUSE inside a polling loop (frees the core's pipeline); nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(cache=True)
def barrier(counters, me, nthreads, k, limit):
    """Thread `me` arrives at barrier k and waits for the others. counters has
    (nthreads + 1) * STRIDE int64 entries, zero at the start; the last slot is the abort
    flag. Returns False if the wait was abandoned (by this thread or another)."""
    abort = nthreads * STRIDE
    atomic_store(counters, me * STRIDE, k)
    for other in range(nthreads):
        if other == me:
            continue
        polls = 0
        while atomic_load(counters, other * STRIDE) < k:
            if atomic_load(counters, abort) != 0:
                return False
            polls += 1
            if polls >= limit:
                atomic_store(counters, abort, 1)
                return False
            cpu_relax()
    return True
