"""Every CUDA kernel compiles for a real GPU target (sm_90 PTX), no GPU needed.

The simulator runs the kernels as Python, so it cannot see what only the real compiler does:
typing on the CUDA target, float64 creeping into float32 kernels (a literal 0 or 1.0 is float64
in Numba), the cooperative grid sync of the persistent kernels. Here every launch the kernel
drivers make (lstm/gru/rnn, forward and backward, both directions, persistent on and off,
float32 and float64) is compiled to PTX with the argument types it would get, and not run.

Needs numba-cuda with NVVM and NVRTC (`pip install -e .[cuda-compile]`, or `.[cuda]`, which
brings them too); skipped without them and under the simulator.
"""
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("compiles for a real GPU target: not under the simulator", allow_module_level=True)
numba_cuda = pytest.importorskip("numba_cuda", reason="numba-cuda (pip install -e .[cuda-compile]) not installed")

import numba  # noqa: E402

from seqtool.kernels.cuda import toolchain  # noqa: E402

cuda = toolchain.import_numba_cuda()  # the way seqtool imports it (NumPy fixed up first)

CC = (9, 0)


def _compiler_works() -> bool:
    def double(a):
        a[0] = 2 * a[0]

    try:
        cuda.compile_ptx(double, (numba.typeof(np.zeros(1, np.float32)),), cc=CC)
        return True
    except Exception:  # no NVVM / NVRTC libraries
        return False


if not _compiler_works():
    pytest.skip("numba-cuda cannot compile here (NVVM/NVRTC missing)", allow_module_level=True)


class _Device:
    compute_capability = CC


@pytest.fixture
def compile_only(monkeypatch):
    """Launches compile to PTX (recorded by kernel name and argument types) instead of running."""
    from numba.cuda import dispatcher

    from seqtool.kernels.cuda import common, persistent

    monkeypatch.setattr(common, "cuda", lambda: cuda)  # no device: skip the availability check
    monkeypatch.setattr(common, "simulator", lambda: False)  # lay launches out as on a GPU
    monkeypatch.setattr(common, "array_module", lambda a: np)  # host arrays stand in for CuPy's
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Device())  # device functions ask it
    monkeypatch.setattr(persistent, "_sm_count", lambda: 132)
    compiled = {}

    def launch(config, *args):
        sig = tuple(numba.typeof(a) for a in args)
        key = (config.dispatcher.py_func.__name__, sig)
        if key not in compiled:
            compiled[key] = cuda.compile_ptx(config.dispatcher.py_func, sig, cc=CC)[0]

    monkeypatch.setattr(dispatcher._LaunchConfiguration, "__call__", launch)
    persistent._configured.cache_clear()
    yield compiled
    persistent._configured.cache_clear()  # configured for this fake device


def _drive(dtype, path, H=5):
    """Every kernel entry point once per direction, forward and backward, on `path`."""
    from seqtool.kernels.cuda import settings

    with settings.using(settings.Recurrence(path)):
        _drive_cells(dtype, H)


def _drive_cells(dtype, H):
    from seqtool.diagnostics import selfcheck
    from seqtool.kernels.cuda import gru, lstm, rnn

    T, N, D = 4, 3, 2
    for reverse in (False, True):
        for cell in ("lstm", "gru", "rnn"):
            a, lengths = selfcheck.problem(cell, ragged=True, seed=0, dtype=dtype, T=T, N=N, D=D, H=H)
            dy = np.ones((T, N, H), dtype)
            dh = np.ones((N, H), dtype)
            if cell == "lstm":
                y, h, c, g = lstm.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"],
                                               a["b_ih"] + a["b_hh"], lengths, reverse, 1)
                lstm.lstm_backward(a["x"], a["w_ih"], a["w_hh"], h, c, g, lengths, reverse, dy, dh, dh,
                                   True, 1)
            elif cell == "gru":
                for reset_after in (True, False):
                    y, h, g, hn = gru.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                                                  lengths, reverse, reset_after, 1)
                    gru.gru_backward(a["x"], a["w_ih"], a["w_hh"], h, g, hn, lengths, reverse, reset_after,
                                     dy, dh, True, 1)
            else:
                for relu in (False, True):
                    y, h, act = rnn.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"] + a["b_hh"],
                                                lengths, reverse, relu, 1)
                    rnn.rnn_backward(a["x"], a["w_ih"], a["w_hh"], h, act, lengths, reverse, relu, dy, dh, True, 1)


def _shared_bytes(ptx: str) -> int:
    """Static shared memory a PTX declares (`.shared .align A .b8 name[bytes];`)."""
    import re

    return sum(int(n) for n in re.findall(r"\.shared\s+\.align\s+\d+\s+\.b8\s+\S+?\[(\d+)\]", ptx))


PERSISTENT = {"lstm_persistent", "lstm_persistent_backward", "gru_persistent", "gru_persistent_backward",
              "rnn_persistent", "rnn_persistent_backward"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kernel_compiles_for_sm90(compile_only, monkeypatch, dtype):
    from seqtool.kernels.cuda import persistent

    staged = {}
    for path in ("steps", "grid", "block"):
        for smem in (persistent.SMEM_BYTES, 0):  # W_hh in shared memory, then from global memory
            monkeypatch.setattr(persistent, "SMEM_BYTES", smem)
            before = set(compile_only)
            _drive(dtype, path)
            for name, sig in set(compile_only) - before:
                staged.setdefault(name, set()).add(smem > 0)
    names = {name for name, _ in compile_only}
    assert {"forward_step", "backward_step", "forward_rz", "forward_n", "backward_a", "backward_r",
            "merge"} | PERSISTENT <= names, names
    for (name, sig), ptx in compile_only.items():
        assert ".entry" in ptx, name
        if dtype == np.float32:
            # float32 kernels stay in float32: no double arithmetic (a conversion of an integer
            # index or a loaded float64 would show up as .f64 too)
            assert ".f64" not in ptx, f"{name} {sig}: float64 arithmetic in a float32 kernel"


def test_persistent_layouts_compile_with_and_without_grid_sync_and_shared_memory(monkeypatch):
    # one PTX per layout: grid-wide (cooperative grid sync), one block (no grid sync), and the
    # weights staged in shared memory or read from global memory at a large H
    from seqtool.kernels.cuda import persistent

    ptx = {}

    def record(config, *args):
        fn = config.dispatcher.py_func
        sig = tuple(numba.typeof(a) for a in args)
        ptx[(fn.__name__, config.griddim[0] > 1)] = cuda.compile_ptx(fn, sig, cc=CC)[0]

    from numba.cuda import dispatcher

    from seqtool.kernels.cuda import common

    monkeypatch.setattr(common, "cuda", lambda: cuda)
    monkeypatch.setattr(common, "array_module", lambda a: np)
    monkeypatch.setattr(common, "simulator", lambda: False)
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Device())
    monkeypatch.setattr(persistent, "_sm_count", lambda: 4)
    monkeypatch.setattr(dispatcher._LaunchConfiguration, "__call__", record)
    persistent._configured.cache_clear()
    try:
        for path in ("grid", "block"):
            _drive(np.float32, path, H=5)
        assert {name for name, _ in ptx} == PERSISTENT
        for (name, grid_wide), text in ptx.items():
            assert ("cudaCGSynchronize" in text) == grid_wide, f"{name}: grid sync only in the grid layout"
            assert _shared_bytes(text) > 8, f"{name}: W_hh staged in shared memory at H=5"
        ptx.clear()
        _drive(np.float32, "grid", H=600)  # 150 units a block: W_hh cannot be staged
        for (name, _), text in ptx.items():
            assert _shared_bytes(text) <= 8, f"{name}: H=600 must read W_hh from global memory"
    finally:
        persistent._configured.cache_clear()


@pytest.mark.parametrize("cell", [0, 1, 2])
def test_sampling_kernel_compiles_for_sm90(compile_only, monkeypatch, cell):
    # the whole-text sampler: float32 state and gates, float64 only for the softmax weights; the
    # grid layout with the grid sync and rows in shared memory, the one-block layout without
    from numba.cuda import dispatcher

    from seqtool.kernels.cuda import sample, settings

    ptx = {}

    def record(config, *args):
        sig = tuple(numba.typeof(a) for a in args)
        ptx[config.griddim[0] > 1] = cuda.compile_ptx(config.dispatcher.py_func, sig, cc=CC)[0]

    monkeypatch.setattr(dispatcher._LaunchConfiguration, "__call__", record)
    L, H, V, E = 2, 5, 7, 3
    G = {0: 4, 1: 3, 2: 1}[cell]
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    weights = sample.pack(f32(V, E), [f32(G * H, E), f32(G * H, H)], [f32(G * H, H)] * L, [f32(G * H)] * L,
                          [f32(G * H)] * L, f32(V, H), f32(V))
    for path in ("grid", "block"):
        with settings.using(settings.Recurrence(path)):
            sample.sample_tokens(weights, cell, False, False, f32(L, H), f32(L, H), 0.8, 3, False, np.zeros(4),
                                 np.zeros(4, np.int64))
    assert sorted(ptx) == [False, True]
    for grid_wide, text in ptx.items():
        assert ".entry" in text
        assert ("cudaCGSynchronize" in text) == grid_wide
        assert _shared_bytes(text) > 8  # the tiny model's rows fit in shared memory
