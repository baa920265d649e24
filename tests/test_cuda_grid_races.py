"""The persistent kernels (LSTM, GRU both forms, RNN) as a real GPU runs them: several blocks.

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

from seqtool.kernels.cuda import common, persistent, persistent_gru, persistent_rnn, sample

_local = threading.local()


class _Index:
    def __init__(self, attr):
        self.attr = attr

    @property
    def x(self):
        return getattr(_local, self.attr)


class _Logged:
    """An array whose element accesses are logged as (grid epoch, block epoch, thread, read/write):
    accesses of threads in one block are ordered by either barrier, of different blocks only by
    the grid sync (shared arrays belong to one block)."""

    def __init__(self, name, array, log, block=None):
        self.name, self.array, self.log, self.block = name, array, log, block
        self.shape, self.dtype = array.shape, array.dtype

    def _note(self, index, op):
        index = tuple(int(i) for i in (index if isinstance(index, tuple) else (index,)))
        key = (self.name, self.block, index)
        self.log[key].append((_local.grid_epoch, _local.block_epoch, (_local.block, _local.thread), op))
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
        # the n-th shared array a thread declares is the block's n-th (every thread declares
        # them in the same order)
        key = (_local.block, _local.shared_arrays)
        _local.shared_arrays += 1
        with self.lock:
            if key not in self.shared:
                self.shared[key] = _Logged(f"shared{key[1]}", np.full(shape, np.nan), self.log, _local.block)
            return self.shared[key]

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
            _local.shared_arrays = 0
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
        """Pairs of accesses to one element, at least one a write, by two threads that no
        barrier orders: different blocks in one grid epoch, or one block in one block epoch."""
        found = []
        for key, accesses in self.log.items():
            by_grid_epoch = defaultdict(list)
            for ge, be, who, op in accesses:
                by_grid_epoch[ge].append((be, who, op))
            for ge, acc in by_grid_epoch.items():
                writes = [(be, who) for be, who, op in acc if op == "w"]
                clash = next(((who, other) for be, who in writes for be2, other, _ in acc
                              if other != who and (other[0] != who[0] or be2 == be)), None)
                if clash:
                    found.append((key, ge, clash))
        return found


BUILDERS = (common.lstm_unit, persistent._kernel, persistent._backward_kernel,
            persistent_gru._kernel, persistent_gru._backward_kernel, persistent_rnn._kernel,
            persistent_rnn._backward_kernel, sample._kernel, sample._pick)


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
    for cached in BUILDERS:
        cached.cache_clear()
    for module in (persistent, persistent_gru, persistent_rnn, sample):
        monkeypatch.setattr(module, "cuda", fake)

    def launch(builder, grid, block, nvb, ub, vpb, args, staged=True, grid_sync=True):
        kernel = builder(np.dtype(np.float64), args[-1], nvb, ub, vpb, staged, grid_sync)
        return run_kernel(kernel, grid, block, args[:-1])

    def run_kernel(kernel, grid, block, args):
        current["launch"] = run = _Launch(grid, block)
        fake.blockDim = SimpleNamespace(x=block)
        fake.gridDim = SimpleNamespace(x=grid)
        logged = [_Logged(f"arg{i}", a, run.log) if isinstance(a, np.ndarray) else a
                  for i, a in enumerate(args)]
        run.run(kernel, logged)
        return run

    launch.run_kernel = run_kernel
    yield launch
    for cached in BUILDERS:
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


def _cell_problem(cell, T, N, H, reverse, flag, seed=0):
    """(forward builder, forward args, indices of its outputs, backward builder, backward args
    from the forward's arrays, indices of the backward's outputs) for GRU (flag: reset_after)
    or RNN (flag: relu). Gradient outputs start as NaN, so an unwritten element shows."""
    rng = np.random.default_rng(seed)
    G = 3 if cell == "gru" else 1
    gates = rng.standard_normal((G * H, T, N))
    w_hh = 0.3 * rng.standard_normal((G * H, H))
    h, y = np.zeros((T + 1, N, H)), np.zeros((T, N, H))
    h[T if reverse else 0] = rng.standard_normal((N, H))
    lengths = rng.integers(0, T + 1, N).astype(np.int64)
    lengths[0] = T
    dh, dy = rng.standard_normal((H, N)), rng.standard_normal((T, N, H))
    if cell == "gru":
        b_ih, b_hh = 0.1 * rng.standard_normal(3 * H), 0.1 * rng.standard_normal(3 * H)
        hn = np.zeros((H, T, N))
        fwd = [gates, b_ih, b_hh, w_hh, h, hn, y, lengths, reverse, flag]
        bwd = [np.full((3 * H, T, N), np.nan), np.full((3 * H, T, N), np.nan), dh, gates, hn, h, dy, w_hh,
               lengths, reverse, flag]
        return persistent_gru._kernel, fwd, (0, 4, 5, 6), persistent_gru._backward_kernel, bwd, (0, 1, 2)
    b = 0.1 * rng.standard_normal(H)
    fwd = [gates, b, w_hh, h, y, lengths, reverse, flag]
    bwd = [np.full((H, T, N), np.nan), dh, gates, dy, w_hh, lengths, reverse, flag]
    return persistent_rnn._kernel, fwd, (0, 3, 4), persistent_rnn._backward_kernel, bwd, (0, 1)


CELLS = [("gru", True), ("gru", False), ("rnn", False), ("rnn", True)]


@pytest.mark.parametrize("cell,flag", CELLS, ids=["gru", "gru-classic", "rnn-tanh", "rnn-relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T,N,H,nvb,threads,staged", [(4, 3, 5, 2, 4, True), (3, 2, 7, 3, 3, False),
                                                      (3, 4, 4, 4, 8, True)])
def test_gru_and_rnn_kernels_on_many_blocks_have_no_races(threaded_cuda, cell, flag, reverse, T, N, H, nvb,
                                                          threads, staged):
    ub = -(-H // nvb)
    fwd_kernel, fwd, fwd_out, bwd_kernel, bwd, bwd_out = _cell_problem(cell, T, N, H, reverse, flag)
    alone = [a.copy() if isinstance(a, np.ndarray) else a for a in fwd]
    run = threaded_cuda(fwd_kernel, nvb, threads, nvb, ub, 1, fwd + [H], staged)
    assert run.races() == []
    threaded_cuda(fwd_kernel, 1, 1, nvb, ub, nvb, alone + [H], staged)
    for k in fwd_out:
        np.testing.assert_array_equal(fwd[k], alone[k])
    back_alone = [a.copy() if isinstance(a, np.ndarray) else a for a in bwd]
    run = threaded_cuda(bwd_kernel, nvb, threads, nvb, ub, 1, bwd + [H], staged)
    assert run.races() == []
    threaded_cuda(bwd_kernel, 1, 1, nvb, ub, nvb, back_alone + [H], staged)
    for k in bwd_out:
        assert not np.isnan(bwd[k]).any()
        np.testing.assert_array_equal(bwd[k], back_alone[k])


@pytest.mark.parametrize("cell,flag", [("lstm", None)] + CELLS, ids=["lstm", "gru", "gru-classic", "rnn-tanh",
                                                                      "rnn-relu"])
def test_one_block_layout_has_no_races(threaded_cuda, cell, flag):
    # the plain-launch fallback: one block owns every unit, syncthreads as the step barrier
    T, N, H, threads = 3, 3, 5, 4
    if cell == "lstm":
        fwd = _forward_problem(T, N, H, False) + [False]
        fwd_kernel, fwd_out, bwd_kernel = persistent._kernel, (0, 3, 4, 5), persistent._backward_kernel
        rng = np.random.default_rng(1)
        bwd = [np.full((4 * H, T, N), np.nan), rng.standard_normal((H, N)), rng.standard_normal((H, N)),
               fwd[0], fwd[4], rng.standard_normal((T, N, H)), fwd[2], fwd[6], False]
        bwd_out = (0, 1, 2)
    else:
        fwd_kernel, fwd, fwd_out, bwd_kernel, bwd, bwd_out = _cell_problem(cell, T, N, H, False, flag)
    reference = [a.copy() if isinstance(a, np.ndarray) else a for a in fwd]
    run = threaded_cuda(fwd_kernel, 1, threads, 1, H, 1, fwd + [H], True, False)
    assert run.races() == []
    threaded_cuda(fwd_kernel, 1, 1, 1, H, 1, reference + [H], True, False)
    for k in fwd_out:
        np.testing.assert_array_equal(fwd[k], reference[k])
    run = threaded_cuda(bwd_kernel, 1, threads, 1, H, 1, bwd + [H], True, False)
    assert run.races() == []
    for k in bwd_out:
        assert not np.isnan(bwd[k]).any()


def test_the_race_check_finds_a_missing_barrier_in_one_block(threaded_cuda, monkeypatch):
    T, N, H = 3, 3, 5
    fwd_kernel, fwd, _, _, _, _ = _cell_problem("rnn", T, N, H, False, False)
    monkeypatch.setattr(_Launch, "syncthreads", lambda self: None)
    run = threaded_cuda(fwd_kernel, 1, 4, 1, H, 1, fwd + [H], False, False)
    assert any(key[0] == "arg3" for key, _, _ in run.races())  # h read and written unordered


def _sampler_args(cell, reset_after, L=2, H=5, V=6, n=4, seed=0):
    rng = np.random.default_rng(seed)
    G = {0: 4, 1: 3, 2: 1}[cell]
    f = lambda *shape: (0.5 * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    GH = G * H
    return [f(V, GH), f(L, GH, H), f(L, GH, H), f(L, GH), f(L, GH), f(V, H), f(V), f(L, H), f(L, H),
            np.zeros((2, L, H), np.float32), np.zeros(V, np.float32), np.zeros(V, np.bool_), np.zeros(V),
            np.zeros(GH, np.float32), np.zeros(GH, np.float32), np.zeros((2, H), np.float32),
            np.zeros(1, np.int64), cell, reset_after, False, 0.9, 3, False, rng.random(n),
            np.zeros(n, np.int64)]


@pytest.mark.parametrize("cell,reset_after", [(0, True), (1, True), (1, False), (2, True)],
                         ids=["lstm", "gru", "gru-classic", "rnn"])
@pytest.mark.parametrize("nvb,threads,staged", [(3, 4, True), (4, 2, False)])
def test_sampler_on_many_blocks_has_no_races(threaded_cuda, cell, reset_after, nvb, threads, staged):
    L, H, V = 2, 5, 6
    G = {0: 4, 1: 3, 2: 1}[cell]
    on_grid, alone = _sampler_args(cell, reset_after), _sampler_args(cell, reset_after)
    kernel = sample._kernel(L, H, V, G, nvb, 1, staged, True)
    run = threaded_cuda.run_kernel(kernel, nvb, threads, on_grid)
    assert run.races() == []
    threaded_cuda.run_kernel(sample._kernel(L, H, V, G, nvb, nvb, staged, True), 1, 1, alone)
    for k in (7, 8, 24):  # h, c, out
        np.testing.assert_array_equal(on_grid[k], alone[k])
    assert len(set(on_grid[24].tolist())) > 1 or cell == 2  # tokens were drawn
