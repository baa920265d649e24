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
