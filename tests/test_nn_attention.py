"""seqtool.nn attention: DotAttention / AdditiveAttention (float64 gradchecks, masks, one query
or every step at once) and the Attention layer, against the same formulas written in PyTorch
(skipped without torch)."""

import numpy as np
import pytest

from seqtool.core.autograd import Tensor
from seqtool.diagnostics.gradcheck import gradcheck
from seqtool.nn import AdditiveAttention, Attention, DotAttention


def _mask(rng, N, S):
    lengths = rng.integers(1, S + 1, N)
    lengths[0] = S
    return np.arange(S)[None, :] < lengths[:, None]


def test_dot_attention_gradcheck_and_mask():
    rng = np.random.default_rng(0)
    N, S, D, Dv = 3, 5, 4, 6
    mask = _mask(rng, N, S)
    q, k, v = rng.standard_normal((N, D)), rng.standard_normal((N, S, D)), rng.standard_normal((N, S, Dv))
    ok, err, _ = gradcheck(lambda q, k, v: DotAttention.apply(q, k, v, mask=mask), [q, k, v])
    assert ok, err
    ctx, w = DotAttention.apply(Tensor(q), Tensor(k), Tensor(v), mask=mask)
    scores = np.einsum("nsd,nd->ns", k, q)
    ref = np.where(mask, np.exp(scores - scores.max(1, keepdims=True)), 0)
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(w.data, ref, atol=1e-12)
    assert (w.data[~mask] == 0).all()
    np.testing.assert_allclose(ctx.data, np.einsum("ns,nsd->nd", ref, v), atol=1e-12)


def test_additive_attention_gradcheck():
    rng = np.random.default_rng(1)
    N, S, A, Dv = 2, 4, 3, 5
    mask = _mask(rng, N, S)
    args = [rng.standard_normal((N, A)), rng.standard_normal((N, S, A)), rng.standard_normal(A),
            rng.standard_normal((N, S, Dv))]
    ok, err, _ = gradcheck(lambda q, k, vv, v: AdditiveAttention.apply(q, k, vv, v, mask=mask), args)
    assert ok, err
    _, w = AdditiveAttention.apply(*[Tensor(a) for a in args], mask=mask)
    scores = np.tanh(args[1] + args[0][:, None, :]) @ args[2]
    ref = np.where(mask, np.exp(scores), 0)
    np.testing.assert_allclose(w.data, ref / ref.sum(1, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("kind", ["dot", "additive"])
def test_attention_with_every_step_at_once_equals_one_step_at_a_time(kind):
    # Without input feeding all T queries go in one call (N, T, D); the result and the
    # gradients equal T separate one-query calls, and the batched form passes gradcheck.
    rng = np.random.default_rng(7)
    N, T, S, D = 3, 4, 5, 3
    mask = _mask(rng, N, S)
    q, k, v = rng.standard_normal((N, T, D)), rng.standard_normal((N, S, D)), rng.standard_normal((N, S, 2))
    w = rng.standard_normal(D)
    if kind == "dot":
        fn = lambda q, k, v: DotAttention.apply(q, k, v, mask=mask)  # noqa: E731
        args = [q, k, v]
    else:
        fn = lambda q, k, w, v: AdditiveAttention.apply(q, k, w, v, mask=mask)  # noqa: E731
        args = [q, k, w, v]
    ok, err, _ = gradcheck(fn, args)
    assert ok, err
    ctx, weights = fn(*[Tensor(a) for a in args])
    assert ctx.shape == (N, T, 2) and weights.shape == (N, T, S)
    for t in range(T):
        one = [args[0][:, t]] + args[1:]
        ctx_t, w_t = fn(*[Tensor(a) for a in one])
        np.testing.assert_allclose(ctx.data[:, t], ctx_t.data, atol=1e-12)
        np.testing.assert_allclose(weights.data[:, t], w_t.data, atol=1e-12)


def _torch_attention(torch, kind, layer, h, values, mask):
    """h~ and weights of Luong attention written directly in torch (float64), with layer's weights."""
    def w(p):
        return torch.tensor(p.data)

    if kind == "dot":
        keys = values
    else:
        keys = values @ w(layer.key.weight).T
        keys = keys + w(layer.key.bias) if kind == "additive" else keys
    single = h.dim() == 2
    q = h[:, None, :] if single else h  # (N, T, H)
    if kind == "additive":
        scores = torch.tanh(keys[:, None] + (q @ w(layer.query.weight).T)[:, :, None]) @ w(layer.v)
    else:
        scores = q @ keys.transpose(1, 2)
    a = torch.softmax(scores.masked_fill(~torch.tensor(mask)[:, None, :], float("-inf")), dim=-1)
    out = torch.tanh(torch.cat([a @ values, q], dim=-1) @ w(layer.out.weight).T)
    return (out[:, 0], a[:, 0]) if single else (out, a)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
@pytest.mark.parametrize("steps", [None, 3])
def test_attention_layer_matches_torch(kind, steps):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    N, S, H = 3, 5, 4
    layer = Attention(kind, H, rng=np.random.default_rng(0)).to_dtype(np.float64)
    mask = _mask(rng, N, S)
    h = rng.standard_normal((N, H) if steps is None else (N, steps, H))
    values = rng.standard_normal((N, S, H))
    ht, vt = (torch.tensor(a, requires_grad=True) for a in (h, values))
    ref_out, ref_w = _torch_attention(torch, kind, layer, ht, vt, mask)
    hs, vs = Tensor(h, requires_grad=True), Tensor(values, requires_grad=True)
    out, weights = layer(hs, layer.keys(vs), vs, mask)
    np.testing.assert_allclose(out.data, ref_out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weights.data, ref_w.detach().numpy(), rtol=1e-12, atol=1e-12)
    proj = rng.standard_normal(out.shape)
    (out * proj).sum().backward()
    (ref_out * torch.tensor(proj)).sum().backward()
    np.testing.assert_allclose(hs.grad, ht.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vs.grad, vt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_layer_gradcheck_every_parameter(kind):
    rng = np.random.default_rng(12)
    N, T, S, H = 2, 3, 4, 3
    layer = Attention(kind, H, rng=np.random.default_rng(1)).to_dtype(np.float64)
    mask = _mask(rng, N, S)
    params = list(layer.parameters())
    expected = {"dot": 1, "general": 2, "additive": 4}[kind]  # W_c; + W_a; + W_k, b, W_q, v
    assert len(params) == expected + (kind == "additive")

    def fn(h, values, *_):
        return layer(h, layer.keys(values), values, mask)

    ok, err, details = gradcheck(fn, [rng.standard_normal((N, T, H)), rng.standard_normal((N, S, H)),
                                      *params])
    assert ok, [d for d in details if not d.get("ok", True)][:2]


def test_attention_layer_parameter_names_and_unknown_kind():
    names = [n for n, _ in Attention("additive", 4, rng=np.random.default_rng(0)).named_parameters()]
    assert names == ["v", "key.weight", "key.bias", "query.weight", "out.weight"]  # own ones first
    with pytest.raises(ValueError, match="unknown attention 'none'"):
        Attention("none", 4)
