"""The persistent LSTM kernels as a real GPU runs them: several blocks, side by side.

Numba's simulator runs one block at a time and its grid sync only works within one block, so
the simulator tests host every virtual block in a single block. Here the kernels' Python source
runs on a grid of NVB blocks (one virtual block each, the GPU layout), every thread a Python
thread, with real barriers for cuda.syncthreads() and the grid sync. Every global and shared
memory access is logged with the barrier epoch it falls in; two threads touching one element in
the same epoch, at least one of them writing, is a race. The results must equal, to the bit,
the single-threaded run of the simulator's layout (which the simulator tests check against the
per-step kernels).
"""
import random
import threading
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

from seqtool.kernels.cuda import common, persistent

_local = threading.local()


class _Index:
    def __init__(self, attr):
        self.attr = attr

    @property
    def x(self):
        return getattr(_local, self.attr)


class _Logged:
    """An array whose element accesses are logged as (epoch, thread, read/write)."""

    def __init__(self, name, array, log, block=None):
        self.name, self.array, self.log, self.block = name, array, log, block
        self.shape, self.dtype = array.shape, array.dtype

    def _note(self, index, op):
        index = tuple(int(i) for i in (index if isinstance(index, tuple) else (index,)))
        shared = self.block is not None
        key = (self.name, self.block, index)
        self.log[key].append((_local.block_epoch if shared else _local.grid_epoch,
                              (_local.block, _local.thread), op))
        if _local.jitter.random() < 0.02:  # vary the interleaving
            threading.Event().wait(1e-4)
        return index

    def __getitem__(self, index):
        return self.array[self._note(index, "r")]

    def __setitem__(self, index, value):
        self.array[self._note(index, "w")] = value


class _Launch:
    """One kernel launch on grid x block Python threads."""

    def __init__(self, grid, block):
        self.grid, self.block = grid, block
        self.log = defaultdict(list)
        self.lock = threading.Lock()
        self.grid_barrier = threading.Barrier(grid * block)
        self.block_barriers = [threading.Barrier(block) for _ in range(grid)]
        self.shared = {}
        self.grid_syncs = defaultdict(int)

    def shared_array(self, shape, _type):
        with self.lock:
            if _local.block not in self.shared:
                self.shared[_local.block] = _Logged("shared", np.full(shape, np.nan), self.log, _local.block)
            return self.shared[_local.block]

    def syncthreads(self):
        self.block_barriers[_local.block].wait(timeout=60)
        _local.block_epoch += 1

    def grid_sync(self):
        self.grid_syncs[(_local.block, _local.thread)] += 1
        self.grid_barrier.wait(timeout=60)
        _local.grid_epoch += 1
        _local.block_epoch += 1

    def run(self, kernel, args):
        errors = []

        def thread(b, t):
            _local.block, _local.thread, _local.grid_epoch, _local.block_epoch = b, t, 0, 0
            _local.jitter = random.Random(b * 1000 + t)
            try:
                kernel(*args)
            except Exception as err:  # a failing thread must not leave the others waiting
                errors.append(repr(err))
                self.grid_barrier.abort()
                for barrier in self.block_barriers:
                    barrier.abort()

        threads = [threading.Thread(target=thread, args=(b, t)) for b in range(self.grid) for t in range(self.block)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors[0]
        assert len(set(self.grid_syncs.values())) <= 1, "threads passed different numbers of grid syncs"

    def races(self):
        found = []
        for key, accesses in self.log.items():
            by_epoch = defaultdict(list)
            for epoch, who, op in accesses:
                by_epoch[epoch].append((who, op))
            for epoch, acc in by_epoch.items():
                if len({who for who, _ in acc}) > 1 and any(op == "w" for _, op in acc):
                    found.append((key, epoch, sorted(set(acc))[:4]))
        return found


@pytest.fixture
def threaded_cuda(monkeypatch):
    """persistent.py's kernels built against a stand-in numba.cuda whose jit returns the Python
    function and whose indices, barriers and shared arrays are those of the current _Launch."""
    current = {}
    fake = SimpleNamespace(
        threadIdx=_Index("thread"), blockIdx=_Index("block"),
        jit=lambda f=None, device=False, **kw: (lambda g: g) if f is None else f,
        shared=SimpleNamespace(array=lambda shape, ty: current["launch"].shared_array(shape, ty)),
        syncthreads=lambda: current["launch"].syncthreads(),
        cg=SimpleNamespace(this_grid=lambda: SimpleNamespace(sync=lambda: current["launch"].grid_sync())))

    monkeypatch.setattr(common, "cuda", lambda: fake)
    for cached in (common.lstm_unit, persistent._kernel, persistent._backward_kernel):
        cached.cache_clear()
    monkeypatch.setattr(persistent, "cuda", fake)

    def launch(builder, grid, block, nvb, ub, vpb, args):
        kernel = builder(np.dtype(np.float64), args[-1], nvb, ub, vpb)
        current["launch"] = run = _Launch(grid, block)
        fake.blockDim = SimpleNamespace(x=block)
        fake.gridDim = SimpleNamespace(x=grid)
        logged = [_Logged(f"arg{i}", a, run.log) if isinstance(a, np.ndarray) else a
                  for i, a in enumerate(args[:-1])]
        run.run(kernel, logged)
        return run

    yield launch
    for cached in (common.lstm_unit, persistent._kernel, persistent._backward_kernel):
        cached.cache_clear()  # later users build against the real numba.cuda again


def _forward_problem(T, N, H, reverse, seed=0):
    rng = np.random.default_rng(seed)
    gates = rng.standard_normal((4 * H, T, N))
    b = 0.1 * rng.standard_normal(4 * H)
    w_hh = 0.3 * rng.standard_normal((4 * H, H))
    h, c, y = np.zeros((T + 1, N, H)), np.zeros((T + 1, H, N)), np.zeros((T, N, H))
    first = T if reverse else 0
    h[first], c[first] = rng.standard_normal((N, H)), rng.standard_normal((H, N))
    lengths = rng.integers(0, T + 1, N).astype(np.int64)
    lengths[0] = T
    return [gates, b, w_hh, h, c, y, lengths]


CASES = [(4, 3, 5, 2, 4), (4, 3, 5, 3, 2), (5, 2, 7, 3, 3), (3, 4, 4, 4, 8), (3, 2, 5, 5, 1)]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T,N,H,nvb,threads", CASES)
def test_persistent_kernels_on_many_blocks_have_no_races(threaded_cuda, T, N, H, nvb, threads, reverse):
    ub = -(-H // nvb)
    # forward: nvb real blocks (the GPU layout) against one thread hosting every virtual block
    on_grid = _forward_problem(T, N, H, reverse)
    alone = [a.copy() for a in on_grid]
    run = threaded_cuda(persistent._kernel, nvb, threads, nvb, ub, 1, on_grid + [reverse, H])
    assert run.races() == []
    threaded_cuda(persistent._kernel, 1, 1, nvb, ub, nvb, alone + [reverse, H])
    for k in (0, 3, 4, 5):  # gates, h, c, y
        np.testing.assert_array_equal(on_grid[k], alone[k])

    # backward on the forward's arrays: dgates starts as NaN, so an unwritten element shows
    rng = np.random.default_rng(1)
    gates, _, w_hh, _, c, _, lengths = on_grid
    back = [np.full((4 * H, T, N), np.nan), rng.standard_normal((H, N)), rng.standard_normal((H, N)),
            gates, c, rng.standard_normal((T, N, H)), w_hh, lengths]
    back_alone = [a.copy() for a in back]
    run = threaded_cuda(persistent._backward_kernel, nvb, threads, nvb, ub, 1, back + [reverse, H])
    assert run.races() == []
    threaded_cuda(persistent._backward_kernel, 1, 1, nvb, ub, nvb, back_alone + [reverse, H])
    for k in (0, 1, 2):  # dgates, dh, dc
        assert not np.isnan(back[k]).any()
        np.testing.assert_array_equal(back[k], back_alone[k])


def test_the_race_check_finds_a_missing_grid_sync(threaded_cuda, monkeypatch):
    # without the barrier between phase 1 and phase 2 of the backward, blocks read gate
    # gradients other blocks are still writing: the check must say so
    T, N, H, nvb = 4, 3, 5, 3
    ub = -(-H // nvb)
    fwd = _forward_problem(T, N, H, False)
    threaded_cuda(persistent._kernel, 1, 1, nvb, ub, nvb, fwd + [False, H])
    rng = np.random.default_rng(1)
    back = [np.zeros((4 * H, T, N)), rng.standard_normal((H, N)), rng.standard_normal((H, N)), fwd[0], fwd[4],
            rng.standard_normal((T, N, H)), fwd[2], fwd[6]]
    run = threaded_cuda(persistent._backward_kernel, nvb, 2, nvb, ub, 1, back + [False, H])
    assert run.races() == []  # the kernel as it is
    monkeypatch.setattr(_Launch, "grid_sync", lambda self: None)
    run = threaded_cuda(persistent._backward_kernel, nvb, 2, nvb, ub, 1, [a.copy() for a in back] + [False, H])
    assert any(key[0] == "arg0" for key, _, _ in run.races())  # dgates read and written unordered
