"""Optimizers, gradient clipping and learning-rate schedules with torch.optim semantics.

Parameters are duck-typed: any object with ``.data`` (a NumPy array, updated in place because
layers hold references to it) and ``.grad`` (an array of the same shape, or None to skip it).
All hyperparameters enter the array arithmetic as Python floats so float32 parameters stay
float32 (NumPy treats Python scalars as "weak"); intermediate results go to reusable scratch
buffers instead of fresh temporaries, since ``step()`` runs every training step.

State is kept per parameter, as in PyTorch: a parameter whose grad is None is skipped and its
step counter does not advance. ``state_dict()`` is JSON plus NumPy arrays so it can go into a
checkpoint (JSON metadata + safetensors/npz) and resume bit-identically.
"""

from __future__ import annotations

import math

import numpy as np

from seqtool.core.xp import asarray_on
from seqtool.errors import SeqtoolError, UsageError

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "clip_grad_norm",
    "clip_grad_value",
    "StepLR",
    "ReduceLROnPlateau",
    "make_optimizer",
    "OPTIMIZERS",
]


def _average_square(avg, d, decay: float, scratch) -> None:
    """avg = decay * avg + (1 - decay) * d**2, in place, in the order torch computes it."""
    avg *= decay
    np.multiply(d, d, out=scratch)
    scratch *= 1.0 - decay
    avg += scratch


_HYPER_NAMES = {"eps": "epsilon"}  # as torch.optim words its errors


def _check(ok: bool, what: str, value) -> None:
    # Hyperparameters come from CLI options, so a bad one is a usage error (exit 2).
    if not ok:
        raise UsageError(f"invalid {what}: {value}")


def _float_to_json(x: float):
    # Strict JSON has no inf/nan; spell them as strings that float() reads back.
    x = float(x)
    return x if math.isfinite(x) else repr(x)


class Optimizer:
    """Base class: a flat list of parameters, one ``lr``, per-parameter state.

    Subclasses list their hyperparameter attribute names in ``_hyper`` (saved in the
    state dict) and implement ``_update(data, grad, state, lr)``.
    """

    _hyper: tuple[str, ...] = ()

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("optimizer got the same parameter more than once")
        _check(0.0 <= lr < math.inf, "learning rate", lr)
        self.lr = float(lr)
        self.state: list[dict] = [{} for _ in self.params]
        # (shape, dtype, slot) -> buffer; shared by parameters of equal shape because
        # parameters are updated one after another.
        self._scratch: dict = {}

    def _set_nonnegative(self, **values) -> None:
        """Check each hyperparameter is >= 0 (a usage error otherwise) and keep it as a float."""
        for name, value in values.items():
            _check(0.0 <= value < math.inf, f"{_HYPER_NAMES.get(name, name)} value", value)
            setattr(self, name, float(value))

    def _tmp(self, like: np.ndarray, slot: int) -> np.ndarray:
        key = (like.shape, like.dtype.str, slot)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = np.empty_like(like)  # on like's device
        return buf

    def _decayed_grad(self, p: np.ndarray, g: np.ndarray, wd: float) -> np.ndarray:
        """grad + wd * param in scratch slot 0 (never modifies .grad), or grad itself."""
        if wd == 0.0:
            return g
        d = self._tmp(p, 0)
        np.multiply(p, wd, out=d)
        d += g
        return d

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure() if given."""
        loss = closure() if closure is not None else None
        lr = float(self.lr)  # may have been set to an np.float64 by a schedule
        for p, st in zip(self.params, self.state):
            g = p.grad
            if g is None:
                continue
            data = p.data
            if g.shape != data.shape:
                raise ValueError(f"gradient shape {g.shape} does not match parameter shape {data.shape}")
            st["step"] = st.get("step", 0) + 1
            self._update(data, g, st, lr)
        return loss

    def _update(self, p: np.ndarray, g: np.ndarray, st: dict, lr: float) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch: drop the gradients (default) or fill them with zeros in place."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad[...] = 0

    # -- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"scalars": json-able dict, "arrays": {"exp_avg.3": ndarray, ...}}`` (copies)."""
        scalars: dict = {"type": type(self).__name__, "n_params": len(self.params), "lr": float(self.lr)}
        for name in self._hyper:
            v = getattr(self, name)
            scalars[name] = list(v) if isinstance(v, tuple) else v
        arrays: dict = {}
        for i, st in enumerate(self.state):
            for k, v in st.items():
                if hasattr(v, "shape"):  # a NumPy or CuPy array
                    arrays[f"{k}.{i}"] = v.copy()
                else:
                    scalars[f"{k}.{i}"] = v
        return {"scalars": scalars, "arrays": arrays}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore lr, hyperparameters and per-parameter state from ``state_dict()``."""
        scalars = state_dict["scalars"]
        arrays = state_dict.get("arrays", {})
        if scalars.get("type") != type(self).__name__ or scalars.get("n_params") != len(self.params):
            raise SeqtoolError(
                f"optimizer state is for {scalars.get('type')} with {scalars.get('n_params')} parameters, "
                f"not {type(self).__name__} with {len(self.params)}"
            )
        state: list[dict] = [{} for _ in self.params]
        for key, v in scalars.items():
            name, _, idx = key.rpartition(".")
            if name and idx.isdigit():
                state[int(idx)][name] = int(v)
        for key, v in arrays.items():
            name, _, idx = key.rpartition(".")
            i = int(idx)
            ref = self.params[i].data
            v = asarray_on(v, like=ref)
            if v.shape != ref.shape:
                raise SeqtoolError(
                    f"optimizer state {key} has shape {v.shape}, parameter {i} has shape {ref.shape}"
                )
            # Own a copy in the parameter's dtype so later in-place updates touch nothing else.
            state[i][name] = v.astype(ref.dtype, copy=True)
        self.lr = float(scalars["lr"])
        for name in self._hyper:
            v = scalars[name]
            setattr(self, name, tuple(v) if isinstance(v, list) else v)
        self.state = state


class SGD(Optimizer):
    """torch.optim.SGD: momentum buffer starts as the first (decayed) gradient."""

    _hyper = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self._set_nonnegative(momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise UsageError("Nesterov momentum requires a momentum and zero dampening")
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)

    def _update(self, p, g, st, lr):
        mu = float(self.momentum)
        d = self._decayed_grad(p, g, float(self.weight_decay))
        if mu != 0.0:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = d.astype(p.dtype, copy=True)
            else:
                buf *= mu
                damp = 1.0 - float(self.dampening)
                if damp == 1.0:
                    buf += d
                else:
                    t = self._tmp(p, 1)
                    np.multiply(d, damp, out=t)
                    buf += t
            if self.nesterov:
                t = self._tmp(p, 1)
                np.multiply(buf, mu, out=t)
                t += d
                d = t
            else:
                d = buf
        t = self._tmp(p, 1)
        np.multiply(d, lr, out=t)
        p -= t


# Below this many elements the NumPy update is as fast as a compiled call.
_FUSED_MIN = 16384


def _fused_ok(*arrays) -> bool:
    """Whether the compiled update (kernels/optim.py) applies: large contiguous host arrays of
    one float dtype."""
    p = arrays[0]
    return (p.size >= _FUSED_MIN and p.dtype in (np.float32, np.float64)
            and all(type(a) is np.ndarray and a.dtype == p.dtype and a.flags.c_contiguous
                    for a in arrays))


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient), optional AMSGrad."""

    _hyper = ("betas", "eps", "weight_decay", "amsgrad")
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(params, lr)
        self._set_nonnegative(eps=eps)
        _check(0.0 <= betas[0] < 1.0, "beta parameter at index 0", betas[0])
        _check(0.0 <= betas[1] < 1.0, "beta parameter at index 1", betas[1])
        self._set_nonnegative(weight_decay=weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.amsgrad = bool(amsgrad)

    def _update(self, p, g, st, lr):
        b1, b2 = float(self.betas[0]), float(self.betas[1])
        wd = float(self.weight_decay)
        if self._decoupled:
            if wd != 0.0:
                p *= 1.0 - lr * wd
            d = g
        else:
            d = self._decayed_grad(p, g, wd)
        if "exp_avg" not in st:
            st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
            if self.amsgrad:
                st["max_exp_avg_sq"] = np.zeros_like(p)
        m, v = st["exp_avg"], st["exp_avg_sq"]
        step = st["step"]
        step_size = lr / (1.0 - b1 ** step)
        bc2_sqrt = math.sqrt(1.0 - b2 ** step)
        if _fused_ok(p, d, m, v):
            from seqtool.kernels import num_threads
            from seqtool.kernels.optim import adam_update

            cast = p.dtype.type  # NumPy casts Python-float operands to the array's dtype
            vmax = st["max_exp_avg_sq"] if self.amsgrad else v
            adam_update(p.reshape(-1), d.reshape(-1), m.reshape(-1), v.reshape(-1),
                        vmax.reshape(-1), cast(1.0 - b1), cast(b2), cast(1.0 - b2),
                        cast(bc2_sqrt), cast(self.eps), cast(step_size), self.amsgrad,
                        num_threads())
            return
        t = self._tmp(p, 1)
        # m.lerp_(d, 1 - b1) as torch does
        np.subtract(d, m, out=t)
        t *= 1.0 - b1
        m += t
        _average_square(v, d, b2, t)
        if self.amsgrad:
            vmax = st["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        np.sqrt(v, out=t)
        t /= bc2_sqrt
        t += float(self.eps)
        np.divide(m, t, out=t)
        t *= step_size
        p -= t


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay ``p *= 1 - lr * wd`` before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class Adagrad(Optimizer):
    """torch.optim.Adagrad."""

    _hyper = ("lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10):
        super().__init__(params, lr)
        self._set_nonnegative(lr_decay=lr_decay, weight_decay=weight_decay,
                              initial_accumulator_value=initial_accumulator_value, eps=eps)

    def _update(self, p, g, st, lr):
        d = self._decayed_grad(p, g, float(self.weight_decay))
        if "sum" not in st:
            st["sum"] = np.full_like(p, float(self.initial_accumulator_value))
        s = st["sum"]
        clr = lr / (1.0 + (st["step"] - 1) * float(self.lr_decay))
        t = self._tmp(p, 1)
        np.multiply(d, d, out=t)
        s += t
        np.sqrt(s, out=t)
        t += float(self.eps)
        np.divide(d, t, out=t)
        t *= clr
        p -= t


class Adadelta(Optimizer):
    """torch.optim.Adadelta."""

    _hyper = ("rho", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, lr)
        _check(0.0 <= rho <= 1.0, "rho value", rho)
        self.rho = float(rho)
        self._set_nonnegative(eps=eps, weight_decay=weight_decay)

    def _update(self, p, g, st, lr):
        rho, eps = float(self.rho), float(self.eps)
        d = self._decayed_grad(p, g, float(self.weight_decay))
        if "square_avg" not in st:
            st["square_avg"] = np.zeros_like(p)
            st["acc_delta"] = np.zeros_like(p)
        sq, acc = st["square_avg"], st["acc_delta"]
        std, delta = self._tmp(p, 1), self._tmp(p, 2)
        _average_square(sq, d, rho, std)
        np.add(sq, eps, out=std)
        np.sqrt(std, out=std)
        np.add(acc, eps, out=delta)
        np.sqrt(delta, out=delta)
        delta /= std
        delta *= d
        acc *= rho
        np.multiply(delta, delta, out=std)
        std *= 1.0 - rho
        acc += std
        delta *= lr
        p -= delta


class RMSprop(Optimizer):
    """torch.optim.RMSprop, optionally centered and with momentum."""

    _hyper = ("alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__(params, lr)
        self._set_nonnegative(eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        self.centered = bool(centered)

    def _update(self, p, g, st, lr):
        alpha, mu = float(self.alpha), float(self.momentum)
        d = self._decayed_grad(p, g, float(self.weight_decay))
        if "square_avg" not in st:
            st["square_avg"] = np.zeros_like(p)
            if mu > 0.0:
                st["momentum_buffer"] = np.zeros_like(p)
            if self.centered:
                st["grad_avg"] = np.zeros_like(p)
        sq = st["square_avg"]
        t = self._tmp(p, 1)
        _average_square(sq, d, alpha, t)
        if self.centered:
            ga = st["grad_avg"]
            np.subtract(d, ga, out=t)  # ga.lerp_(d, 1 - alpha)
            t *= 1.0 - alpha
            ga += t
            np.multiply(ga, ga, out=t)
            np.subtract(sq, t, out=t)
            np.sqrt(t, out=t)
        else:
            np.sqrt(sq, out=t)
        t += float(self.eps)
        np.divide(d, t, out=t)
        if mu > 0.0:
            buf = st["momentum_buffer"]
            buf *= mu
            buf += t
            np.multiply(buf, lr, out=t)
        else:
            t *= lr
        p -= t


# -- gradient clipping ---------------------------------------------------------------------


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


def clip_grad_norm(params, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale all gradients together so their global norm is at most ``max_norm``.

    As torch.nn.utils.clip_grad_norm_: the norm of the per-parameter norms, coefficient
    ``max_norm / (total + 1e-6)`` applied only when below 1. Returns the norm before clipping
    (inf or nan if a gradient is non-finite; the gradients are then scaled like torch does,
    which poisons them, and the caller's NaN handling takes over).
    """
    grads = _grads(params)
    norm_type = float(norm_type)
    _check(norm_type > 0.0, "norm_type", norm_type)
    if not grads:
        return 0.0
    # an inf/nan norm is returned for the caller to act on, not warned about
    with np.errstate(over="ignore", invalid="ignore"):
        total = _total_norm(grads, norm_type)
        coef = float(max_norm) / (total + 1e-6)
        if not coef >= 1.0:  # also true for nan
            for g in grads:
                g *= coef
    return total


def _total_norm(grads, norm_type: float) -> float:
    if math.isinf(norm_type):
        # max(max, -min) avoids an abs() temporary; np.max (unlike Python max) propagates nan
        total = float(np.max([max(float(g.max()), float(-g.min())) if g.size else 0.0 for g in grads]))
    else:
        # per-array norms (2-norm via BLAS dot), then the norm of those, in float64
        norms = [float(np.linalg.norm(g.ravel(), norm_type)) if g.size else 0.0 for g in grads]
        total = float(np.linalg.norm(np.array(norms, dtype=np.float64), norm_type))
    return total


def clip_grad_value(params, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    c = float(clip_value)
    for g in _grads(params):
        np.clip(g, -c, c, out=g)


# -- learning-rate schedules ---------------------------------------------------------------


class StepLR:
    """torch.optim.lr_scheduler.StepLR: ``lr *= gamma`` every ``step_size`` calls to step().

    Multiplicative on the optimizer's current lr (torch's chainable form), so an lr halved by
    a NaN rollback stays halved.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        _check(int(step_size) >= 1, "step_size", step_size)
        self.optimizer = optimizer
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self) -> None:
        self.last_epoch += 1
        if self.last_epoch % self.step_size == 0:
            self.optimizer.lr = float(self.optimizer.lr) * self.gamma

    def get_last_lr(self) -> list[float]:
        return [float(self.optimizer.lr)]

    def state_dict(self) -> dict:
        return {"type": "StepLR", "step_size": self.step_size, "gamma": self.gamma,
                "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.step_size = int(state["step_size"])
        self.gamma = float(state["gamma"])
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])


class ReduceLROnPlateau:
    """torch.optim.lr_scheduler.ReduceLROnPlateau: ``lr = max(lr * factor, min_lr)`` after more
    than ``patience`` steps without improvement, then ``cooldown`` steps of grace."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float = 0.0, eps: float = 1e-8):
        _check(factor < 1.0, "factor (must be < 1.0)", factor)
        _check(mode in ("min", "max"), "mode", mode)
        _check(threshold_mode in ("rel", "abs"), "threshold_mode", threshold_mode)
        self.optimizer = optimizer
        self.mode = mode
        self.factor = float(factor)
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.eps = float(eps)
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metric: float) -> None:
        current = float(metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = float(self.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:  # torch skips changes too small to matter
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def get_last_lr(self) -> list[float]:
        return [float(self.optimizer.lr)]

    _keys = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps",
             "last_epoch", "num_bad_epochs", "cooldown_counter")

    def state_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._keys}
        d["type"] = "ReduceLROnPlateau"
        d["best"] = _float_to_json(self.best)
        return d

    def load_state_dict(self, state: dict) -> None:
        for k in self._keys:
            setattr(self, k, state[k])
        self.best = float(state["best"])


# -- factory for the CLI --------------------------------------------------------------------

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adagrad": Adagrad, "adadelta": Adadelta, "rmsprop": RMSprop,
              "adamw": AdamW}


def make_optimizer(name: str, params, lr: float | None = None, **kw) -> Optimizer:
    """Build an optimizer by CLI name; ``lr=None`` keeps that optimizer's (torch) default."""
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise UsageError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if lr is not None:
        kw["lr"] = lr
    return cls(params, **kw)
