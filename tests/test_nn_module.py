"""Module registration, naming, state_dict, train/eval, and the basic layers and initialisers."""

import numpy as np
import pytest

import seqtool
from seqtool import nn
from seqtool.errors import SeqtoolError
from seqtool.diagnostics.gradcheck import gradcheck


class Net(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.embed = nn.Embedding(7, 4, padding_idx=0, rng=rng)
        self.scale = nn.Parameter(np.ones(4, dtype=np.float32))
        self.layers = nn.ModuleList([nn.Linear(4, 5, rng=rng), nn.Linear(5, 3, bias=False, rng=rng)])
        self.drop = nn.Dropout(0.5, rng=rng)
        self.tied = self.layers[0]  # the same module twice: its parameters are listed once

    def forward(self, idx):
        h = self.embed(idx) * self.scale
        h = self.drop(self.layers[0](h).tanh())
        return self.layers[1](h)


def test_parameter_names_and_order():
    net = Net(np.random.default_rng(0))
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "embed.weight", "layers.0.weight", "layers.0.bias", "layers.1.weight"]
    assert [p.shape for p in net.parameters()] == [(4,), (7, 4), (5, 4), (5,), (3, 5)]
    assert sum(1 for _ in net.modules()) == 6  # net, embed, layers, two Linear, drop
    assert net.layers[1].bias is None


def test_registration_rules():
    class NoInit(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="super"):
        NoInit()
    lin = nn.Linear(2, 2)
    with pytest.raises(TypeError):
        lin.weight = np.ones((2, 2))  # a plain array would silently drop out of parameters()
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]


def test_state_dict_round_trip_reproduces_outputs():
    idx = np.array([[1, 2, 0], [6, 5, 4]])
    a, b = Net(np.random.default_rng(1)).eval(), Net(np.random.default_rng(2)).eval()
    assert not np.allclose(a(idx).data, b(idx).data)
    sd = a.state_dict()
    assert list(sd) == [n for n, _ in a.named_parameters()]
    sd["scale"][0] = 99  # a copy: changing it leaves the model alone
    assert a.scale.data[0] == 1
    sd = a.state_dict()
    before = b.scale
    b.load_state_dict({k: v.astype(np.float64) for k, v in sd.items()})
    assert b.scale is before and b.scale.dtype == np.float32  # in place, cast to the parameter dtype
    np.testing.assert_array_equal(a(idx).data, b(idx).data)


def test_load_state_dict_errors_name_the_key():
    net = Net(np.random.default_rng(3))
    good = net.state_dict()
    cases = [
        ({k: v for k, v in good.items() if k != "layers.0.bias"}, "layers.0.bias"),
        ({**good, "extra.weight": np.zeros(1)}, "extra.weight"),
        ({**good, "embed.weight": np.zeros((7, 5))}, "embed.weight"),
    ]
    for sd, key in cases:
        old = net.state_dict()
        sd = {k: (v + 1 if k != key else v) for k, v in sd.items()}  # other keys would change
        with pytest.raises(SeqtoolError, match=key.replace(".", r"\.")) as err:
            net.load_state_dict(sd)
        assert "\n" not in str(err.value)
        for k, v in net.state_dict().items():
            np.testing.assert_array_equal(v, old[k])  # a failed load changes nothing
    missing, unexpected = net.load_state_dict({"scale": np.full(4, 2.0), "bogus": np.zeros(1)}, strict=False)
    assert "embed.weight" in missing and unexpected == ["bogus"]
    np.testing.assert_array_equal(net.scale.data, 2.0)


def test_train_eval_toggles_dropout_recursively():
    net = Net(np.random.default_rng(4))
    x = seqtool.tensor(np.ones((50, 40), dtype=np.float32))
    assert net.training and net.drop.training
    y = net.drop(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    assert net.eval() is net and not net.drop.training and not net.layers[0].training
    np.testing.assert_array_equal(net.drop(x).data, x.data)
    net.train()
    assert net.drop.training
    assert (net.drop(x).data == 0).any()


def test_zero_grad_and_float64_gradcheck_of_a_module():
    net = Net(np.random.default_rng(5)).eval().to_dtype(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    params = list(net.parameters())
    # no padding index here: its row is used in forward but, as in torch, gets no gradient
    ok, _, details = gradcheck(lambda *ps: net(np.array([[1, 2, 5], [3, 3, 6]])), params)
    assert ok, details
    net(np.array([[1, 0], [0, 2]])).sum().backward()
    assert net.embed.weight.grad is not None
    np.testing.assert_array_equal(net.embed.weight.grad[0], 0)  # padding row gets no gradient
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_linear_matches_torch_and_init_bounds():
    torch = pytest.importorskip("torch")
    lin = nn.Linear(16, 8, rng=np.random.default_rng(6))
    assert lin.weight.dtype == np.float32 and lin.weight.shape == (8, 16)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.data).max() <= 0.25 and np.abs(p.data).max() > 0.2  # U(-1/sqrt(16), 1/sqrt(16))
    ref = torch.nn.Linear(16, 8)
    ref.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    x = np.random.default_rng(7).standard_normal((2, 3, 16)).astype(np.float32)
    np.testing.assert_allclose(lin(x).data, ref(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    same = nn.Linear(16, 8, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(same.weight.data, lin.weight.data)


def test_embedding_init():
    emb = nn.Embedding(400, 50, padding_idx=-1, rng=np.random.default_rng(8))
    assert emb.padding_idx == 399
    np.testing.assert_array_equal(emb.weight.data[399], 0)
    w = emb.weight.data[:399]
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1), 19950 draws


def test_init_functions():
    rng = np.random.default_rng(9)
    for shape in [(6, 6), (8, 3), (3, 8), (4, 2, 3)]:
        a = nn.init.orthogonal_(np.empty(shape, dtype=np.float32), gain=2.0, rng=rng)
        m = a.reshape(shape[0], -1).astype(np.float64) / 2
        small = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.testing.assert_allclose(small, np.eye(min(m.shape)), atol=1e-5)
        assert a.dtype == np.float32
    a = nn.init.orthogonal_(np.empty((5, 5)), rng=np.random.default_rng(1))
    b = nn.init.orthogonal_(np.empty((5, 5)), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(nn.init.identity_(np.empty((3, 4)), 0.5), 0.5 * np.eye(3, 4))
    x = nn.init.xavier_uniform_(np.empty((30, 20)), rng=rng)
    bound = np.sqrt(6 / 50)
    assert np.abs(x).max() <= bound and np.abs(x).max() > 0.9 * bound
    np.testing.assert_array_equal(nn.init.zeros_(np.ones(3)), 0)
    blocks = np.ones((8, 4))
    nn.init.orthogonal_(blocks[4:], rng=rng)  # a view: one gate block of a packed matrix
    np.testing.assert_array_equal(blocks[:4], 1)
    np.testing.assert_allclose(blocks[4:].T @ blocks[4:], np.eye(4), atol=1e-12)


def test_sequential():
    seq = nn.Sequential(nn.Linear(3, 4, rng=np.random.default_rng(0)), nn.Linear(4, 2, rng=np.random.default_rng(1)))
    x = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    expected = seq[1](seq[0](x)).data
    np.testing.assert_array_equal(seq(x).data, expected)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
