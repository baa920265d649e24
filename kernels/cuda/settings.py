"""How the CUDA recurrences run: a small settings object, passed down by scope, not a flag.

    with settings.using(settings.Recurrence("steps")):
        ...  # every CUDA recurrence inside runs the per-step kernels

Modes:
  auto   the grid-wide persistent kernel (one cooperative launch per layer, direction and
         pass); where the device refuses the cooperative launch, the one-block kernel
  grid   the grid-wide persistent kernel only (a refused launch is an error)
  block  one block steps through the whole sequence (one ordinary launch; no grid sync)
  steps  a GEMM and a gate kernel per time step (for comparisons: O(T) launches)
The setting is a context variable: callers (seqtool.diagnostics.bench) scope it, kernels only read it.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

MODES = ("auto", "grid", "block", "steps")


@dataclass(frozen=True)
class Recurrence:
    mode: str = "auto"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown recurrence mode {self.mode!r}; one of {', '.join(MODES)}")

    @property
    def whole_sequence(self) -> bool:
        """One launch for the whole recurrence (every mode but "steps")."""
        return self.mode != "steps"


_current: contextvars.ContextVar = contextvars.ContextVar("seqtool_cuda_recurrence", default=Recurrence())


def current() -> Recurrence:
    return _current.get()


@contextlib.contextmanager
def using(recurrence: Recurrence):
    token = _current.set(recurrence)
    try:
        yield recurrence
    finally:
        _current.reset(token)
