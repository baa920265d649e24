"""The engine: graph recording, accumulation, multi-output Functions, no_grad, freeing, dtypes."""

import numpy as np
import pytest

import seqtool
from seqtool import Function, no_grad
from seqtool.diagnostics.gradcheck import gradcheck, numeric_grad


def test_repeated_use_and_diamond_match_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((3, 4))
    x = seqtool.tensor(a, requires_grad=True)
    t = torch.tensor(a, requires_grad=True)

    def expr(v):
        u = v * v + v  # v used three times
        w = u.exp() * u - u / (v * v + 1.0)  # u used three times: a diamond
        return (w * v).sum()

    ours, ref = expr(x), expr(t)
    ours.backward()
    ref.backward()
    np.testing.assert_allclose(ours.item(), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-10)


def test_leaf_grad_accumulates_across_backward_calls():
    x = seqtool.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 + 2 * x.data)


def test_backward_with_explicit_grad_and_errors():
    x = seqtool.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x
    with pytest.raises(RuntimeError):
        y.backward()  # not a scalar
    y.backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(x.grad, [2.0, 0.0, 12.0])
    with pytest.raises(RuntimeError):
        seqtool.tensor([1.0]).backward()  # does not require grad


class Split3(Function):
    """Three outputs; records what backward receives."""

    calls = []

    def forward(self, a, scale, *, offset=0.0):
        self.needs_seen = self.needs_input_grad
        self.save_for_backward(a)
        return a * scale + offset, a * a, np.asarray(a.sum())

    def backward(self, g0, g1, g2):
        Split3.calls.append((g0 is None, g1 is None, g2 is None))
        (a,) = self.saved_tensors
        g = np.zeros_like(a)
        if g0 is not None:
            g += g0 * 2.0
        if g1 is not None:
            g += g1 * 2 * a
        if g2 is not None:
            g += g2
        return g, None


def test_multi_output_function_with_unused_outputs():
    a = np.random.default_rng(1).standard_normal((2, 3))
    x = seqtool.tensor(a, requires_grad=True)
    Split3.calls.clear()
    y0, y1, y2 = Split3.apply(x, 2.0, offset=1.0)
    assert all(y.requires_grad for y in (y0, y1, y2))
    np.testing.assert_allclose(y0.data, 2 * a + 1)
    (y1 * 3.0).sum().backward()  # only the second output reaches the loss
    assert Split3.calls == [(True, False, True)]
    np.testing.assert_allclose(x.grad, 6 * a)

    x.grad = None
    y0, y1, y2 = Split3.apply(x, 2.0)
    (y0.sum() + y1.sum() * 0.5 + y2 * 4.0).backward()  # all outputs, scalar output y2
    np.testing.assert_allclose(x.grad, 2.0 + a + 4.0)


def test_multi_output_gradcheck_through_tuple():
    ok, _, details = gradcheck(lambda v: Split3.apply(v, 2.0), [np.random.default_rng(2).standard_normal((3,))])
    assert ok, details


def test_needs_input_grad_is_set_before_forward():
    x = seqtool.tensor(np.ones(2), requires_grad=True)
    c = seqtool.tensor(np.ones(2))
    y0, _, _ = Split3.apply(x, 2.0)
    assert y0._ctx.needs_seen == (True, False)

    class Probe(Function):
        def forward(self, a, b):
            Probe.seen = self.needs_input_grad
            return a + b

        def backward(self, g):
            return g, g

    Probe.apply(c, x)
    assert Probe.seen == (False, True)
    with no_grad():
        Probe.apply(c, x)
    assert Probe.seen == (False, False)


def test_no_grad_records_nothing_and_restores():
    x = seqtool.tensor(np.ones(3), requires_grad=True)
    assert seqtool.is_grad_enabled()
    with no_grad():
        assert not seqtool.is_grad_enabled()
        with no_grad():
            pass
        assert not seqtool.is_grad_enabled()  # nested exit does not re-enable
        y = (x * 2.0).sum()
    assert seqtool.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None

    @no_grad()
    def f(v):
        return v * 2.0

    assert not f(x).requires_grad and seqtool.is_grad_enabled()


def test_constants_do_not_record():
    a, b = seqtool.tensor(np.ones(3)), seqtool.tensor(np.ones(3))
    c = a * b + 1.0
    assert not c.requires_grad and c._ctx is None


def test_graph_is_freed_and_second_backward_raises():
    x = seqtool.tensor(np.ones(3), requires_grad=True)
    y = x.exp()
    node = y._ctx
    z = y.sum()
    z.backward()
    assert node.saved_tensors == () and node.parents == ()
    with pytest.raises(RuntimeError, match="freed"):
        z.backward()


def test_deep_graph_no_recursion_limit():
    x = seqtool.tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001**5000], rtol=1e-10)


def test_dtypes_and_tensor_factory():
    assert seqtool.tensor([1.0, 2.0]).dtype == np.float32  # Python floats -> float32, as torch
    assert seqtool.tensor([1, 2]).dtype.kind == "i"
    assert seqtool.tensor([1, 2], dtype=np.float64).dtype == np.float64
    a = np.ones(3)
    t = seqtool.tensor(a)
    a[0] = 5
    assert t.data[0] == 1  # tensor() copies
    with pytest.raises(TypeError):
        seqtool.tensor([1, 2], requires_grad=True)
    x = seqtool.tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    for y in (x * 2.5, 2.5 * x, np.float64(2) * x, x - np.ones(2), 1.0 / x, x / np.float64(3), x**2, -x):
        assert isinstance(y, seqtool.Tensor) and y.dtype == np.float32
    (x * np.float64(2.0)).sum().backward()
    assert x.grad.dtype == np.float32


def test_tensor_properties_and_detach():
    x = seqtool.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float64 and len(x) == 2
    assert x.T.shape == (3, 2) and x.numpy() is x.data
    d = (x * 2.0).detach()
    assert not d.requires_grad and d._ctx is None


def test_bad_backward_arity_is_reported():
    class Bad(Function):
        def forward(self, a, b):
            return a + b

        def backward(self, g):
            return g  # one gradient for two inputs

    x = seqtool.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward"):
        Bad.apply(x, x).sum().backward()


def test_numeric_grad_matches_closed_form():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(3)
    ga, gb, gi = numeric_grad(lambda u, v, i: np.sum(np.sin(u) * v) + np.sum(v**3), [a, b, np.arange(2)])
    np.testing.assert_allclose(ga, np.cos(a) * b, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gb, np.sin(a).sum(0) + 3 * b**2, rtol=1e-7, atol=1e-9)
    assert gi is None


def test_gradcheck_catches_a_wrong_gradient():
    class WrongSquare(Function):
        def forward(self, a):
            self.save_for_backward(a)
            return a * a

        def backward(self, g):
            return g * self.saved_tensors[0]  # missing the factor 2

    x = np.random.default_rng(4).standard_normal(4)
    ok, err, details = gradcheck(lambda v: WrongSquare.apply(v), [x])
    assert not ok and err > 0.1 and not details[0]["ok"]


def test_gradcheck_checks_each_input_and_closure_parameters():
    rng = np.random.default_rng(5)
    w = seqtool.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    w.grad = np.full((3, 3), 7.0)  # fn uses w from the closure; its old grad must survive
    ok, _, details = gradcheck(lambda x, _w, c: (x @ w).tanh() * c, [rng.standard_normal((2, 3)), w, 2.0])
    assert ok and [d["input"] for d in details] == [0, 1]
    np.testing.assert_array_equal(w.grad, 7.0)  # restored
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda v: v * 2.0, [seqtool.tensor(np.ones(2, dtype=np.float32), requires_grad=True)])
