"""Fused recurrent kernels against the naive reference and central differences (float64)."""
import numpy as np
import pytest

from seqtool.diagnostics import reference, selfcheck
from seqtool.core.autograd import Tensor

CASES = [(name, cell, opts, rev, rag) for name, cell, opts in selfcheck.VARIANTS
         for rev in (False, True) for rag in (False, True)]


@pytest.mark.parametrize("name,cell,options,reverse,ragged", CASES,
                         ids=[f"{c[0]}-{'rev' if c[3] else 'fwd'}-{'ragged' if c[4] else 'full'}" for c in CASES])
def test_kernel_matches_reference_and_gradcheck(name, cell, options, reverse, ragged):
    forward_err, grad_err, ok = selfcheck.run_variant(cell, options, reverse, ragged, seed=hash(name) % 1000)
    assert forward_err < 1e-10
    assert grad_err < 1e-5
    assert ok


@pytest.mark.parametrize("cell,options", [("lstm", {}), ("gru", {"reset_after": True}),
                                          ("gru", {"reset_after": False}), ("rnn", {"relu": False}),
                                          ("rnn", {"relu": True})])
def test_float32_kernels_close_to_float64_reference(cell, options):
    # The float32 kernels use rational tanh/sigmoid; their error must stay at float32 rounding level.
    arrays, lengths = selfcheck.problem(cell, T=30, N=5, D=7, H=16, ragged=True, seed=3, dtype=np.float32)
    fn = selfcheck.layer_function(cell)
    outs = fn.apply(*[Tensor(a) for a in arrays.values()], lengths=lengths, reverse=False, **options)
    a64 = {k: v.astype(np.float64) for k, v in arrays.items()}
    y, h, _ = reference.layer(cell, a64["x"], a64["h0"], a64.get("c0"), a64["w_ih"], a64["w_hh"], a64["b_ih"],
                              a64["b_hh"], lengths, relu=options.get("relu", False),
                              reset_after=options.get("reset_after", True))
    assert outs[0].dtype == np.float32
    np.testing.assert_allclose(outs[0].data, y, rtol=0, atol=2e-5 * max(1.0, np.abs(y).max()))
    np.testing.assert_allclose(outs[1].data, h, rtol=0, atol=2e-5 * max(1.0, np.abs(h).max()))


def test_padding_outputs_are_zero_and_states_frozen():
    arrays, lengths = selfcheck.problem("lstm", T=6, N=3, D=2, H=4, ragged=True, seed=1)
    y, h_n, c_n = selfcheck.layer_function("lstm").apply(*[Tensor(a) for a in arrays.values()], lengths=lengths)
    for n, L in enumerate(lengths):
        assert np.all(y.data[L:, n] == 0.0)
        np.testing.assert_array_equal(h_n.data[n], y.data[L - 1, n])


def test_gradient_of_unused_outputs_is_fine():
    # Only h_n feeds the loss (many-to-one): the y and c_n gradients arrive as None.
    arrays, lengths = selfcheck.problem("lstm", ragged=True, seed=2)
    ts = [Tensor(a, requires_grad=True) for a in arrays.values()]
    _, h_n, _ = selfcheck.layer_function("lstm").apply(*ts, lengths=lengths)
    h_n.sum().backward()
    assert all(t.grad is not None and np.isfinite(t.grad).all() for t in ts)
    assert np.abs(ts[0].grad).sum() > 0


def _pair_problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    T, N, D, H = 7, 5, 3, 6
    arrays = {"x": rng.standard_normal((T, N, D)), "h0": rng.standard_normal((2, N, H)),
              "c0": rng.standard_normal((2, N, H)), "w_ih": rng.standard_normal((2, 4 * H, D)) * 0.5,
              "w_hh": rng.standard_normal((2, 4 * H, H)) * 0.5, "b": rng.standard_normal((2, 4 * H)),
              "dy": rng.standard_normal((T, N, 2 * H)), "dh_n": rng.standard_normal((2, N, H)),
              "dc_n": rng.standard_normal((2, N, H))}
    return {k: v.astype(dtype) for k, v in arrays.items()}, np.array([7, 3, 1, 5, 0], np.int64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lstm_pair_kernel_equals_the_two_directions_one_after_the_other(dtype):
    from seqtool.kernels import lstm, pairs

    a, lengths = _pair_problem(dtype)
    H = a["h0"].shape[2]
    y, h, c, gates = pairs.lstm_forward_pair(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b"], lengths, 2)
    grads = pairs.lstm_backward_pair(a["x"], a["w_ih"], a["w_hh"], h, c, gates, lengths, a["dy"], a["dh_n"],
                                         a["dc_n"], True, 2)
    dx_sum = 0
    for d in range(2):
        y1, h1, c1, g1 = lstm.lstm_forward(a["x"], a["h0"][d], a["c0"][d], a["w_ih"][d], a["w_hh"][d], a["b"][d],
                                           lengths, d == 1, 1)
        np.testing.assert_array_equal(y[:, :, d * H:(d + 1) * H], y1)
        np.testing.assert_array_equal(c[d], c1)
        single = lstm.lstm_backward(a["x"], a["w_ih"][d], a["w_hh"][d], h1, c1, g1, lengths, d == 1,
                                    np.ascontiguousarray(a["dy"][:, :, d * H:(d + 1) * H]), a["dh_n"][d],
                                    a["dc_n"][d], True, 1)
        dx_sum = dx_sum + single[0]
        for mine, theirs in zip(grads[1:], single[1:]):
            np.testing.assert_array_equal(mine[d], theirs)
    np.testing.assert_allclose(grads[0], dx_sum, rtol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("mode,options", [("lstm", {}), ("gru", {"reset_after": True}),
                                          ("gru", {"reset_after": False}), ("rnn", {"nonlinearity": "tanh"}),
                                          ("rnn", {"nonlinearity": "relu"})])
def test_bidirectional_layer_same_through_the_pair_kernels(monkeypatch, mode, options):
    # The layer must give the same outputs and gradients whichever path the rule picks.
    from seqtool import nn
    from seqtool.kernels import pairs

    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 4, 3))
    h0_c0 = [rng.standard_normal((4, 4, 5)) for _ in range(2 if mode == "lstm" else 1)]
    lengths = np.array([6, 2, 4, 1])
    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[mode]
    results, calls = [], []
    forward_pair = getattr(pairs, f"{mode}_forward_pair")
    monkeypatch.setattr(pairs, f"{mode}_forward_pair", lambda *a: calls.append(1) or forward_pair(*a))
    for paired in (False, True):
        monkeypatch.setattr(pairs, "pair_directions", lambda nthreads, paired=paired: paired)
        layer = cls(3, 5, num_layers=2, bidirectional=True, rng=np.random.default_rng(0), dtype=np.float64,
                    **options)
        xs, *states = (Tensor(a, requires_grad=True) for a in (x, *h0_c0))
        y, out = layer(xs, tuple(states) if mode == "lstm" else states[0], lengths=lengths)
        finals = list(out) if mode == "lstm" else [out]
        loss = y.sum()
        for k, s in enumerate(finals):
            loss = loss + (s * s * (k + 1.0)).sum()
        loss.backward()
        results.append([y.data] + [s.data for s in finals] + [xs.grad] + [s.grad for s in states]
                       + [p.grad for _, p in layer.named_parameters()])
    assert len(calls) == 2  # both layers of the paired run went through the pair kernel
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,K,C", [(24, 6, 16), (13, 5, 48), (7, 1, 16), (9, 300, 32), (1024, 256, 16),
                                      (13, 5, 40), (9, 300, 8), (7, 1, 24)])  # the last three end on a half tile
def test_panel_product_matches_numpy(dtype, rows, K, C):
    from seqtool.kernels.tiles import PANEL, natural_order, pack_panels, panel_matmul

    rng = np.random.default_rng(rows * K + C)
    w = rng.standard_normal((rows, K)).astype(dtype)
    src = rng.standard_normal((K, C)).astype(dtype)
    order = natural_order(rows)
    out = np.full((order.shape[0], C), np.nan, dtype)
    panel_matmul(pack_panels(w, order), src, out)
    expected = w.astype(np.float64) @ src.astype(np.float64)
    np.testing.assert_allclose(out[:rows], expected, rtol=0, atol=(2e-5 if dtype == np.float32 else 1e-12) * np.sqrt(K))
    assert out.shape[0] % PANEL == 0 and np.all(out[rows:] == 0.0)  # rows past the weight are zero


def _check_in_two_row_runs(product, a, b, expected, summed):
    """Rows of out from two panel runs (as two threads split them) against the float64 product."""
    from seqtool.kernels.tiles import panel_rows

    rows = expected.shape[0]
    out = np.full(expected.shape, np.nan, a.dtype)
    for k in range(2):
        lo, hi = panel_rows(k, 2, rows)
        product(a, b, out, lo, hi)
    atol = (2e-5 if a.dtype == np.float32 else 1e-12) * np.sqrt(max(summed, 1))
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,K,P", [(13, 300, 7), (24, 5, 40), (40, 520, 33), (64, 700, 16), (17, 0, 20)])
def test_weight_gradient_tiles_match_numpy_in_two_row_runs(dtype, rows, K, P):
    # K past one block of KC, columns past whole vectors, rows past whole panels, empty K.
    from seqtool.kernels.tiles import gemm_panels

    rng = np.random.default_rng(rows + K + P)
    a, b = rng.standard_normal((rows, K)).astype(dtype), rng.standard_normal((K, P)).astype(dtype)
    _check_in_two_row_runs(gemm_panels, a, b, a.astype(np.float64) @ b.astype(np.float64), K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("G,K,P", [(300, 13, 7), (5, 24, 40), (520, 43, 33), (64, 700, 16)])
def test_input_gradient_tiles_match_numpy_in_two_row_runs(dtype, G, K, P):
    # out = a.T @ b: G past one block, columns past whole vectors, rows past whole panels.
    from seqtool.kernels.tiles import gemm_tn_panels

    rng = np.random.default_rng(G + K + P)
    a, b = rng.standard_normal((G, K)).astype(dtype), rng.standard_normal((G, P)).astype(dtype)
    _check_in_two_row_runs(gemm_tn_panels, a, b, a.T.astype(np.float64) @ b.astype(np.float64), G)


_AVX2_CHECK = """
import numpy as np
from seqtool.diagnostics import selfcheck
from seqtool.kernels import tiles
assert tiles.PANEL == 4, tiles.PANEL
w = np.random.default_rng(0).standard_normal((13, 9)).astype(np.float32)
src = np.random.default_rng(1).standard_normal((9, 32)).astype(np.float32)
order = tiles.natural_order(13)
out = np.empty((order.shape[0], 32), np.float32)
tiles.panel_matmul(tiles.pack_panels(w, order), src, out)
assert np.abs(out[:13] - w @ src).max() < 1e-4
for name, cell, options in selfcheck.VARIANTS:
    fe, ge, ok = selfcheck.run_variant(cell, options, True, True, seed=1)
    assert ok and fe < 1e-10 and ge < 1e-5, (name, fe, ge)
print("avx2 ok")
"""


def test_kernels_compiled_for_avx2_use_smaller_panels_and_stay_exact(tmp_path):
    # Compiled for a CPU without AVX-512 (16 vector registers), the tiles take 4 weight rows,
    # and every kernel variant still matches the reference and the numeric gradients.
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CACHE_DIR": str(tmp_path),
           "NUMBA_NUM_THREADS": "2"}
    env.pop("NUMBA_CPU_FEATURES", None)
    proc = subprocess.run([sys.executable, "-c", _AVX2_CHECK], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "avx2 ok" in proc.stdout
