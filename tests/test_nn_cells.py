"""seqtool.nn cells: one step of an LSTM/GRU/RNN layer (LSTMCellFn, GRUCellFn, cell_step), float64
gradchecks and torch.nn.LSTMCell / GRUCell / RNNCell parity (skipped without torch)."""

import numpy as np
import pytest

from seqtool.core.autograd import Tensor
from seqtool.diagnostics.gradcheck import gradcheck
from seqtool.nn import LSTM, GRUCellFn, LSTMCellFn, cell_step


def test_cell_ops_gradcheck():
    rng = np.random.default_rng(2)
    N, H = 3, 4
    ok, err, _ = gradcheck(lambda g, c: LSTMCellFn.apply(g, c),
                           [rng.standard_normal((N, 4 * H)), rng.standard_normal((N, H))])
    assert ok, err
    ok, err, _ = gradcheck(lambda gi, gh, h: GRUCellFn.apply(gi, gh, h),
                           [rng.standard_normal((N, 3 * H)), rng.standard_normal((N, 3 * H)),
                            rng.standard_normal((N, H))])
    assert ok, err


GATES = {"lstm": 4, "gru": 3, "rnn": 1}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_cell_step_gradcheck_inputs_state_and_weights(cell):
    rng = np.random.default_rng(3)
    N, D, H = 2, 3, 4
    x, h = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    weights = [rng.standard_normal((GATES[cell] * H, D)), rng.standard_normal((GATES[cell] * H, H)),
               rng.standard_normal(GATES[cell] * H), rng.standard_normal(GATES[cell] * H)]
    if cell == "lstm":
        def fn(x, h, c, *w):
            return cell_step(cell, x, (h, c), *w)[1]
        args = [x, h, rng.standard_normal((N, H)), *weights]
    else:
        def fn(x, h, *w):
            return cell_step(cell, x, h, *w)[0]
        args = [x, h, *weights]
    ok, err, details = gradcheck(fn, args)
    assert ok, [d for d in details if not d.get("ok", True)][:2]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cell_step_matches_torch_cells(cell, dtype):
    torch = pytest.importorskip("torch")
    N, D, H = 3, 5, 4
    theirs = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[cell](D, H)
    theirs = theirs.double() if dtype == np.float64 else theirs.float()
    rng = np.random.default_rng(4)
    x, h, c = (rng.standard_normal((N, n)).astype(dtype) for n in (D, H, H))
    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    ref = theirs(xt, (ht, ct)) if cell == "lstm" else theirs(xt, ht)
    ref_h = ref[0] if cell == "lstm" else ref
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    weights = [Tensor(getattr(theirs, n).detach().numpy(), requires_grad=True) for n in names]
    xs, hs, cs = (Tensor(a, requires_grad=True) for a in (x, h, c))
    out_h, state = cell_step(cell, xs, (hs, cs) if cell == "lstm" else hs, *weights)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(out_h.data, ref_h.detach().numpy(), **tol)
    proj = rng.standard_normal((N, H)).astype(dtype)
    loss_t = (ref_h * torch.tensor(proj)).sum()
    loss = (out_h * proj).sum()
    if cell == "lstm":  # the cell state feeds the next step too: check its gradient path
        np.testing.assert_allclose(state[1].data, ref[1].detach().numpy(), **tol)
        loss_t, loss = loss_t + (ref[1] * torch.tensor(proj)).sum(), loss + (state[1] * proj).sum()
    loss_t.backward()
    loss.backward()
    for ours, t in [(xs, xt), (hs, ht)] + ([(cs, ct)] if cell == "lstm" else []):
        np.testing.assert_allclose(ours.grad, t.grad.numpy(), **tol)
    for ours, n in zip(weights, names):
        np.testing.assert_allclose(ours.grad, getattr(theirs, n).grad.numpy(), **tol)


def test_lstm_steps_equal_the_whole_sequence_kernel():
    """cell_step with a layer's weights, step after step, gives the fused kernel's outputs."""
    T, N, D, H = 5, 3, 4, 6
    layer = LSTM(D, H, rng=np.random.default_rng(5), dtype=np.float64)
    x = np.random.default_rng(6).standard_normal((T, N, D))
    y, (h_n, c_n) = layer(x)
    state = (Tensor(np.zeros((N, H))), Tensor(np.zeros((N, H))))
    for t in range(T):
        h, state = cell_step("lstm", Tensor(x[t]), state, *layer._params(0, "", x.dtype))
        np.testing.assert_allclose(h.data, y.data[t], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state[1].data, c_n.data[0], rtol=1e-9, atol=1e-12)


def test_sigmoid_gates_saturate_without_warnings():
    """Gates of +-1000 (a saturated cell) give exact 0/1, no overflow warning, finite gradients."""
    gates = np.array([[1000.0, -1000.0, 1000.0, -1000.0]], dtype=np.float32)
    with np.errstate(all="raise"):
        g = Tensor(gates, requires_grad=True)
        h, c = LSTMCellFn.apply(g, Tensor(np.ones((1, 1), np.float32)))
        (h.sum() + c.sum()).backward()
    assert c.data.tolist() == [[1.0]] and h.data.tolist() == [[0.0]]  # i=1, f=0, g=1, o=0
    assert np.isfinite(g.grad).all()
    with np.errstate(all="raise"):
        z = GRUCellFn.apply(Tensor(np.full((1, 3), 1000.0)), Tensor(np.zeros((1, 3))),
                            Tensor(np.array([[0.5]])))
    assert z.data.tolist() == [[0.5]]  # z = 1 keeps the old state exactly
