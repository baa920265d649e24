"""Memory estimates checked before allocating, so an absurd size is a one-line error.

Without them ``--hidden 100000`` asked NumPy for 298 GiB and died with a MemoryError traceback
(or, with overcommit, was killed later). The estimates are upper bounds of the order of
magnitude, not exact accounting: they only have to tell "fits" from "cannot possibly fit".
"""

from __future__ import annotations

import os

from seqtool.errors import SeqtoolError

__all__ = ["GATES", "recurrent_param_count", "training_bytes", "machine_memory", "available_memory",
           "format_bytes", "require_memory"]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# A parameter in training: itself, its gradient, two optimizer moments (Adam), and the float64
# array it is drawn in before the cast to float32.
TRAINING_COPIES = 4
_FLOAT32 = 4
_FLOAT64 = 8


def recurrent_param_count(cell: str, input_size: int, hidden: int, layers: int = 1,
                          bidirectional: bool = False) -> int:
    """Weights and biases of a stacked recurrent network, as seqtool.nn builds it."""
    g, dirs = GATES[cell], 2 if bidirectional else 1
    total = 0
    for layer in range(layers):
        d_in = input_size if layer == 0 else hidden * dirs
        total += dirs * g * hidden * (d_in + hidden + 2)
    return total


def training_bytes(n_params: int, largest_matrix: int = 0) -> int:
    """Bytes to train `n_params` float32 parameters, plus the float64 draw of the largest matrix."""
    return n_params * _FLOAT32 * TRAINING_COPIES + largest_matrix * _FLOAT64


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_memory() -> int | None:
    """Physical memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _meminfo("MemTotal")


def available_memory() -> int | None:
    """Memory a new allocation can get without swapping: MemAvailable, else physical memory."""
    return _meminfo("MemAvailable") or machine_memory()


def format_bytes(n: float) -> str:
    for unit, size in (("EiB", 2 ** 60), ("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}" if n < 1000 * 2 ** 60 else f"{n / size:.0f} {unit}"
    return f"{int(n)} bytes"


def require_memory(needed: int, what: str) -> None:
    """Raise SeqtoolError "WHAT needs ~N GiB; this machine has M GiB" when `needed` bytes cannot
    fit in the memory available now. `what` names the cause the user can change, e.g.
    "--hidden 100000" or "an LSTM of 2 x 100000 units"."""
    available = available_memory()
    if available is None or needed <= available:
        return
    total = machine_memory() or available
    free = f" ({format_bytes(available)} available)" if available < 0.9 * total else ""
    raise SeqtoolError(f"{what} needs ~{format_bytes(needed)}; this machine has "
                       f"{format_bytes(total)}{free}")
