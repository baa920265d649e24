"""Losses against torch.nn.functional (float64 values and gradients) and finite differences."""

import numpy as np
import pytest

import seqtool
from seqtool.diagnostics.gradcheck import gradcheck
from seqtool.core.losses import bce_with_logits, cross_entropy, mse


def _compare(ours, theirs, arrays, rtol=1e-10):
    """Values and gradients of every float input, ours vs torch."""
    torch = pytest.importorskip("torch")
    xs = [seqtool.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    ts = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out, ref = ours(*xs), theirs(*ts)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=rtol, atol=1e-12)
    proj = np.random.default_rng(9).standard_normal(out.shape)
    (out * proj).sum().backward()
    (ref * torch.tensor(proj)).sum().backward()
    for x, t in zip(xs, ts):
        if x.requires_grad:
            np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=rtol, atol=1e-12)


# targets with repeats and ignored positions (-100 and a custom index)
T2 = np.array([1, 4, -100, 0, 4, -100])
T3 = np.array([[0, 3, 3, -100], [2, -100, 1, 0]])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_2d_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    logits = np.random.default_rng(0).standard_normal((6, 5)) * 3
    _compare(
        lambda x, t: cross_entropy(x, t, reduction=reduction),
        lambda x, t: torch.nn.functional.cross_entropy(x, t, reduction=reduction),
        [logits, T2],
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_nd_class_last_matches_torch(reduction):
    torch = pytest.importorskip("torch")
    logits = np.random.default_rng(1).standard_normal((2, 4, 5))
    # torch puts classes on axis 1; ours keeps them last (N, T, C)
    _compare(
        lambda x, t: cross_entropy(x, t, ignore_index=-100, reduction=reduction),
        lambda x, t: torch.nn.functional.cross_entropy(x.permute(0, 2, 1), t, reduction=reduction),
        [logits, T3],
    )


def test_cross_entropy_custom_ignore_index_matches_torch():
    torch = pytest.importorskip("torch")
    t = np.array([0, 2, 2, 1, 2])
    _compare(
        lambda x, y: cross_entropy(x, y, ignore_index=2),
        lambda x, y: torch.nn.functional.cross_entropy(x, y, ignore_index=2),
        [np.random.default_rng(2).standard_normal((5, 3)), t],
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradcheck(reduction):
    ok, _, details = gradcheck(
        lambda x: cross_entropy(x, T3, reduction=reduction), [np.random.default_rng(3).standard_normal((2, 4, 5))]
    )
    assert ok, details


def test_cross_entropy_mean_is_over_non_ignored_only():
    x = np.random.default_rng(4).standard_normal((6, 5))
    keep = T2 != -100
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))  # naive reference, small values
    expected = -logp[np.arange(6)[keep], T2[keep]].mean()
    np.testing.assert_allclose(cross_entropy(x, T2).item(), expected, rtol=1e-12)


def test_cross_entropy_all_ignored_is_nan_like_torch():
    x = seqtool.tensor(np.zeros((2, 3)), requires_grad=True)
    loss = cross_entropy(x, np.array([-100, -100]))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad, 0.0)


def test_cross_entropy_stable_and_float32():
    x = seqtool.tensor(np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]], dtype=np.float32), requires_grad=True)
    loss = cross_entropy(x, np.array([1, 2]))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.item(), (1e4 + np.log(3)) / 2, rtol=1e-6)
    loss.backward()
    assert x.grad.dtype == np.float32 and np.isfinite(x.grad).all()


def test_cross_entropy_validates_targets():
    x = np.zeros((2, 3))
    with pytest.raises(IndexError):
        cross_entropy(x, np.array([0, 3]))
    with pytest.raises(TypeError):
        cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        cross_entropy(x, np.array([0, 1]), reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_with_logits_matches_torch(reduction, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4)) * 4
    y = rng.uniform(0, 1, (3, 4))  # soft targets: the target gradient is exercised too
    w = rng.uniform(0.5, 2, (1, 4)) if weighted else None
    pw = rng.uniform(0.5, 3, 4) if weighted else None
    _compare(
        lambda a, b: bce_with_logits(a, b, weight=w, pos_weight=pw, reduction=reduction),
        lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(
            a, b, weight=None if w is None else torch.tensor(w),
            pos_weight=None if pw is None else torch.tensor(pw), reduction=reduction,
        ),
        [x, y],
    )  # fmt: skip


def test_bce_with_logits_gradcheck_and_extremes():
    rng = np.random.default_rng(6)
    y = (rng.uniform(size=(2, 3)) > 0.5).astype(np.float64)
    ok, _, details = gradcheck(
        lambda a, b: bce_with_logits(a, b, pos_weight=np.array([1.0, 2.0, 0.5])), [rng.standard_normal((2, 3)), y]
    )
    assert ok, details
    x = seqtool.tensor(np.array([1000.0, -1000.0, 1000.0], dtype=np.float32), requires_grad=True)
    loss = bce_with_logits(x, np.array([1.0, 0.0, 0.0]), reduction="none")
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss.data, [0.0, 0.0, 1000.0], atol=1e-6)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_torch_and_gradcheck(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _compare(
        lambda p, t: mse(p, t, reduction=reduction),
        lambda p, t: torch.nn.functional.mse_loss(p, t, reduction=reduction),
        [a, b],
    )
    ok, _, details = gradcheck(lambda p, t: mse(p, t, reduction=reduction), [a, b])
    assert ok, details


@pytest.mark.parametrize("blocked", [False, True])
def test_cross_entropy_on_a_vocabulary_sized_axis_matches_a_naive_reference(blocked, monkeypatch):
    """130 x 10,000 float32 (5.2 MB): large logits go in row blocks over threads."""
    from seqtool.core import losses

    monkeypatch.setattr(losses, "_BLOCKED_MIN_BYTES", 1 if blocked else 1 << 40)
    rng = np.random.default_rng(5)
    M, C = 130, 10_000
    x = (rng.standard_normal((M, C)) * 4).astype(np.float32)
    t = rng.integers(0, C, M)
    t[[3, 17, 100]] = -100
    xt = seqtool.tensor(x, requires_grad=True)
    loss = cross_entropy(xt, t)
    loss.backward()
    x64 = x.astype(np.float64)
    p = np.exp(x64 - x64.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    keep = t != -100
    expected = -np.log(p[np.arange(M)[keep], t[keep]]).mean()
    onehot = np.zeros_like(p)
    onehot[np.arange(M)[keep], t[keep]] = 1
    grad = (p - onehot) * keep[:, None] / keep.sum()
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    np.testing.assert_allclose(xt.grad, grad, rtol=1e-4, atol=1e-9)
    assert xt.grad.dtype == np.float32
    per_row = cross_entropy(seqtool.tensor(x), t, reduction="none").data
    np.testing.assert_allclose(per_row[keep], -np.log(p[np.arange(M)[keep], t[keep]]), rtol=1e-4)
    assert (per_row[~keep] == 0).all()
