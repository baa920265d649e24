"""Attention over a memory of encoder states (Luong et al. 2015; Bahdanau's additive scorer).

Scores of a decoder state h against each memory position s::

    dot:      score(h, s) = h . s
    general:  score(h, s) = h . W_a s                 (W_a s computed once per batch: keys())
    additive: score(h, s) = v . tanh(W_q h + W_k s)   (W_k s + b computed once per batch)

weights = softmax over the source (padded positions masked to exactly 0), context
c = sum_s weights_s s, and the attentional vector h~ = tanh(W_c [c; h]).

A query is one decoder step (N, D) or every step at once (N, T, D). DotAttention and
AdditiveAttention are the autograd Functions (forward and backward by hand, gradchecked in
float64); Attention is the layer that owns W_a / W_q, W_k, v and W_c.
"""

from __future__ import annotations

import numpy as np

from seqtool.core import functional as F
from seqtool.core.autograd import Function
from seqtool.nn.layers import Linear
from seqtool.nn.module import Module, Parameter
from seqtool.core.xp import zeros

__all__ = ["ATTENTIONS", "DotAttention", "AdditiveAttention", "Attention", "masked_softmax"]

ATTENTIONS = ("none", "dot", "general", "additive")
_NEG = -1e30  # masked score: exp() underflows to exactly 0


def masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the source axis of scores (N, T, S), mask (N, S) False at padding."""
    mask = mask[:, None, :]
    scores = np.where(mask, scores, scores.dtype.type(_NEG))
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    e *= mask
    return e / e.sum(axis=-1, keepdims=True)


def _queries(q):
    """(N, D) -> (N, 1, D): one decoder step is a sequence of one query."""
    return q[:, None, :] if q.ndim == 2 else q


def _attention_backward(a, values, g_ctx, g_a):
    """Shared tail: (d scores (N, T, S), d values (N, S, Dv)) from the context/weights gradients,
    each None (not used downstream) or shaped like the forward's outputs ((N, [T,] ...))."""
    g_ctx = (zeros(a.shape[:2] + values.shape[2:], a.dtype, like=a) if g_ctx is None
             else _queries(g_ctx))
    g_a = None if g_a is None else _queries(g_a)
    dv = np.matmul(a.transpose(0, 2, 1), g_ctx)  # (N, S, Dv)
    da = np.matmul(g_ctx, values.transpose(0, 2, 1))  # (N, T, S)
    if g_a is not None:
        da = da + g_a
    ds = a * (da - (a * da).sum(axis=-1, keepdims=True))  # softmax backward; 0 where masked
    return ds, dv


class DotAttention(Function):
    """(q (N, D) or (N, T, D), keys (N, S, D), values (N, S, Dv); mask (N, S) bool) ->
    (context (N, [T,] Dv), weights (N, [T,] S)), score = q . key (Luong dot; "general" passes
    keys = W_a s). T queries: every decoder step at once (no input feeding)."""

    def forward(self, q, keys, values, mask=None):
        self.single = q.ndim == 2
        q = _queries(q)
        scores = np.matmul(q, keys.transpose(0, 2, 1))  # (N, T, S)
        a = masked_softmax(scores, mask)
        ctx = np.matmul(a, values)  # (N, T, Dv)
        self.save_for_backward(q, keys, values, a)
        return (ctx[:, 0], a[:, 0]) if self.single else (ctx, a)

    def backward(self, g_ctx, g_a):
        q, keys, values, a = self.saved_tensors
        ds, dv = _attention_backward(a, values, g_ctx, g_a)
        dq = np.matmul(ds, keys)  # (N, T, D)
        dk = np.matmul(ds.transpose(0, 2, 1), q)  # (N, S, D)
        return (dq[:, 0] if self.single else dq), dk, dv


class AdditiveAttention(Function):
    """(q (N, [T,] A) = W_q h, keys (N, S, A) = W_k s + b, v (A,), values (N, S, Dv); mask) ->
    (context (N, [T,] Dv), weights (N, [T,] S)), score = v . tanh(q + key) (Bahdanau's MLP scorer)."""

    def forward(self, q, keys, v, values, mask=None):
        self.single = q.ndim == 2
        q = _queries(q)
        e = np.tanh(keys[:, None, :, :] + q[:, :, None, :])  # (N, T, S, A)
        scores = e @ v  # (N, T, S)
        a = masked_softmax(scores, mask)
        ctx = np.matmul(a, values)  # (N, T, Dv)
        self.save_for_backward(e, v, values, a)
        return (ctx[:, 0], a[:, 0]) if self.single else (ctx, a)

    def backward(self, g_ctx, g_a):
        e, v, values, a = self.saved_tensors
        ds, dvals = _attention_backward(a, values, g_ctx, g_a)
        dpre = (ds[..., None] * v) * (1 - e * e)  # (N, T, S, A)
        dv = np.einsum("ntsa,nts->a", e, ds)
        dq = dpre.sum(axis=2)  # (N, T, A)
        return (dq[:, 0] if self.single else dq), dpre.sum(axis=1), dv, dvals


class Attention(Module):
    """Luong's attention layer over memories of ``hidden`` features: ``keys(values)`` once per
    batch, then ``forward(h, keys, values, mask)`` -> (h~ (N, [T,] H), weights (N, [T,] S)).

    Parameters, in this order: key (W_a, or W_k with its bias), query (W_q) and v for additive,
    out (W_c, no bias)."""

    def __init__(self, kind: str, hidden: int, rng=None):
        super().__init__()
        if kind not in ATTENTIONS[1:]:
            raise ValueError(f"unknown attention {kind!r}; choose one of: {', '.join(ATTENTIONS[1:])}")
        rng = rng if rng is not None else np.random.default_rng()
        self.kind, H = kind, int(hidden)
        if kind == "general":
            self.key = Linear(H, H, bias=False, rng=rng)
        elif kind == "additive":
            self.key = Linear(H, H, rng=rng)
            self.query = Linear(H, H, bias=False, rng=rng)
            self.v = Parameter(rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), H).astype(np.float32))
        self.out = Linear(2 * H, H, bias=False, rng=rng)

    def keys(self, values):
        """What each query is scored against: values (dot), W_a values, or W_k values + b."""
        return values if self.kind == "dot" else self.key(values)

    def forward(self, h, keys, values, mask):
        """Decoder states h (N, H) or (N, T, H) -> (tanh(W_c [c; h]), weights (N, [T,] S))."""
        if self.kind == "additive":
            ctx, weights = AdditiveAttention.apply(self.query(h), keys, self.v, values, mask=mask)
        else:
            ctx, weights = DotAttention.apply(h, keys, values, mask=mask)
        return F.tanh(self.out(F.concat([ctx, h], axis=-1))), weights

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.out.out_features}"
