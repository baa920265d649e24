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
from numba import cuda  # noqa: E402

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
    return compiled


def _drive(dtype, persistent_on):
    """Every kernel entry point once per direction, forward and backward."""
    from seqtool.diagnostics import selfcheck
    from seqtool.kernels.cuda import gru, lstm, persistent, rnn

    T, N, D, H = 4, 3, 2, 5
    for reverse in (False, True):
        for cell in ("lstm", "gru", "rnn"):
            a, lengths = selfcheck.problem(cell, ragged=True, seed=0, dtype=dtype, T=T, N=N, D=D, H=H)
            dy = np.ones((T, N, H), dtype)
            dh = np.ones((N, H), dtype)
            if cell == "lstm":
                with persistent.forced(persistent_on):
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kernel_compiles_for_sm90(compile_only, dtype):
    for persistent_on in (False, True):
        _drive(dtype, persistent_on)
    names = {name for name, _ in compile_only}
    assert {"forward_step", "backward_step", "forward_rz", "forward_n", "backward_a", "backward_r", "merge",
            "lstm_persistent", "lstm_persistent_backward"} <= names, names
    for (name, sig), ptx in compile_only.items():
        assert ".entry" in ptx, name
        if dtype == np.float32:
            # float32 kernels stay in float32: no double arithmetic (a conversion of an integer
            # index or a loaded float64 would show up as .f64 too)
            assert ".f64" not in ptx, f"{name} {sig}: float64 arithmetic in a float32 kernel"
        if name.startswith("lstm_persistent"):
            assert "cudaCGSynchronize" in ptx, f"{name}: no grid-wide sync"
