"""A minimal eager autograd on NumPy arrays.

A `Function` subclass is one op: `forward` computes NumPy arrays from NumPy arrays and `backward`
maps output gradients to input gradients, side by side (tinygrad 2020 style). `Function.apply`
runs forward and, when a gradient is wanted, records the instance as a graph node. `Tensor.backward`
sorts the nodes topologically (iteratively, so graphs of any depth work) and sweeps them once in
reverse (micrograd style), freeing what each node saved as soon as it has run.

dtype rule: operations never promote float32 data to float64 behind the caller's back. Python and
NumPy scalars and plain arrays mixed with a floating Tensor take the Tensor's dtype.
"""

from __future__ import annotations

import numpy as np

from seqtool.core.xp import asarray_on, expit, is_device_array, scatter_add, zeros

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "tensor"]

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class no_grad:
    """Context manager (and decorator): no graph is recorded inside."""

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        return wrapper


def _as_array(data, dtype=None, copy=False) -> np.ndarray:
    """ndarray from anything array-like; Python floats default to float32 (as in torch)."""
    if isinstance(data, Tensor):
        data = data.data
    if is_device_array(data):  # a GPU array stays where it is (np.array would refuse it)
        out = data.astype(dtype, copy=copy) if dtype is not None else (data.copy() if copy else data)
        return out
    if dtype is not None:
        return np.array(data, dtype=dtype, copy=True if copy else None)
    from_python = not isinstance(data, (np.ndarray, np.generic))
    arr = np.array(data, copy=True if copy else None)
    if from_python and arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return arr


class Tensor:
    """An ndarray plus what autograd needs: `grad`, `requires_grad` and the node that made it."""

    # Make numpy defer to our reflected operators (np.float32(2) * t -> Tensor.__rmul__)
    # instead of building object arrays.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad: np.ndarray | None = None
        if requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | None = None  # the node that produced this tensor (None for leaves)
        self._idx = 0  # which output of _ctx this is

    # ---- array-like properties
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def T(self) -> Tensor:
        return self.transpose()

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    def detach(self) -> Tensor:
        """Same data (shared, not copied), no history."""
        return Tensor(self.data)

    # ---- backward
    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) * grad into `.grad` of every leaf that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without grad needs a scalar, got shape {self.shape}")
            grad = np.ones_like(self.data)  # dispatches: a CuPy tensor gets a CuPy grad
        else:
            grad = _as_array(grad, self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"grad shape {grad.shape} does not match tensor shape {self.shape}")
        if self._ctx is None:
            _accumulate_leaf(self, grad)
            return

        pending = {self._ctx: [None] * self._ctx._n_out}  # node -> gradient per output
        pending[self._ctx][self._idx] = grad
        for node in reversed(_toposort(self._ctx)):
            grads_out = pending.pop(node, None)
            if grads_out is not None and any(g is not None for g in grads_out):
                grads_in = node.backward(*grads_out)
                if not isinstance(grads_in, (tuple, list)):
                    grads_in = (grads_in,)
                if len(grads_in) != len(node.parents):
                    raise RuntimeError(
                        f"{type(node).__name__}.backward returned {len(grads_in)} gradients "
                        f"for {len(node.parents)} positional inputs"
                    )
                for parent, g, need in zip(node.parents, grads_in, node.needs_input_grad):
                    if g is None or not need:
                        continue
                    if not hasattr(g, "shape") or isinstance(g, np.generic):  # scalar from a reduction
                        g = np.asarray(g)
                    if g.shape != parent.shape:
                        raise RuntimeError(
                            f"{type(node).__name__}.backward: gradient shape {g.shape} "
                            f"for input of shape {parent.shape}"
                        )
                    if g.dtype != parent.dtype:
                        g = g.astype(parent.dtype)
                    if parent._ctx is None:
                        _accumulate_leaf(parent, g)
                    else:
                        slots = pending.setdefault(parent._ctx, [None] * parent._ctx._n_out)
                        prev = slots[parent._idx]
                        # never add in place: g may be shared with another input (e.g. add)
                        slots[parent._idx] = g if prev is None else prev + g
            node._free()

    # ---- operators (the ops themselves are defined below, forward beside backward)
    def __add__(self, other):
        return Add.apply(self, _lift(other, self))

    def __radd__(self, other):
        return Add.apply(_lift(other, self), self)

    def __sub__(self, other):
        return Sub.apply(self, _lift(other, self))

    def __rsub__(self, other):
        return Sub.apply(_lift(other, self), self)

    def __mul__(self, other):
        return Mul.apply(self, _lift(other, self))

    def __rmul__(self, other):
        return Mul.apply(_lift(other, self), self)

    def __truediv__(self, other):
        return Div.apply(self, _lift(other, self))

    def __rtruediv__(self, other):
        return Div.apply(_lift(other, self), self)

    def __matmul__(self, other):
        return MatMul.apply(self, _lift(other, self))

    def __rmatmul__(self, other):
        return MatMul.apply(_lift(other, self), self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("only constant exponents are supported")
        return Pow.apply(self, float(exponent))

    def __getitem__(self, index):
        return GetItem.apply(self, _index_data(index))

    # ---- methods
    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return Mean.apply(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes or None)

    def astype(self, dtype):
        return Cast.apply(self, np.dtype(dtype))

    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def tanh(self):
        return Tanh.apply(self)

    def sigmoid(self):
        return Sigmoid.apply(self)

    def relu(self):
        return ReLU.apply(self)

    def softmax(self, axis=-1):
        from seqtool.core.functional import softmax

        return softmax(self, axis)

    def log_softmax(self, axis=-1):
        from seqtool.core.functional import log_softmax

        return log_softmax(self, axis)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """A new leaf Tensor holding a copy of `data` (Python floats become float32)."""
    return Tensor(_as_array(data, dtype, copy=True), requires_grad=requires_grad)


def _accumulate_leaf(leaf: Tensor, g: np.ndarray) -> None:
    if not leaf.requires_grad:
        return
    if leaf.grad is None:
        leaf.grad = g.astype(leaf.dtype, copy=True)  # own it: g may alias other arrays
    else:
        leaf.grad += g


def _lift(other, like: Tensor) -> Tensor:
    """Wrap a non-Tensor operand; constants take a floating Tensor's dtype (no silent upcast)
    and its device (CuPy refuses even a 0-d NumPy array in arithmetic with its arrays)."""
    if isinstance(other, Tensor):
        return other
    if is_device_array(other):
        return Tensor(other)
    dtype = like.dtype if like.dtype.kind in "fc" else None
    if is_device_array(like.data):
        return Tensor(asarray_on(other, like=like.data, dtype=dtype))
    return Tensor(np.asarray(other, dtype=dtype))


def _index_data(index):
    """Indices may contain Tensors (of ints); numpy wants arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def _toposort(root: Function) -> list:
    """Nodes reachable from root, every node after the nodes that produced its inputs."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in visited:
            continue
        if node._freed:
            raise RuntimeError(
                "backward through a graph whose saved arrays were already freed "
                "(backward was called on it before); build the graph again"
            )
        visited.add(node)
        stack.append((node, True))
        for p in node.parents:
            if p is not None and p._ctx is not None and p._ctx not in visited:
                stack.append((p._ctx, False))
    return order


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum g down to `shape`, undoing numpy broadcasting."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


class Function:
    """One op and, once applied with gradients on, one graph node (the "ctx").

    Subclasses override `forward(self, *args, **kwargs)` (Tensor positional args arrive as their
    ndarray) returning an ndarray or a tuple of them, and `backward(self, *grad_outputs)` (one entry
    per output, None for outputs that got no gradient) returning one gradient or None per positional
    forward arg.
    """

    _KEEP = frozenset({"parents", "needs_input_grad", "saved_tensors", "_n_out", "_freed"})

    def __init__(self):
        self.parents: tuple = ()
        self.needs_input_grad: tuple = ()
        self.saved_tensors: tuple = ()
        self._n_out = 1
        self._freed = False

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError

    def save_for_backward(self, *arrays) -> None:
        self.saved_tensors = arrays

    def _free(self) -> None:
        """Drop everything forward kept (saved arrays, attributes, inputs) once backward ran."""
        for name in [k for k in vars(self) if k not in self._KEEP]:
            delattr(self, name)
        self.saved_tensors = ()
        self.parents = ()
        self._freed = True

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls()
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = _grad_enabled and any(needs)
        ctx.needs_input_grad = needs if record else (False,) * len(args)
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        for k, v in kwargs.items():
            if isinstance(v, Tensor):
                if record and v.requires_grad:
                    raise TypeError(f"{cls.__name__}: keyword argument {k!r} cannot carry a gradient")
                kwargs[k] = v.data
        out = ctx.forward(*raw, **kwargs)
        multi = isinstance(out, tuple)
        outs = out if multi else (out,)
        tensors = []
        for i, o in enumerate(outs):
            t = Tensor.__new__(Tensor)
            t.data = o if hasattr(o, "ndim") and not isinstance(o, np.generic) else np.asarray(o)  # reductions give numpy scalars; keep ndarray
            t.grad = None
            t.requires_grad = record and t.data.dtype.kind in "fc"
            t._ctx = ctx if record else None
            t._idx = i
            tensors.append(t)
        if record:
            ctx.parents = tuple(a if isinstance(a, Tensor) else None for a in args)
            ctx._n_out = len(outs)
        else:
            ctx._free()
        return tuple(tensors) if multi else tensors[0]


# --------------------------------------------------------------------------------------------
# Core ops. Each forward and its backward sit together; grads are un-broadcast to input shapes.


class Add(Function):
    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        return _unbroadcast(g, sa), _unbroadcast(g, sb)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        return _unbroadcast(g, sa), _unbroadcast(-g, sb) if self.needs_input_grad[1] else None


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved_tensors
        ga = _unbroadcast(g * b, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(g * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved_tensors
        ga = _unbroadcast(g / b, a.shape) if self.needs_input_grad[0] else None
        gb = _unbroadcast(-g * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class Pow(Function):
    """a ** p for a constant exponent p."""

    def forward(self, a, p):
        self.save_for_backward(a)
        self.p = p
        return a**p

    def backward(self, g):
        (a,) = self.saved_tensors
        return g * self.p * a ** (self.p - 1), None


class Exp(Function):
    def forward(self, a):
        y = np.exp(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        return g * self.saved_tensors[0]


class Log(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return np.log(a)

    def backward(self, g):
        return g / self.saved_tensors[0]


class Tanh(Function):
    def forward(self, a):
        y = np.tanh(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g * (1 - y * y)


class Sigmoid(Function):
    def forward(self, a):
        y = expit(a)  # exact and stable for large |a|, keeps float32
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return g * y * (1 - y)


class ReLU(Function):
    def forward(self, a):
        self.save_for_backward(a > 0)
        return np.maximum(a, 0)

    def backward(self, g):
        return g * self.saved_tensors[0]


class Cast(Function):
    def forward(self, a, dtype):
        self.in_dtype = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return g.astype(self.in_dtype), None


def _norm_axes(axis, ndim) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(a % ndim for a in axes))


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, _norm_axes(axis, a.ndim), keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims and self.axes:
            g = np.expand_dims(g, self.axes)
        # a real array, not a stride-0 view: kernels downstream may want contiguous memory
        return np.broadcast_to(g, self.shape).copy()  # copy() is C-ordered


class Mean(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axes, self.keepdims = a.shape, _norm_axes(axis, a.ndim), keepdims
        self.count = int(np.prod([a.shape[i] for i in self.axes]))
        return a.mean(axis=axis, keepdims=keepdims)

    def backward(self, g):
        if not self.keepdims and self.axes:
            g = np.expand_dims(g, self.axes)
        g = g * (1.0 / self.count)  # Python float: keeps g's dtype
        return np.broadcast_to(g, self.shape).copy()  # copy() is C-ordered


class Reshape(Function):
    def forward(self, a, shape):
        self.in_shape = a.shape
        return a.reshape(shape)

    def backward(self, g):
        return g.reshape(self.in_shape), None


class Transpose(Function):
    def forward(self, a, axes=None):
        self.axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(ax % a.ndim for ax in axes)
        return a.transpose(self.axes)

    def backward(self, g):
        return g.transpose(np.argsort(self.axes)), None


def _int_array(p) -> bool:
    if isinstance(p, list):
        p = np.asarray(p)
    return hasattr(p, "dtype") and hasattr(p, "ndim") and p.ndim > 0 and p.dtype.kind in "iu"


class GetItem(Function):
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, g):
        ga = zeros(self.shape, self.dtype, like=g)
        idx = self.index
        parts = idx if isinstance(idx, tuple) else (idx,)
        if any(_int_array(p) for p in parts):
            scatter_add(ga, idx, g)  # integer-array indexing may repeat positions
        else:
            ga[idx] = g  # basic indexing selects each position at most once
        return ga, None


class MatMul(Function):
    """a @ b; N-d @ 2-d runs as one GEMM for each gradient."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.saved_tensors
        ga = gb = None
        if a.ndim == 1 or b.ndim == 1:  # vector cases: promote to matrices like np.matmul
            a2 = a[None, :] if a.ndim == 1 else a
            b2 = b[:, None] if b.ndim == 1 else b
            g2 = g
            if a.ndim == 1:
                g2 = np.expand_dims(g2, -2)
            if b.ndim == 1:
                g2 = np.expand_dims(g2, -1)
            if self.needs_input_grad[0]:
                ga = _unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
            if self.needs_input_grad[1]:
                gb = _unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
            return ga, gb
        if self.needs_input_grad[0]:
            ga = _unbroadcast(g @ np.swapaxes(b, -1, -2), a.shape)
        if self.needs_input_grad[1]:
            if b.ndim == 2:  # (..., K) @ (K, N): fold the leading axes into one GEMM
                gb = a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])
            else:
                gb = _unbroadcast(np.swapaxes(a, -1, -2) @ g, b.shape)
        return ga, gb
