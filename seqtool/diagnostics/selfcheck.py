"""The kernel self-test behind `seqtool check`: naive reference + float64 gradchecks.

Every cell variant x direction x (full / ragged lengths) runs the fused kernel through its
autograd Function on a small float64 problem and is compared with seqtool.diagnostics.reference (values)
and with central differences (every input's gradient).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtool.diagnostics import reference
from seqtool.core.autograd import Tensor
from seqtool.diagnostics.gradcheck import gradcheck

VARIANTS = [  # (name, cell, options)
    ("lstm", "lstm", {}),
    ("gru", "gru", {"reset_after": True}),
    ("gru-classic", "gru", {"reset_after": False}),
    ("rnn-tanh", "rnn", {"relu": False}),
    ("rnn-relu", "rnn", {"relu": True}),
]


@dataclass
class CheckRow:
    variant: str
    reverse: bool
    ragged: bool
    forward_err: float
    grad_err: float
    ok: bool


def layer_function(cell):
    from seqtool.nn.recurrent import GRULayerFn, LSTMLayerFn, RNNLayerFn

    return {"lstm": LSTMLayerFn, "gru": GRULayerFn, "rnn": RNNLayerFn}[cell]


def problem(cell, T=5, N=3, D=4, H=3, ragged=False, seed=0, dtype=np.float64, xp=np):
    """Random weights/inputs for one layer; lengths ragged (one example of length 1) or full."""
    rng = np.random.default_rng(seed)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    arrays = {
        "x": rng.standard_normal((T, N, D)),
        "h0": rng.standard_normal((N, H)) * 0.5,
        "c0": rng.standard_normal((N, H)) * 0.5,
        "w_ih": rng.standard_normal((G * H, D)) * 0.5,
        "w_hh": rng.standard_normal((G * H, H)) * 0.5,
        "b_ih": rng.standard_normal(G * H) * 0.5,
        "b_hh": rng.standard_normal(G * H) * 0.5,
    }
    if cell != "lstm":
        del arrays["c0"]
    lengths = np.full(N, T, np.int64)
    if ragged:
        lengths = rng.integers(1, T + 1, N).astype(np.int64)
        lengths[0] = 1
        lengths[-1] = T
    return {k: xp.asarray(v.astype(dtype)) for k, v in arrays.items()}, lengths


def run_variant(cell, options, reverse, ragged, seed=0, device="cpu"):
    """(forward error, gradient error, ok) of one variant; its kernels run on `device`, while
    the reference and the finite differences stay on the host (inputs and outputs cross over
    through F.to_device, which carries the gradients back)."""
    from seqtool.core import functional as F

    arrays, lengths = problem(cell, ragged=ragged, seed=seed)
    layer = layer_function(cell)
    if device == "cpu":
        fn = layer
    else:
        class fn:  # noqa: N801 - stands in for the Function class
            @staticmethod
            def apply(*tensors, **kw):
                outs = layer.apply(*[F.to_device(t, device) for t in tensors], **kw)
                return tuple(F.to_device(o, "cpu") for o in outs)
    names = list(arrays)
    relu = options.get("relu", False)
    reset_after = options.get("reset_after", True)
    kwargs = {"lengths": lengths, "reverse": reverse, **options}

    outs = fn.apply(*[Tensor(arrays[k]) for k in names], **kwargs)
    y_ref, h_ref, c_ref = reference.layer(
        cell, arrays["x"], arrays["h0"], arrays.get("c0"), arrays["w_ih"], arrays["w_hh"],
        arrays["b_ih"], arrays["b_hh"], lengths, reverse=reverse, relu=relu, reset_after=reset_after)
    refs = [y_ref, h_ref] + ([c_ref] if cell == "lstm" else [])
    forward_err = max(float(np.abs(o.data - r).max()) for o, r in zip(outs, refs))

    def f(*tensors):
        return fn.apply(*tensors, **kwargs)

    ok, grad_err, _ = gradcheck(f, [arrays[k] for k in names], eps=1e-6, rtol=1e-5, atol=1e-7)
    return forward_err, grad_err, bool(ok and forward_err < 1e-10)


def run_all(device="cpu"):
    rows = []
    for name, cell, options in VARIANTS:
        for reverse in (False, True):
            for ragged in (False, True):
                fe, ge, ok = run_variant(cell, options, reverse, ragged, device=device)
                rows.append(CheckRow(name, reverse, ragged, fe, ge, ok))
    return rows
