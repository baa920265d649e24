"""Finite-difference gradient checks (float64), used by the tests and by `seqtool check`."""

from __future__ import annotations

import numpy as np

from seqtool.core.autograd import Tensor, no_grad

__all__ = ["numeric_grad", "gradcheck"]


def numeric_grad(f, arrays, eps: float = 1e-6) -> list:
    """Central differences of the scalar f(*arrays) with respect to each floating array.

    The arrays are perturbed in place, one element at a time, and restored; non-floating arrays
    (indices) get None. Returns one float64 gradient (or None) per array.
    """
    grads = []
    for a in arrays:
        if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"):
            grads.append(None)
            continue
        g = np.zeros(a.shape, dtype=np.float64)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        if not np.shares_memory(flat, a):
            raise ValueError("numeric_grad needs contiguous arrays (perturbed in place)")
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            fp = float(f(*arrays))
            flat[i] = old - eps
            fm = float(f(*arrays))
            flat[i] = old
            gflat[i] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def _flatten(out) -> list:
    """Tensors in a nested tuple/list output, e.g. LSTM's (output, (h_n, c_n))."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    return []  # None or non-Tensor parts carry no gradient


def _checked_inputs(inputs) -> tuple[list, list]:
    """(arguments, indices of those checked): float arrays become float64 Tensors to check."""
    args, checked = [], []
    for i, x in enumerate(inputs):
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            x = Tensor(np.array(x, dtype=np.float64), requires_grad=True)
        elif isinstance(x, Tensor) and x.requires_grad and x.dtype != np.float64:
            raise TypeError(
                f"gradcheck input {i} is {x.dtype}; use float64 (e.g. module.to_dtype(np.float64))"
            )
        if isinstance(x, Tensor) and x.requires_grad:
            if not x.data.flags.c_contiguous:
                x.data = np.array(x.data, order="C")  # ascontiguousarray would make 0-d 1-d
            checked.append(i)
        args.append(x)
    return args, checked


class _Projection:
    """A fixed random projection of every output onto one scalar, so each element is checked."""

    def __init__(self, seed: int):
        self.rng, self.projections = np.random.default_rng(seed), []

    def __call__(self, outs) -> Tensor:
        total = None
        for k, o in enumerate(outs):
            if k == len(self.projections):
                self.projections.append(self.rng.standard_normal(o.shape))
            term = (o * self.projections[k]).sum()
            total = term if total is None else total + term
        return total


def _both_gradients(fn, args, checked, eps: float, seed: int) -> tuple[list, list]:
    """(analytic, numeric) gradients of the projected output for the checked arguments."""
    scalar = _Projection(seed)
    saved_grads = [args[i].grad for i in checked]
    for i in checked:
        args[i].grad = None
    try:
        outs = _flatten(fn(*args))
        if not outs:
            raise ValueError("gradcheck: fn returned no Tensor")
        loss = scalar(outs)
        if not loss.requires_grad:
            raise ValueError("gradcheck: output does not depend on any checked input")
        loss.backward()
        analytic = [args[i].grad if args[i].grad is not None else np.zeros(args[i].shape) for i in checked]

        def f(*_arrays):
            with no_grad():
                return scalar(_flatten(fn(*args))).item()

        numeric = numeric_grad(f, [args[i].data for i in checked], eps)
    finally:
        for i, g in zip(checked, saved_grads):
            args[i].grad = g
    return analytic, numeric


def gradcheck(fn, inputs, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7, seed: int = 0):
    """Compare autograd gradients of fn with central differences, for every input that wants one.

    fn maps the inputs to a Tensor or a (nested) tuple of Tensors. Every output is reduced to one
    scalar with a fixed random projection, so every output element is checked. inputs: float
    ndarrays (checked, as float64 Tensors), float64 Tensors (used as they are, so parameters a
    closure refers to can be checked; checked iff requires_grad) and anything else (passed as is).

    Returns (ok, max_rel_err, details): ok iff every gradient is within atol + rtol * |numeric|
    elementwise; max_rel_err = max |analytic - numeric| / max(max |numeric|, atol) over inputs;
    details has one dict per checked input.
    """
    args, checked = _checked_inputs(inputs)
    analytic, numeric = _both_gradients(fn, args, checked, eps, seed)
    ok, max_rel, details = True, 0.0, []
    for i, a, n in zip(checked, analytic, numeric):
        diff = np.abs(a - n)
        close = bool(np.all(diff <= atol + rtol * np.abs(n)))
        rel = float(diff.max() / max(np.abs(n).max(), atol)) if diff.size else 0.0
        ok &= close
        max_rel = max(max_rel, rel)
        details.append({
            "input": i, "shape": tuple(a.shape), "ok": close, "max_abs_err": float(diff.max(initial=0.0)),
            "max_rel_err": rel,
        })  # fmt: skip
    return ok, max_rel, details
