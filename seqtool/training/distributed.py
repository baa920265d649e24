"""Data-parallel training over MPI (``mpiexec -n N seqtool train ...``), and the one-process
world that stands in for it otherwise, so the Trainer is written once.

A launch is recognised from the environment mpiexec gives its processes (MPICH/Hydra: PMI_RANK,
PMI_SIZE; Open MPI: OMPI_COMM_WORLD_*; PMIx: PMIX_RANK) before mpi4py is imported: without an
MPI launch (or without the ``mpi`` extra) nothing here touches MPI.

What one step does on N ranks (``Replicas``): every rank reads the same global batch, trains on
its contiguous slice of the items (``task.split_batch``), scales its loss by its slice's share of
the global loss's denominator (tokens or items, as the task's loss averages), and one in-place
Allreduce over a single flat buffer sums the gradients together with a few control numbers (the
loss, Ctrl-C, rank 0's time budget). Every rank then clips and steps identically. Collectives are
non-blocking calls polled with a watchdog that names a rank that died on this machine and gives
up after SEQTOOL_MPI_TIMEOUT seconds (default 600) without an answer.

Validation is split the same way (``Replicas.evaluate``): each rank evaluates its deterministic
share of the held-out data (``task.evaluate_part``), rank 0 merges the parts
(``task.merge_validation``) and broadcasts the result, and every rank adopts it
(``task.adopt_validation``), so decisions and task state (e.g. tuned decoding) agree everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np

from seqtool.errors import SeqtoolError

__all__ = ["launched_by_mpi", "current_world", "start_world", "Solo", "MPIWorld", "Replicas",
           "split_bounds", "split_weighted", "split_items", "PeerFailure", "StartupFailure"]

MPI_ENV_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
DEFAULT_TIMEOUT_S = 600.0


def launched_by_mpi(environ=None) -> bool:
    """True in a process that mpiexec (MPICH, Open MPI, PMIx launchers) started."""
    environ = os.environ if environ is None else environ
    return any(k in environ for k in MPI_ENV_VARS)


class PeerFailure(SeqtoolError):
    """Another rank died or stopped answering; this rank cannot go on."""


class StartupFailure(SeqtoolError):
    """Set-up failed on some rank(s); every rank knows, rank 0 reports it (exit ``code``)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- batch slices


def split_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges of n items for `parts` ranks, sizes differing by at most one."""
    cuts = [(n * r) // parts for r in range(parts + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def split_weighted(weights, parts: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges of items for `parts` ranks with near-equal total weight (e.g.
    the frames of validation recordings): each item goes to the part its weight's midpoint
    falls in, so a part exceeds its share by at most the largest item's weight."""
    w = np.asarray(weights, np.float64)
    middles = np.cumsum(w) - w / 2
    total = float(w.sum())
    cuts = [0] + [int(np.searchsorted(middles, total * r / parts)) for r in range(1, parts)] + [len(w)]
    return list(zip(cuts[:-1], cuts[1:]))


def split_items(batch: tuple, axes: tuple, parts: int) -> list[tuple]:
    """`batch` cut into `parts` slices of its items: element i along axis ``axes[i]`` (None
    elements stay None). The item count is the length of the first element's axis."""
    n = batch[0].shape[axes[0]]
    out = []
    for lo, hi in split_bounds(n, parts):
        out.append(tuple(None if a is None else np.take(a, np.arange(lo, hi), axis=ax)
                         for a, ax in zip(batch, axes)))
    return out


# ---------------------------------------------------------------- worlds


class Solo:
    """The world of a plain (non-MPI) run: one rank, collectives are identities."""

    rank, size, local_size, is_root = 0, 1, 1, True

    def sum_(self, buf: np.ndarray, what: str = "gradients") -> np.ndarray:
        return buf

    def bcast(self, obj, what: str = "state"):
        return obj

    def allgather(self, obj, what: str = "state") -> list:
        return [obj]

    def gather(self, obj, what: str = "state") -> list:
        return [obj]

    def check_start(self, fingerprint: dict | None, error: tuple | None = None) -> None:
        if error is not None:
            raise StartupFailure(error[0], error[1])


class MPIWorld:
    """MPI_COMM_WORLD through mpi4py, with polled collectives and one-line failure reports."""

    def __init__(self, timeout: float | None = None):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()
        self.timeout = float(os.environ.get("SEQTOOL_MPI_TIMEOUT", timeout or DEFAULT_TIMEOUT_S))
        self.started = False  # True once every rank passed check_start
        self._peers = None  # (host, pid) of every rank, for the watchdog; unknown until gathered
        self._peers = self.allgather((socket.gethostname(), os.getpid()), "start-up")

    # ---- collectives (non-blocking, polled by the watchdog)

    def _wait(self, request, what: str) -> None:
        t0 = time.monotonic()
        next_check, spins = t0 + 1.0, 0
        while not request.Test():
            spins += 1
            if spins > 2000:  # a few ms of spinning, then give the cores to the other ranks
                time.sleep(0.001)
            now = time.monotonic()
            if now >= next_check:
                self._check_peers(what)
                next_check = now + 1.0
                if now - t0 > self.timeout:
                    raise PeerFailure(f"no answer from every rank for {self.timeout:g} s during {what} "
                                      "(a rank is stuck or its host is gone; SEQTOOL_MPI_TIMEOUT sets the limit)")

    def _check_peers(self, what: str) -> None:
        """A rank on this host whose process is gone (or a zombie) is named and ends the run."""
        if not self._peers:
            return
        here = socket.gethostname()
        for r, (host, pid) in enumerate(self._peers):
            if r != self.rank and host == here and not _alive(pid):
                raise PeerFailure(f"rank {r} (pid {pid}) died during {what}")

    def sum_(self, buf: np.ndarray, what: str = "gradients") -> np.ndarray:
        """In-place sum of `buf` over all ranks (one Allreduce)."""
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)
        return buf

    def bcast(self, obj, what: str = "state"):
        """Rank 0's `obj` on every rank (pickled; objects here are arrays and plain data)."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.is_root else b""
        n = np.array([len(data)], np.int64)
        self._wait(self.comm.Ibcast(n, root=0), what)
        buf = np.frombuffer(data, np.uint8).copy() if self.is_root else np.empty(int(n[0]), np.uint8)
        self._wait(self.comm.Ibcast(buf, root=0), what)
        return obj if self.is_root else pickle.loads(buf.tobytes())

    def allgather(self, obj, what: str = "state") -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        counts = np.zeros(self.size, np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], np.int64), counts), what)
        out = np.empty(int(counts.sum()), np.uint8)
        self._wait(self.comm.Iallgatherv(data, [out, counts.tolist()]), what)
        cuts = np.concatenate([[0], np.cumsum(counts)])
        return [pickle.loads(out[a:b].tobytes()) for a, b in zip(cuts[:-1], cuts[1:])]

    def gather(self, obj, what: str = "state") -> list | None:
        """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        counts = np.zeros(self.size, np.int64) if self.is_root else None
        self._wait(self.comm.Igather(np.array([data.size], np.int64), counts, root=0), what)
        if not self.is_root:
            self._wait(self.comm.Igatherv(data, None, root=0), what)
            return None
        out = np.empty(int(counts.sum()), np.uint8)
        self._wait(self.comm.Igatherv(data, [out, counts.tolist()], root=0), what)
        cuts = np.concatenate([[0], np.cumsum(counts)])
        return [pickle.loads(out[a:b].tobytes()) for a, b in zip(cuts[:-1], cuts[1:])]

    # ---- start-up agreement and failures

    def check_start(self, fingerprint: dict | None, error: tuple | None = None) -> None:
        """The first collective of a run: each rank brings what it was started with (or the
        error that stopped its set-up); rank 0 reports a failure or mismatch once, all stop."""
        everyone = self.allgather({"fingerprint": fingerprint, "error": error}, "start-up")
        self.started = True
        failed = [(r, e["error"]) for r, e in enumerate(everyone) if e["error"] is not None]
        if failed:
            texts = {msg for _, (msg, _) in failed}
            if len(failed) == self.size and len(texts) == 1:
                message = texts.pop()
            else:
                message = "; ".join(f"rank {r}: {msg}" for r, (msg, _) in failed)
            raise StartupFailure(message, max(code for _, (_, code) in failed))
        mismatch = _first_difference([e["fingerprint"] for e in everyone])
        if mismatch:
            raise StartupFailure(f"the ranks were not started alike: {mismatch}", 2)

    def fail(self, message: str, code: int, name_self: bool = True) -> None:
        """After start-up: say which rank failed and why, in one line, and stop every rank."""
        _write_stderr(f"seqtool: error: {f'rank {self.rank}: ' if name_self else ''}{message}\n")
        self.comm.Abort(code)
        os._exit(code)  # MPICH's MPI_Abort can return to the caller while the others are killed

    def after_failure(self, message: str, code: int, name_self: bool = True) -> StartupFailure:
        """This rank failed. Before start-up was agreed, join the start-up check (every rank
        learns of it, rank 0 reports it once) and return what to report; afterwards, abort all."""
        if not self.started:
            try:
                self.check_start(None, (message, code))
            except StartupFailure as e:
                return e
        self.fail(message, code, name_self)


@contextlib.contextmanager
def silent_unless(speak: bool):
    """Ranks other than 0 keep stdout and stderr quiet (their failures are written to fd 2)."""
    if speak:
        yield
        return
    with open(os.devnull, "w") as null:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = null
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return os.path.exists(f"/proc/{pid}") or not os.path.isdir("/proc")


def _first_difference(prints: list[dict]) -> str | None:
    for key in prints[0]:
        values = [p.get(key) for p in prints]
        for r, v in enumerate(values[1:], 1):
            if v != values[0]:
                return f"{key} differs: rank 0 has {_short(values[0])}, rank {r} has {_short(v)}"
    return None


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _write_stderr(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


_world = None


def current_world():
    """The world of this process: an MPIWorld once start_world() ran under mpiexec, else Solo."""
    return _world if _world is not None else Solo()


def start_world():
    """Join the MPI world (when launched by mpiexec) and share the cores among local ranks."""
    global _world
    if _world is not None or not launched_by_mpi():
        return current_world()
    try:
        world = MPIWorld()
    except ImportError:
        raise SeqtoolError("started by mpiexec but mpi4py is missing: pip install 'seqtool[mpi]'") from None
    _world = world
    if "NUMBA_NUM_THREADS" not in os.environ and world.local_size > 1:
        import numba

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, cores // world.local_size)))
    return world


def fingerprint(argv: list[str], settings: dict, meta: dict, data_state: dict, n_params: int) -> dict:
    """What must be equal on every rank: version, options, the data as the task sees it."""
    from seqtool import __version__

    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"seqtool version": __version__, "command line": " ".join(argv), "training settings": settings,
            "data and model (digest of the model file's metadata)": digest, "data position": data_state,
            "parameter count": n_params}


# ---------------------------------------------------------------- one step on N ranks


@dataclass
class Agreement:
    """What every rank knows after a step's reduction (identical on all ranks)."""

    loss: float
    interrupted: bool
    budget: float  # the fraction of --time-budget used, by rank 0's clock (0 without one)

    @property
    def time_up(self) -> bool:
        return self.budget >= 1.0


class Replicas:
    """The Trainer's data-parallel step: the rank's slice of a batch, the loss share, and the
    reduction of gradients plus control numbers. With one rank it changes nothing at all."""

    def __init__(self, world, task, params):
        self.world, self.task, self.params = world, task, params
        self._buffer, self._drew = None, False
        self.reduce_seconds, self.reduce_calls = 0.0, 0
        if world.size > 1 and not hasattr(task, "split_batch"):
            raise SeqtoolError(f"the {task.name} task cannot be trained on several MPI ranks")

    def loss(self, batch):
        """The loss this rank backpropagates (its share of the global mean), or None (no items)."""
        if self.world.size == 1:
            return self.task.loss(batch)
        parts = self.task.split_batch(batch, self.world.size)
        total = float(sum(w for _, w in parts))
        mine, weight = parts[self.world.rank]
        if weight == 0 and getattr(self.task, "carried_batch_axis", None) is not None:
            raise SeqtoolError(f"the batch is too small for {self.world.size} ranks: each needs streams "
                               "of its own (raise --batch or use fewer ranks)")
        if weight == 0 or total == 0:  # e.g. an epoch's short last batch: nothing to add
            return None
        return self.task.loss(mine) * (weight / total)

    @contextlib.contextmanager
    def own_randomness(self, rng):
        """On several ranks, each draws its dropout from its own stream (a jump of the shared
        generator), and the shared generator then moves on alike everywhere."""
        if self.world.size == 1:
            yield
            return
        bg = self.rng_bg = rng.bit_generator
        start = bg.state
        jumped = bg.jumped(self.world.rank + 1).state
        bg.state = jumped
        try:
            yield
        finally:
            self._drew = bg.state != jumped
            bg.state = start

    def reduce(self, value: float | None, interrupted: bool, budget: float) -> Agreement:
        """Sum gradients and control numbers over the ranks (one Allreduce) and set p.grad to
        the result; returns what every rank now agrees on."""
        if self.world.size == 1:
            return Agreement(value, interrupted, budget)
        buf, views = self._pack(value, interrupted, budget)
        t0 = time.perf_counter()
        self.world.sum_(buf)
        self.reduce_seconds += time.perf_counter() - t0  # for benchmarks/mpi_scaling.py
        self.reduce_calls += 1
        n = len(self.params)
        for p, view, count in zip(self.params, views, buf[-n:]):
            p.grad = view if count > 0 else None
        budget, loss_sum, nonfinite, interrupted, drew = (float(v) for v in buf[-n - 5:-n])
        if drew > 0:  # some rank drew random numbers: all advance the shared stream alike
            self.rng_bg.advance(1)
        return Agreement(loss_sum if nonfinite == 0 else math.nan, interrupted > 0, budget)

    def _pack(self, value, interrupted, budget):
        """One flat buffer: every gradient, then [budget used, loss, nonfinite, interrupted, drew],
        then one has-a-gradient count per parameter."""
        sizes = [int(p.data.size) for p in self.params]
        n_grad = sum(sizes)
        if self._buffer is None:
            dtype = np.result_type(*[p.data.dtype for p in self.params], np.float32)
            self._buffer = np.empty(n_grad + 5 + len(sizes), dtype)
        buf = self._buffer
        views, at = [], 0
        for p, k in zip(self.params, sizes):
            view = buf[at:at + k].reshape(p.data.shape)
            if p.grad is None:
                view[...] = 0
            else:
                view[...] = p.grad
            views.append(view)
            at += k
        finite = value is None or math.isfinite(value)
        buf[n_grad:n_grad + 5] = [float(budget) if self.world.is_root else 0.0,  # rank 0's clock decides
                                  value if value is not None and finite else 0.0, float(not finite),
                                  float(interrupted), float(self._drew)]
        buf[n_grad + 5:] = [0.0 if p.grad is None else 1.0 for p in self.params]
        return buf, views

    def evaluate(self):
        """The task's validation result (None: no validation data), identical on every rank.

        One rank: ``task.evaluate()`` as is (nothing pickled). Several: each rank evaluates its
        part, rank 0 merges and broadcasts. A task without ``evaluate_part`` is validated by
        rank 0 alone."""
        task, world = self.task, self.world
        if world.size == 1:
            return task.evaluate()
        if not hasattr(task, "evaluate_part"):
            return world.bcast(task.evaluate() if world.is_root else None, "validation")
        parts = world.gather(task.evaluate_part(world.rank, world.size), "validation")
        result = world.bcast(task.merge_validation(parts) if world.is_root else None, "validation")
        return task.adopt_validation(result)

    def gather_arrays(self, arrays: dict, axis: int | None) -> dict:
        """Carried per-item arrays of all ranks, joined along the item axis (for a checkpoint)."""
        if self.world.size == 1 or axis is None or not arrays:
            return arrays
        parts = self.world.allgather(arrays, "checkpoint")
        return {k: np.concatenate([p[k] for p in parts], axis=axis) for k in arrays}

    def shard_arrays(self, arrays: dict, axis: int | None) -> dict:
        """This rank's slice of carried per-item arrays read from a checkpoint."""
        if self.world.size == 1 or axis is None or not arrays:
            return arrays
        n = next(iter(arrays.values())).shape[axis]
        lo, hi = split_bounds(n, self.world.size)[self.world.rank]
        return {k: np.ascontiguousarray(np.take(v, np.arange(lo, hi), axis=axis)) for k, v in arrays.items()}
