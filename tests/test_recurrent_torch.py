"""seqtool.nn.RNN/LSTM/GRU against torch.nn given the same weights (skipped without torch)."""
import numpy as np
import pytest

import seqtool.nn as nn
from seqtool.core.autograd import Tensor

torch = pytest.importorskip("torch")


def _pair(mode, D, H, layers, bidir, nonlinearity="tanh", dtype=np.float64):
    kw = {"nonlinearity": nonlinearity} if mode == "rnn" else {}
    ours = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[mode](
        D, H, num_layers=layers, bidirectional=bidir, rng=np.random.default_rng(0), dtype=dtype, **kw)
    theirs = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mode](
        D, H, num_layers=layers, bidirectional=bidir, **kw)
    theirs = theirs.double() if dtype == np.float64 else theirs.float()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("mode,nonlin", [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_with_ragged_lengths(mode, nonlin, layers, bidir, dtype):
    T, N, D, H = 7, 4, 5, 6
    ours, theirs = _pair(mode, D, H, layers, bidir, nonlin, dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    lengths = np.array([7, 3, 1, 5])
    dirs = 2 if bidir else 1
    h0 = rng.standard_normal((layers * dirs, N, H)).astype(dtype)
    c0 = rng.standard_normal((layers * dirs, N, H)).astype(dtype)
    dy = rng.standard_normal((T, N, H * dirs)).astype(dtype)
    dh = rng.standard_normal((layers * dirs, N, H)).astype(dtype)

    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out_p, state_t = theirs(packed, (h0t, c0t) if mode == "lstm" else h0t)
    yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, total_length=T)
    hnt = state_t[0] if mode == "lstm" else state_t
    ((yt * torch.tensor(dy)).sum() + (hnt * torch.tensor(dh)).sum()).backward()

    xs, h0s, c0s = (Tensor(a, requires_grad=True) for a in (x, h0, c0))
    y, state = ours(xs, (h0s, c0s) if mode == "lstm" else h0s, lengths=lengths)
    hn = state[0] if mode == "lstm" else state
    ((y * Tensor(dy)).sum() + (hn * Tensor(dh)).sum()).backward()

    tol = dict(rtol=1e-6, atol=1e-9) if dtype == np.float64 else dict(rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(hn.data, hnt.detach().numpy(), **tol)
    np.testing.assert_allclose(xs.grad, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(h0s.grad, h0t.grad.numpy(), **tol)
    if mode == "lstm":
        np.testing.assert_allclose(state[1].data, state_t[1].detach().numpy(), **tol)
        np.testing.assert_allclose(c0s.grad, c0t.grad.numpy(), **tol)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        g = grads[name].grad.numpy()
        scale = max(1.0, np.abs(g).max())
        np.testing.assert_allclose(p.grad, g, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=name)


def test_batch_first_and_state_dict_roundtrip():
    ours, theirs = _pair("gru", 3, 4, 2, True)
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    bf = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64)
    bf.load_state_dict(ours.state_dict())
    y_bf, _ = bf(Tensor(x))
    y_tm, _ = ours(Tensor(x.transpose(1, 0, 2)))
    np.testing.assert_allclose(y_bf.data, y_tm.data.transpose(1, 0, 2), rtol=1e-12)
    assert list(ours.state_dict()) == list(theirs.state_dict())
