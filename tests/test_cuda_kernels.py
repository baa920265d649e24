"""CUDA kernels (seqtool.kernels.cuda) under the CUDA simulator, against the naive reference
and the CPU kernels: the GPU suite is the CPU suite with the kernel module swapped.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, and the main pytest pass imports
numba without it, so these tests run in a second pass:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/test_cuda_kernels.py

In the main pass they skip, except the checks that a CPU-only machine must pass (import
without CuPy or a GPU, and the clear error when a kernel is called). Tiny thread blocks and
tiny shapes: the simulator runs every thread as a Python thread.
"""
import os

import numpy as np
import pytest

from seqtool.diagnostics import reference, selfcheck
from seqtool import kernels as cpu
from seqtool.errors import SeqtoolError
from seqtool.kernels import blas, cuda as gpu
from seqtool.kernels.cuda import common, persistent, settings

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
needs_sim = pytest.mark.skipif(
    not SIM, reason="simulator pass: NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_kernels.py")

T, N, D, H = 4, 3, 2, 3
CASES = [(name, cell, opts, rev, rag) for name, cell, opts in selfcheck.VARIANTS
         for rev in (False, True) for rag in (False, True)]
CPU_SLABS = {"lstm": (3,), "gru": (2, 3), "rnn": (2,)}  # which saved arrays are (B, T, rows, C) slabs
IDS = [f"{c[0]}-{'rev' if c[3] else 'fwd'}-{'ragged' if c[4] else 'full'}" for c in CASES]


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch):
    # 4 threads per block: N*H = 12 (j, n) pairs span several blocks and a partial one.
    monkeypatch.setattr(common, "BLOCK", 4)
    monkeypatch.setattr(persistent, "THREADS", 4)
    monkeypatch.setattr(persistent, "VIRTUAL_BLOCKS", 2)


def mode(name):
    """The settings for one recurrence path: "grid" (the persistent kernel on NVB virtual
    blocks), "block" (one block, no grid sync), "steps" (the per-step kernels)."""
    return settings.using(settings.Recurrence(name))


def make(cell, ragged=True, seed=0, dtype=np.float64, **shape):
    size = dict(T=T, N=N, D=D, H=H) | shape
    arrays, lengths = selfcheck.problem(cell, ragged=ragged, seed=seed, dtype=dtype, **size)
    return arrays, lengths


def forward(K, cell, a, lengths, reverse, opts):
    """The kernel forward of module set K (cpu or gpu) -> its whole return tuple."""
    if cell == "lstm":
        return K.lstm.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"] + a["b_hh"],
                                   lengths, reverse, 1)
    if cell == "gru":
        return K.gru.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], lengths,
                                 reverse, opts["reset_after"], 1)
    return K.rnn.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"] + a["b_hh"], lengths,
                             reverse, opts["relu"], 1)


def backward(K, cell, a, lengths, reverse, opts, saved, dy, dh_n, dc_n):
    """The kernel backward of K on its own forward's saved arrays -> gradient tuple."""
    if cell == "lstm":
        _, h, c, gates = saved
        return K.lstm.lstm_backward(a["x"], a["w_ih"], a["w_hh"], h, c, gates, lengths, reverse, dy, dh_n,
                                    dc_n, True, 1)
    if cell == "gru":
        _, h, gates, hn = saved
        return K.gru.gru_backward(a["x"], a["w_ih"], a["w_hh"], h, gates, hn, lengths, reverse,
                                  opts["reset_after"], dy, dh_n, True, 1)
    _, h, act = saved
    return K.rnn.rnn_backward(a["x"], a["w_ih"], a["w_hh"], h, act, lengths, reverse, opts["relu"], dy,
                              dh_n, True, 1)


def finals(cell, saved, reverse):
    """(y, h_n, c_n or None) the way nn.recurrent reads them off the saved chains."""
    end = 0 if reverse else saved[0].shape[0]
    c_n = saved[2][end].T if cell == "lstm" else None  # c is stored (T+1, H, N)
    return saved[0], saved[1][end], c_n


def upstream(cell, a, seed):
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(a["x"].shape[:2] + (a["h0"].shape[1],)).astype(a["x"].dtype)
    dh_n = rng.standard_normal(a["h0"].shape).astype(a["x"].dtype)
    dc_n = rng.standard_normal(a["h0"].shape).astype(a["x"].dtype)
    return dy, dh_n, dc_n


def valid_mask(lengths, steps, reverse):
    """(T, N) True where step t of example n is inside its sequence."""
    return np.arange(steps)[:, None] < lengths[None, :]


# --- main pass (no simulator): what a CPU-only install must do -------------------------------


def test_package_imports_without_cupy_or_gpu():
    assert gpu.num_threads() == 1
    for name in ("lstm", "gru", "rnn"):
        mod = getattr(gpu, name)
        assert callable(getattr(mod, f"{name}_forward")) and callable(getattr(mod, f"{name}_backward"))


@pytest.mark.skipif(SIM, reason="the simulator counts as a device")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_kernels_without_a_device_raise_a_clear_error(cell):
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    a, lengths = make(cell)
    with pytest.raises(SeqtoolError, match="no CUDA GPU found; use --device cpu"):
        forward(gpu, cell, a, lengths, False, {"reset_after": True, "relu": False})


# --- simulator pass ---------------------------------------------------------------------------


@needs_sim
@pytest.mark.parametrize("name,cell,opts,reverse,ragged", CASES, ids=IDS)
def test_forward_matches_naive_reference(name, cell, opts, reverse, ragged):
    a, lengths = make(cell, ragged, seed=1)
    saved = forward(gpu, cell, a, lengths, reverse, opts)
    y, h_n, c_n = finals(cell, saved, reverse)
    y_ref, h_ref, c_ref = reference.layer(cell, a["x"], a["h0"], a.get("c0"), a["w_ih"], a["w_hh"], a["b_ih"],
                                          a["b_hh"], lengths, reverse=reverse, relu=opts.get("relu", False),
                                          reset_after=opts.get("reset_after", True))
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=0, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, c_ref, rtol=0, atol=1e-12)
    if ragged:
        assert np.all(y[~valid_mask(lengths, T, reverse)] == 0.0)  # outputs zero past the end


@needs_sim
@pytest.mark.parametrize("name,cell,opts,reverse,ragged", CASES, ids=IDS)
def test_saved_arrays_and_gradients_match_cpu_kernels(name, cell, opts, reverse, ragged):
    # The same values, and every gradient equal to the CPU kernels' in float64. y and the state
    # chains keep the CPU kernels' layouts (the autograd Functions index them); the saved
    # activations are each backend's own, so the CPU's per-block slabs are compared gate-major.
    a, lengths = make(cell, ragged, seed=2)
    s_gpu = forward(gpu, cell, a, lengths, reverse, opts)
    s_cpu = forward(cpu, cell, a, lengths, reverse, opts)
    as_gpu = [blas.gate_major(s, N) if k in CPU_SLABS[cell] else s for k, s in enumerate(s_cpu)]
    assert [s.shape for s in s_gpu] == [s.shape for s in as_gpu]
    assert all(s.dtype == np.float64 for s in s_gpu)
    for k, (g, c) in enumerate(zip(s_gpu, as_gpu)):
        if cell == "gru" and k == 3:  # hn: only read on valid steps, left unspecified on padding
            keep = valid_mask(lengths, T, reverse)[None]
            g, c = np.where(keep, g, 0.0), np.where(keep, c, 0.0)
        np.testing.assert_allclose(g, c, rtol=0, atol=1e-12, err_msg=f"saved array {k}")
    dy, dh_n, dc_n = upstream(cell, a, seed=3)
    d_gpu = backward(gpu, cell, a, lengths, reverse, opts, s_gpu, dy, dh_n, dc_n)
    d_cpu = backward(cpu, cell, a, lengths, reverse, opts, s_cpu, dy, dh_n, dc_n)
    assert [d.shape for d in d_gpu] == [d.shape for d in d_cpu]
    for k, (g, c) in enumerate(zip(d_gpu, d_cpu)):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12, err_msg=f"gradient {k}")


@needs_sim
@pytest.mark.parametrize("name,cell,opts,reverse,ragged", CASES, ids=IDS)
def test_gradients_match_central_differences(name, cell, opts, reverse, ragged):
    # Independent of the CPU kernels: along a random direction v of every input, the CUDA
    # backward's <grad, v> equals the central difference of the CUDA forward's loss.
    a, lengths = make(cell, ragged, seed=4)
    dy, dh_n, dc_n = upstream(cell, a, seed=5)

    def loss(arrs):
        y, h_n, c_n = finals(cell, forward(gpu, cell, arrs, lengths, reverse, opts), reverse)
        return float((y * dy).sum() + (h_n * dh_n).sum() + ((c_n * dc_n).sum() if cell == "lstm" else 0.0))

    grads = backward(gpu, cell, a, lengths, reverse, opts, forward(gpu, cell, a, lengths, reverse, opts),
                     dy, dh_n, dc_n)
    if cell == "lstm":
        dx, dh0, dc0, dw_ih, dw_hh, db = grads
        g = {"x": dx, "h0": dh0, "c0": dc0, "w_ih": dw_ih, "w_hh": dw_hh, "b_ih": db, "b_hh": db}
    elif cell == "gru":
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = grads
        g = {"x": dx, "h0": dh0, "w_ih": dw_ih, "w_hh": dw_hh, "b_ih": db_ih, "b_hh": db_hh}
    else:
        dx, dh0, dw_ih, dw_hh, db = grads
        g = {"x": dx, "h0": dh0, "w_ih": dw_ih, "w_hh": dw_hh, "b_ih": db, "b_hh": db}
    rng = np.random.default_rng(6)
    for name_v in a:  # one direction per input, so a wrong gradient is named
        v = rng.standard_normal(a[name_v].shape)
        eps = 1e-6
        plus = {**a, name_v: a[name_v] + eps * v}
        minus = {**a, name_v: a[name_v] - eps * v}
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        analytic = float((g[name_v] * v).sum())
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (name_v, numeric, analytic)


@needs_sim
@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {"reset_after": True}),
                                       ("gru", {"reset_after": False}), ("rnn", {"relu": False}),
                                       ("rnn", {"relu": True})])
@pytest.mark.parametrize("path", ["steps", "grid", "block"])
def test_float32_close_to_float64_reference(cell, opts, path):
    a, lengths = make(cell, ragged=True, seed=7, dtype=np.float32, D=3, H=4)
    with mode(path):
        saved = forward(gpu, cell, a, lengths, False, opts)
    assert all(s.dtype == np.float32 for s in saved)
    y, h_n, c_n = finals(cell, saved, False)
    a64 = {k: v.astype(np.float64) for k, v in a.items()}
    y_ref, h_ref, c_ref = reference.layer(cell, a64["x"], a64["h0"], a64.get("c0"), a64["w_ih"], a64["w_hh"],
                                          a64["b_ih"], a64["b_hh"], lengths, relu=opts.get("relu", False),
                                          reset_after=opts.get("reset_after", True))
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-5 * max(1.0, np.abs(y_ref).max()))
    np.testing.assert_allclose(h_n, h_ref, rtol=0, atol=2e-5 * max(1.0, np.abs(h_ref).max()))
    dy, dh_n, dc_n = upstream(cell, a, seed=8)
    with mode(path):
        d32 = backward(gpu, cell, a, lengths, False, opts, saved, dy, dh_n, dc_n)
    s64 = forward(cpu, cell, a64, lengths, False, opts)
    d64 = backward(cpu, cell, a64, lengths, False, opts, s64, *(u.astype(np.float64) for u in (dy, dh_n, dc_n)))
    for k, (g, c) in enumerate(zip(d32, d64)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, c, rtol=0, atol=1e-4 * max(1.0, np.abs(c).max()), err_msg=f"gradient {k}")


VARIANT_IDS = [v[0] for v in selfcheck.VARIANTS]


@needs_sim
@pytest.mark.parametrize("name,cell,opts", selfcheck.VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("blocks,threads,hidden,staged", [(1, 4, 4, True), (2, 4, 5, False), (3, 2, 4, True),
                                                          (4, 8, 5, True), (5, 3, 5, False)])
def test_persistent_matches_per_step(monkeypatch, name, cell, opts, dtype, reverse, blocks, threads, hidden,
                                     staged):
    # the units dealt to 1-5 blocks (unevenly for H=5: the last block owns fewer), fewer
    # threads than units x rows (each thread loops over several), ragged lengths, W_hh staged
    # in shared memory or read from global memory; then the one-block layout
    monkeypatch.setattr(persistent, "VIRTUAL_BLOCKS", blocks)
    monkeypatch.setattr(persistent, "THREADS", threads)
    if not staged:
        monkeypatch.setattr(persistent, "SMEM_BYTES", 0)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    _, nvb, ub, vpb = persistent.plan(hidden)
    assert nvb == min(blocks, hidden) and persistent.fits(G, hidden, ub, vpb, dtype) == staged
    a, lengths = make(cell, ragged=True, seed=9, dtype=dtype, H=hidden)
    dy, dh_n, dc_n = upstream(cell, a, seed=10)
    given = [u.copy() for u in (dy, dh_n, dc_n)]
    with mode("steps"):
        per_step = forward(gpu, cell, a, lengths, reverse, opts)
        d_s = backward(gpu, cell, a, lengths, reverse, opts, per_step, dy, dh_n, dc_n)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for path in ("grid", "block"):
        with mode(path):
            one = forward(gpu, cell, a, lengths, reverse, opts)
            d_p = backward(gpu, cell, a, lengths, reverse, opts, one, dy, dh_n, dc_n)
        for k, (p, s) in enumerate(zip(one, per_step)):
            assert p.shape == s.shape and p.dtype == s.dtype
            if cell == "gru" and k == 3:  # hn: unspecified on padding
                keep = valid_mask(lengths, p.shape[1], reverse)[None]
                p, s = np.where(keep, p, 0), np.where(keep, s, 0)
            np.testing.assert_allclose(p, s, rtol=0, atol=tol, err_msg=f"{path} output {k}")
        for u, g in zip((dy, dh_n, dc_n), given):  # upstream gradients are inputs, left untouched
            np.testing.assert_array_equal(u, g)
        for k, (p, s) in enumerate(zip(d_p, d_s)):
            assert p.shape == s.shape and p.dtype == s.dtype
            np.testing.assert_allclose(p, s, rtol=0, atol=100 * tol, err_msg=f"{path} gradient {k}")


@needs_sim
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("path", ["steps", "grid"])
def test_backward_leaves_upstream_gradients_alone_with_one_row(cell, path):
    # With N = 1, dh_n.T is already contiguous; the kernels must still work on a copy.
    opts = {"reset_after": True, "relu": False}
    a, lengths = make(cell, ragged=False, seed=12, N=1)
    with mode(path):
        saved = forward(gpu, cell, a, lengths, False, opts)
        dy, dh_n, dc_n = upstream(cell, a, seed=13)
        given = [u.copy() for u in (dy, dh_n, dc_n)]
        grads = backward(gpu, cell, a, lengths, False, opts, saved, dy, dh_n, dc_n)
    for u, g in zip((dy, dh_n, dc_n), given):
        np.testing.assert_array_equal(u, g)
    assert not np.allclose(grads[1], dh_n)  # dh0 is a new array, not the upstream one changed


def test_persistent_units_are_dealt_to_blocks_once_each():
    # the partition the kernels use, for a GPU's one virtual block per block and for the
    # simulator's single block hosting them all: every unit has exactly one owner
    for H in (1, 5, 64, 100, 256):
        for nvb in {1, 2, 7, min(H, 132), H}:
            ub = -(-H // nvb)
            for grid_blocks in {1, nvb}:
                vpb = -(-nvb // grid_blocks)
                owned = [persistent.unit_of(blk, grid_blocks, lv, u, nvb)
                         for blk in range(grid_blocks) for lv in range(vpb) for u in range(ub)]
                units = sorted(j for vb, j in owned if vb < nvb and j < H)
                assert units == list(range(H)), (H, nvb, grid_blocks)


def test_persistent_plan_on_a_gpu(monkeypatch):
    monkeypatch.setattr(common, "simulator", lambda: False)
    monkeypatch.setattr(persistent, "_sm_count", lambda: 132)
    monkeypatch.setattr(persistent, "THREADS", 256)
    assert persistent.plan(128) == (128, 128, 1, 1)  # one unit per block
    assert persistent.plan(256) == (128, 128, 2, 1)  # two units each, 128 of 132 SMs
    assert persistent.plan(200) == (100, 100, 2, 1)
    assert persistent.plan(1024) == (128, 128, 8, 1)
    assert persistent.plan(1024, grid_wide=False) == (1, 1, 1024, 1)  # one block owns every unit
    assert persistent.fits(4, 256, 2, 1, np.float64) and persistent.fits(4, 256, 2, 1, np.float32)
    # large H: W_hh does not fit in shared memory and is read from global memory, still one launch
    assert persistent.layout(4, 1024, 64, np.float32, True) == (128, 256, 128, 8, 1, False)
    assert persistent.layout(4, 512, 32, np.float32, True) == (128, 128, 128, 4, 1, True)
    assert persistent.layout(3, 1024, 8, np.float64, True) == (128, 64, 128, 8, 1, False)
    monkeypatch.setattr(persistent, "_sm_count", lambda: 20)  # a small GPU: 13 units a block
    assert persistent.plan(256) == (20, 20, 13, 1)
    assert persistent.fits(4, 256, 13, 1, np.float32) is False  # 4 * 13 * 257 * 4 B > 48 KiB


def test_settings_take_known_modes_and_nest():
    assert settings.current() == settings.Recurrence("auto")
    with mode("steps"):
        assert not settings.current().whole_sequence
        with mode("block"):
            assert settings.current().mode == "block" and settings.current().whole_sequence
        assert settings.current().mode == "steps"
    assert settings.current().mode == "auto"
    with pytest.raises(ValueError, match="unknown recurrence mode 'on'"):
        settings.Recurrence("on")


def test_refused_cooperative_launch_falls_back_to_one_block(monkeypatch):
    # "auto": a device refusing the cooperative launch gets the one-block kernel, remembered
    # per shape; "grid" passes the refusal on; other errors are never swallowed
    launches = []

    def fake_launch(builder, G, dtype, H, N, args, grid_wide):
        launches.append(grid_wide)
        if grid_wide:
            raise RuntimeError("cooperative launch too large")

    def builder():
        raise AssertionError("not built")

    monkeypatch.setattr(persistent, "_launch", fake_launch)
    monkeypatch.setattr(persistent, "REFUSED", set())
    monkeypatch.setattr(persistent, "_refused", lambda err: "cooperative" in str(err))
    with pytest.warns(RuntimeWarning, match="cooperative launch refused here"):
        persistent.launch(builder, 4, np.float32, 8, 2, ())
    assert launches == [True, False]
    persistent.launch(builder, 4, np.float32, 8, 2, ())  # remembered: straight to one block
    assert launches == [True, False, False]
    with mode("grid"), pytest.raises(RuntimeError, match="cooperative"):
        persistent.launch(builder, 4, np.float32, 8, 2, ())
    monkeypatch.setattr(persistent, "_refused", lambda err: False)
    with pytest.raises(RuntimeError):
        persistent.launch(builder, 4, np.float32, 16, 2, ())


@needs_sim
@pytest.mark.parametrize("name,cell,opts", selfcheck.VARIANTS, ids=[v[0] for v in selfcheck.VARIANTS])
def test_layer_function_gradcheck_on_cuda_kernels(monkeypatch, name, cell, opts):
    # The autograd Functions of nn.recurrent on the CUDA kernels (as for CuPy arrays), checked
    # by `seqtool check`'s own routine: naive reference + central differences on every input.
    from seqtool.nn import recurrent

    monkeypatch.setattr(recurrent, "_kernels", lambda array: gpu)
    forward_err, grad_err, ok = selfcheck.run_variant(cell, opts, reverse=name != "lstm", ragged=True, seed=11)
    assert forward_err < 1e-10
    assert grad_err < 1e-5
    assert ok


@pytest.fixture
def launches(monkeypatch):
    """Counts kernel launches from the host (the simulator's kernel calls outside a kernel)."""
    from numba.cuda.simulator import kernel as sim_kernel

    count = [0]
    real = sim_kernel.FakeCUDAKernel.__call__

    def counted(self, *args):
        if not self._device and not sim_kernel._kernel_context:
            count[0] += 1
        return real(self, *args)

    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__call__", counted)
    return count


def _launches_per_step(launches, cell, T, **options):
    """Kernel launches of one training step (forward, backward, SGD) of a 2-layer stack."""
    from seqtool import device
    from seqtool.diagnostics.bench import BenchConfig, seqtool_step

    cfg = BenchConfig(cell=cell, hidden=3, batch=2, seq_len=T, input_size=2, layers=2, steps=1, warmup=0,
                      **options)
    device.use("cuda")
    try:
        step, _ = seqtool_step(cfg, device="cuda")
        before = launches[0]
        step()
        return launches[0] - before
    finally:
        device.use("cpu")


@needs_sim
@pytest.mark.parametrize("cell,options", [("lstm", {}), ("gru", {}), ("gru", {"gru_form": "classic"}),
                                          ("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
                                          ("lstm", {"bidirectional": True})],
                         ids=["lstm", "gru", "gru-classic", "rnn-tanh", "rnn-relu", "bilstm"])
def test_launches_per_training_step_do_not_grow_with_time(launches, cell, options):
    # one launch per layer, direction and pass: 2 layers x dirs x (forward, backward)
    dirs = 2 if options.get("bidirectional") else 1
    short = _launches_per_step(launches, cell, 3, **options)
    long = _launches_per_step(launches, cell, 7, **options)
    assert short == long == 2 * 2 * dirs
    with mode("steps"):  # the per-step kernels: the count the test guards against
        assert _launches_per_step(launches, cell, 7, **options) > _launches_per_step(launches, cell, 3, **options)


def test_pretyped_launch_types_once_per_argument_layout():
    # on a GPU every launch but the first of a layout skips Numba's argument typing and goes to
    # the compiled kernel; a new layout (here a non-contiguous array: Numba's 'A' layout, a
    # different compiled kernel) goes through the dispatcher again, never to the wrong kernel
    calls = []

    class Kernel:
        def __init__(self, name):
            self.name = name

        def launch(self, args, griddim, blockdim, stream, sharedmem):
            calls.append(("direct", self.name, griddim, blockdim))

    class Config:
        griddim, blockdim, stream, sharedmem = (3, 1, 1), (4, 1, 1), 0, 0

        def __call__(self, *args):
            calls.append(("dispatcher",))

    class Dispatcher:
        overloads = {}

        def __getitem__(self, config):
            assert config == (3, 4)
            return Config()

        def typeof_pyval(self, a):
            return (a.dtype.str, a.flags.c_contiguous) if hasattr(a, "flags") else type(a)

    d = Dispatcher()
    d.overloads = {(("<f8", True), bool): Kernel("C"), (("<f8", False), bool): Kernel("A")}
    launch = common.PretypedLaunch(d, 3, 4)
    a = np.zeros((4, 5))
    launch(a, True)
    launch(a + 1, False)
    launch(a[:, :2], True)
    launch(a[:, :3], True)
    assert calls == [("dispatcher",), ("direct", "C", (3, 1, 1), (4, 1, 1)), ("dispatcher",),
                     ("direct", "A", (3, 1, 1), (4, 1, 1))]
    calls.clear()
    launch(a.astype(np.float32), True)  # another dtype: not compiled by this dispatcher
    launch(a.astype(np.float32), True)
    assert calls == [("dispatcher",), ("dispatcher",)]


def test_refusals_are_recognised_whatever_raises_them():
    class CUDAError(Exception):  # cuda.core's launch error, as numba-cuda may pass it on
        pass

    assert persistent._refused(CUDAError("CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE: too many blocks"))
    assert not persistent._refused(ValueError("index out of range"))
