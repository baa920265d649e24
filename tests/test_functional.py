"""Each op: float64 finite-difference gradcheck, and values + gradients against PyTorch."""

import numpy as np
import pytest

import seqtool
from seqtool.core import functional as F
from seqtool.diagnostics.gradcheck import gradcheck


def _pos(shape, rng):
    return rng.uniform(0.5, 2.0, size=shape)  # away from 0 for log, div, pow


def _normal(shape, rng):
    return rng.standard_normal(shape)


def _away(shape, rng):
    # |x| >= 0.1: keeps finite differences off the kinks of relu / clip / maximum
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, np.sign(x + 1e-12) * 0.1 + x, x)


IDX = np.array([0, 2, 0, 1])  # repeats: gradients must add up

# name: (ours, torch, [(shape, generator), ...])
OPS = {
    "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b, [((3, 1, 4), _normal), ((2, 4), _normal)]),
    "sub_broadcast": (F.sub, lambda a, b: a - b, [((4,), _normal), ((3, 4), _normal)]),
    "mul_broadcast": (F.mul, lambda a, b: a * b, [((3, 4), _normal), ((1, 4), _normal)]),
    "div_broadcast": (F.div, lambda a, b: a / b, [((3, 4), _normal), ((3, 1), _pos)]),
    "rsub_rdiv_scalar": (lambda a: 2.0 - 3.0 / a, lambda a: 2.0 - 3.0 / a, [((5,), _pos)]),
    "neg": (F.neg, lambda a: -a, [((2, 3), _normal)]),
    "pow": (lambda a: a**3 + F.pow(a, 0.5), lambda a: a**3 + a**0.5, [((2, 3), _pos)]),
    "exp": (F.exp, lambda a: a.exp(), [((2, 3), _normal)]),
    "log": (F.log, lambda a: a.log(), [((2, 3), _pos)]),
    "sum_all": (F.sum, lambda a: a.sum(), [((2, 3, 4), _normal)]),
    "sum_axis": (lambda a: a.sum(axis=1), lambda a: a.sum(dim=1), [((2, 3, 4), _normal)]),
    "sum_axes_keep": (
        lambda a: a.sum(axis=(0, 2), keepdims=True),
        lambda a: a.sum(dim=(0, 2), keepdim=True),
        [((2, 3, 4), _normal)],
    ),
    "mean_all": (F.mean, lambda a: a.mean(), [((2, 3, 4), _normal)]),
    "mean_axis_neg": (lambda a: a.mean(axis=-1), lambda a: a.mean(dim=-1), [((2, 3, 4), _normal)]),
    "reshape": (lambda a: a.reshape(4, 6) * F.reshape(a, (6, 4)).T, lambda a: a.reshape(4, 6) * a.reshape(6, 4).T,
                [((2, 3, 4), _normal)]),  # fmt: skip
    "transpose": (lambda a: F.transpose(a, 2, 0, 1), lambda a: a.permute(2, 0, 1), [((2, 3, 4), _normal)]),
    "matmul_nd_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [((2, 3, 4), _normal), ((4, 5), _normal)]),
    "matmul_2d": (F.matmul, lambda a, b: a @ b, [((3, 4), _normal), ((4, 5), _normal)]),
    "matmul_vec_mat": (F.matmul, lambda a, b: a @ b, [((4,), _normal), ((4, 5), _normal)]),
    "matmul_mat_vec": (F.matmul, lambda a, b: a @ b, [((3, 4), _normal), ((4,), _normal)]),
    "matmul_batched_bcast": (F.matmul, lambda a, b: a @ b, [((3, 4), _normal), ((2, 4, 5), _normal)]),
    "linear_bias": (F.linear, None, [((2, 3, 4), _normal), ((5, 4), _normal), ((5,), _normal)]),
    "linear_nobias": (F.linear, None, [((3, 4), _normal), ((5, 4), _normal)]),
    "concat": (lambda a, b, c: F.concat([a, b, c], axis=1), lambda a, b, c: __import__("torch").cat([a, b, c], 1),
               [((2, 1, 3), _normal), ((2, 2, 3), _normal), ((2, 4, 3), _normal)]),  # fmt: skip
    "stack": (lambda a, b: F.stack([a, b], axis=-1), lambda a, b: __import__("torch").stack([a, b], -1),
              [((2, 3), _normal), ((2, 3), _normal)]),  # fmt: skip
    "getitem_basic": (lambda a: a[1:, ::2], lambda a: a[1:, ::2], [((3, 5), _normal)]),
    "getitem_int_array_repeats": (lambda a: a[IDX], lambda a: a[IDX], [((3, 5), _normal)]),
    "getitem_mixed": (lambda a: F.getitem(a, (IDX, slice(1, 4))), lambda a: a[IDX, 1:4], [((3, 5), _normal)]),
    "getitem_bool_mask": (lambda a: a[np.array([True, False, True])], lambda a: a[np.array([True, False, True])],
                          [((3, 5), _normal)]),  # fmt: skip
    "sigmoid": (F.sigmoid, lambda a: a.sigmoid(), [((3, 4), _normal)]),
    "tanh": (F.tanh, lambda a: a.tanh(), [((3, 4), _normal)]),
    "relu": (F.relu, lambda a: a.relu(), [((3, 4), _away)]),
    "softmax_last": (F.softmax, lambda a: a.softmax(-1), [((3, 4), _normal)]),
    "softmax_axis0": (lambda a: a.softmax(axis=0), lambda a: a.softmax(0), [((3, 4), _normal)]),
    "log_softmax": (F.log_softmax, lambda a: a.log_softmax(-1), [((2, 3, 4), _normal)]),
    "maximum": (F.maximum, lambda a, b: __import__("torch").maximum(a, b), [((3, 4), _away), ((4,), _away)]),
    "clip": (lambda a: F.clip(a, -0.5, 0.7), lambda a: a.clamp(-0.5, 0.7), [((4, 5), _away)]),
}


def _torch_linear(x, w, b=None):
    import torch.nn.functional as tF

    return tF.linear(x, w, b)


def _inputs(spec, seed=0):
    rng = np.random.default_rng(seed)
    return [gen(shape, rng) for shape, gen in spec]


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck(name):
    ours, _, spec = OPS[name]
    ok, err, details = gradcheck(ours, _inputs(spec))
    assert ok, details
    assert err < 1e-6


@pytest.mark.parametrize("name", sorted(OPS))
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    ours, theirs, spec = OPS[name]
    theirs = theirs or _torch_linear
    arrays = _inputs(spec, seed=1)
    xs = [seqtool.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = ours(*xs), theirs(*ts)
    assert out.dtype == np.float64 and out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    proj = np.random.default_rng(2).standard_normal(out.shape)
    (out * proj).sum().backward()
    (ref * torch.tensor(proj)).sum().backward()
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_maximum_ties_split_gradient_like_torch():
    torch = pytest.importorskip("torch")
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0])
    x, y = seqtool.tensor(a, requires_grad=True), seqtool.tensor(b, requires_grad=True)
    F.maximum(x, y).sum().backward()
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.maximum(tx, ty).sum().backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())
    np.testing.assert_array_equal(y.grad, ty.grad.numpy())


def test_softmax_family_stable_for_huge_logits():
    x = seqtool.tensor(np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], dtype=np.float32))
    p, lp = F.softmax(x), F.log_softmax(x)
    assert np.isfinite(p.data).all() and np.isfinite(lp.data).all()
    np.testing.assert_allclose(p.data.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(lp.data[0], [0.0, -1000.0, -2000.0], rtol=1e-6)
    np.testing.assert_allclose(np.exp(lp.data[1]), 1 / 3, rtol=1e-6)
    s = F.sigmoid(seqtool.tensor(np.array([-1000.0, 1000.0], dtype=np.float32)))
    np.testing.assert_array_equal(s.data, [0.0, 1.0])


@pytest.mark.parametrize("padding_idx", [None, 1])
def test_embedding_matches_torch(padding_idx):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 3))
    idx = np.array([[0, 1, 4], [1, 1, 0]])  # repeated rows and the padding row
    tw = torch.tensor(w, requires_grad=True)
    ref = torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=padding_idx)
    x = seqtool.tensor(w, requires_grad=True)
    out = F.embedding(idx, x, padding_idx=padding_idx)
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    proj = rng.standard_normal(out.shape)
    (out * proj).sum().backward()
    (ref * torch.tensor(proj)).sum().backward()
    np.testing.assert_allclose(x.grad, tw.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_embedding_gradcheck_and_validation():
    idx = np.array([[0, 2, 2], [3, 0, 1]])
    ok, _, details = gradcheck(lambda w: F.embedding(idx, w), [np.random.default_rng(4).standard_normal((4, 3))])
    assert ok, details
    w = seqtool.tensor(np.zeros((4, 3)))
    with pytest.raises(IndexError):
        F.embedding(np.array([4]), w)
    with pytest.raises(IndexError):
        F.embedding(np.array([-1]), w)  # numpy would silently wrap around
    with pytest.raises(TypeError):
        F.embedding(np.array([0.0]), w)


def test_dropout_inverted_mask_and_gradient():
    rng = np.random.default_rng(5)
    x = seqtool.tensor(np.ones((200, 100), dtype=np.float32), requires_grad=True)
    y = F.dropout(x, 0.3, training=True, rng=rng)
    assert y.dtype == np.float32
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.02  # 20000 Bernoulli draws: sd ~0.003
    np.testing.assert_allclose(y.data[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, y.data)  # d/dx (x * mask) = mask, and x == 1
    a = F.dropout(x, 0.3, True, np.random.default_rng(9)).data
    b = F.dropout(x, 0.3, True, np.random.default_rng(9)).data
    np.testing.assert_array_equal(a, b)  # the Generator fully determines the mask


def test_dropout_identity_cases():
    x = seqtool.tensor(np.arange(6.0), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0, True, np.random.default_rng(0)).data, 0)
    with pytest.raises(ValueError):
        F.dropout(x, 1.5)


def test_float32_stays_float32():
    rng = np.random.default_rng(6)
    x = seqtool.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    w = seqtool.tensor(rng.standard_normal((2, 4)).astype(np.float32), requires_grad=True)
    ys = [
        F.linear(x, w, np.zeros(2)),  # a float64 array constant
        x * np.float64(0.5) + 1.0,
        F.clip(x, np.float64(-0.1), 0.1),
        F.softmax(x),
        F.log_softmax(x) - np.ones(4),
        F.sigmoid(x) / 3,
        F.maximum(x, 0.0),
        x.mean() * 2,
        F.dropout(x, 0.5, True, rng),
    ]
    for y in ys:
        assert y.dtype == np.float32
        y.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_to_device_cpu_is_identity_with_gradient():
    x = np.random.default_rng(7).standard_normal((3, 4))
    ok, err, details = gradcheck(lambda t: F.to_device(t, "cpu") * F.to_device(t, "cpu"), [x])
    assert ok, details
    y = F.to_device(seqtool.Tensor(x), "cpu")
    np.testing.assert_array_equal(y.data, x)
    assert type(y.data) is np.ndarray
