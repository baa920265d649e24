"""Module and Parameter: registration by attribute, names like torch ("encoder.weight").

Parameters and sub-modules are registered when assigned as attributes, in assignment order, so
`named_parameters()` and `state_dict()` list them in a stable order that file formats rely on.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from seqtool.core.autograd import Tensor
from seqtool.errors import SeqtoolError
from seqtool.core.xp import asarray_on, to_host

__all__ = ["Parameter", "Module", "ModuleList", "Sequential"]


class Parameter(Tensor):
    """A leaf Tensor that a Module registers and an optimizer updates."""

    def __init__(self, data, requires_grad: bool = True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor") :]


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None and isinstance(value, (Parameter, Module)):
            raise AttributeError(f"call super().__init__() in {type(self).__name__}.__init__ first")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r}; use Parameter")
            params[name] = None  # e.g. bias=None: keeps the attribute, lists nothing
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r}")
            del self._modules[name]
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self.__dict__.get("_parameters", {}).pop(name, None)
        self.__dict__.get("_modules", {}).pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every sub-module, depth first, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator[Module]:
        yield from (m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) in registration order; a shared parameter is listed once."""
        seen = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def on_device(self, a):
        """Array `a` on the device of this module's parameters: inputs read on the host meet
        weights that --device cuda has put on a GPU (a no-op on the CPU). A Tensor is returned
        as it is (it already lives where the graph that made it does)."""
        first = next(self.parameters(), None)
        if first is None or isinstance(a, Tensor):
            return a
        return asarray_on(a, like=first.data)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ---- modes and gradients
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to_dtype(self, dtype) -> Module:
        """Cast every parameter in place (same Parameter objects), e.g. float64 for gradchecks."""
        dtype = np.dtype(dtype)
        for p in self.parameters():
            p.data = p.data.astype(dtype, copy=False)
            if p.grad is not None:
                p.grad = p.grad.astype(dtype, copy=False)
        return self

    # ---- weights in and out
    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple[list, list]:
        """Copy arrays into the parameters (cast to their dtype); returns (missing, unexpected).

        Everything is checked before anything is written, so a failed load changes nothing.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and missing:
            raise SeqtoolError(f"state_dict is missing key {missing[0]!r} ({len(missing)} missing)")
        if strict and unexpected:
            raise SeqtoolError(f"state_dict has unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)")
        arrays = {}
        for name, p in own.items():
            if name not in state:
                continue
            v = state[name]
            a = to_host(v.data if isinstance(v, Tensor) else v)
            if a.shape != p.shape:
                raise SeqtoolError(f"state_dict key {name!r}: expected shape {p.shape}, got {a.shape}")
            if a.dtype.kind not in "fiub":
                raise SeqtoolError(f"state_dict key {name!r}: not a numeric array ({a.dtype})")
            arrays[name] = a
        for name, a in arrays.items():
            own[name].data[...] = asarray_on(a, like=own[name].data)  # in place: optimizers keep references
        return missing, unexpected

    # ---- display
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items() if m is not None]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of sub-modules named "0", "1", ... (so "layers.0.weight")."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        items = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(items[i])
        return items[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Calls its modules in order, each on the previous one's output."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
