"""Training-step throughput of the recurrent layers, optionally against PyTorch in the same run.

One step = forward of a layer stack over the whole batch, loss = sum(output * R) for a fixed
random R (T, N, dirs*H) so backward starts from a dense gradient, backward, SGD update. The
input x (T, N, D) does not require a gradient (as in PyTorch's default), so layer 0 skips dx.

FLOPs counted per step (matrix multiplies only, the gate arithmetic is not counted):
    forward   2 * T * N * G * H * (D_l + H)   per layer and direction
    backward  twice the forward
    step      3 * forward
with G = 4 (LSTM), 3 (GRU), 1 (RNN) and D_l = input size for layer 0, dirs * H above it.

PyTorch is optional: it is imported only by ``torch_step`` (``--compare torch``).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from seqtool.errors import SeqtoolError, UsageError
from seqtool.core.memory import recurrent_param_count, require_memory

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
NO_TORCH = "PyTorch is not installed: pip install torch"


@dataclass
class BenchConfig:
    cell: str = "lstm"
    hidden: int = 256
    batch: int = 32
    seq_len: int = 100
    input_size: int = 64
    layers: int = 1
    bidirectional: bool = False
    nonlinearity: str = "tanh"  # rnn only
    gru_form: str = "after"  # gru only: "after" (reset after the matmul, PyTorch/cuDNN) or "classic"
    steps: int = 10
    warmup: int = 2
    seed: int = 0
    lr: float = 1e-3

    def validate(self) -> None:
        if self.cell not in GATES:
            raise UsageError(f"unknown cell {self.cell!r}; choose one of: {', '.join(GATES)}")
        for name in ("hidden", "batch", "seq_len", "input_size", "layers", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UsageError(f"warmup must be a non-negative integer, got {self.warmup!r}")
        if self.nonlinearity not in ("tanh", "relu"):
            raise UsageError(f"nonlinearity must be tanh or relu, got {self.nonlinearity!r}")
        if self.gru_form not in ("after", "classic"):
            raise UsageError(f"gru form must be after or classic, got {self.gru_form!r}")
        require_memory(self.step_bytes(), f"bench --hidden {self.hidden} --batch {self.batch} "
                                          f"--seq-len {self.seq_len} --layers {self.layers} "
                                          f"--input-size {self.input_size}")

    def step_bytes(self) -> int:
        """Bytes one training step holds (float32): weights, gradients and their float64 draw;
        per layer and direction the saved states and gates (T+1, N, (G+3)H) and their gradients;
        input, R and the output gradient."""
        G, H, T, N, dirs = GATES[self.cell], self.hidden, self.seq_len, self.batch, self.directions
        params = recurrent_param_count(self.cell, self.input_size, H, self.layers, self.bidirectional)
        saved = self.layers * dirs * (T + 1) * N * (G + 3) * H * 2
        io = T * N * (self.input_size + 2 * dirs * H)
        return 4 * (2 * params + saved + io) + 8 * params

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


def step_flops(cfg: BenchConfig) -> float:
    """Matrix-multiply FLOPs of one training step (see the module docstring)."""
    G, H, dirs = GATES[cfg.cell], cfg.hidden, cfg.directions
    forward = 0
    for layer in range(cfg.layers):
        d_in = cfg.input_size if layer == 0 else dirs * H
        forward += dirs * 2 * cfg.seq_len * cfg.batch * G * H * (d_in + H)
    return 3.0 * forward


def make_data(cfg: BenchConfig):
    """x (T, N, D) and the loss weights R (T, N, dirs*H), float32, from cfg.seed."""
    rng = np.random.default_rng(cfg.seed)
    x = rng.standard_normal((cfg.seq_len, cfg.batch, cfg.input_size)).astype(np.float32)
    r = rng.standard_normal((cfg.seq_len, cfg.batch, cfg.directions * cfg.hidden)).astype(np.float32)
    return x, r


def build_model(cfg: BenchConfig):
    """The seqtool.nn layer stack, float32, weights drawn from cfg.seed."""
    from seqtool import nn

    cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg.cell]
    return cls(cfg.input_size, cfg.hidden, cfg.layers, bidirectional=cfg.bidirectional,
               nonlinearity=cfg.nonlinearity, reset_after=cfg.gru_form == "after",
               rng=np.random.default_rng(cfg.seed + 1), dtype=np.float32)


def _synchronize(device: str) -> None:
    """Wait for the GPU (its launches are asynchronous) so a step's time is the whole step."""
    from seqtool.device import simulator

    if device == "cuda" and not simulator():
        import cupy

        cupy.cuda.Device().synchronize()


def seqtool_step(cfg: BenchConfig, model=None, device: str = "cpu") -> tuple[Callable[[], None], object]:
    """(step, model): step() runs one forward + backward + SGD update of the model on `device`."""
    from seqtool.core.autograd import Tensor
    from seqtool.device import module_to, put
    from seqtool.optim import SGD

    model = module_to(model if model is not None else build_model(cfg), device)
    x_np, r_np = make_data(cfg)
    x, r = Tensor(put(x_np, device)), Tensor(put(r_np, device))
    opt = SGD(list(model.parameters()), lr=cfg.lr)

    def step():
        out, _ = model(x)  # (T, N, dirs*H)
        loss = (out * r).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        _synchronize(device)

    return step, model


def _import_torch():
    try:
        import torch
    except ImportError:
        raise SeqtoolError(NO_TORCH) from None
    return torch


def check_compare(cfg: BenchConfig, compare: str | None) -> None:
    """Fail before any timing if the comparison cannot run (UsageError / SeqtoolError)."""
    if compare is None:
        return
    if compare != "torch":
        raise UsageError(f"unknown --compare {compare!r}; only torch is supported")
    if cfg.cell == "gru" and cfg.gru_form == "classic":
        raise UsageError("PyTorch has only the reset-after GRU; use --gru-form after with --compare torch")
    _import_torch()


def torch_step(cfg: BenchConfig, threads: int, state_dict: dict | None = None, device: str = "cpu"):
    """(step, model) for the same step in PyTorch (CPU with ``threads`` intra-op threads, or
    cuDNN on "cuda"). ``state_dict`` (seqtool's arrays, PyTorch names) gives equal weights.
    """
    check_compare(cfg, "torch")
    torch = _import_torch()
    torch.set_num_threads(max(1, int(threads)))
    if cfg.cell == "lstm":
        model = torch.nn.LSTM(cfg.input_size, cfg.hidden, cfg.layers, bidirectional=cfg.bidirectional)
    elif cfg.cell == "gru":
        model = torch.nn.GRU(cfg.input_size, cfg.hidden, cfg.layers, bidirectional=cfg.bidirectional)
    else:
        model = torch.nn.RNN(cfg.input_size, cfg.hidden, cfg.layers, nonlinearity=cfg.nonlinearity,
                             bidirectional=cfg.bidirectional)
    if state_dict is not None:
        from seqtool.core.xp import to_host

        model.load_state_dict({k: torch.from_numpy(np.array(to_host(v), np.float32))
                               for k, v in state_dict.items()})
    x_np, r_np = make_data(cfg)
    x, r = torch.from_numpy(x_np), torch.from_numpy(r_np)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SeqtoolError("PyTorch here has no CUDA: cannot compare on --device cuda")
        model, x, r = model.cuda(), x.cuda(), r.cuda()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)

    def step():
        out, _ = model(x)  # (T, N, dirs*H)
        loss = (out * r).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step, model


def _alternate(ours, theirs, warmup: int, steps: int, on_step=None) -> tuple[list, list]:
    """Step times of ours and (when given) theirs, run one after the other at every step so both
    see the same machine state; the first ``warmup`` steps are not kept."""
    times, torch_times = [], []
    for i in range(warmup + steps):
        t = _timed(ours)
        tt = _timed(theirs) if theirs is not None else None
        if i >= warmup:
            times.append(t)
            if tt is not None:
                torch_times.append(tt)
        if on_step is not None:
            on_step(i)
    return times, torch_times


def _timed(step: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


# bench --persistent -> the CUDA recurrence mode (seqtool.kernels.cuda.settings): "on" the
# grid-wide persistent kernels, "off" the per-step kernels, "auto" the kernels' own choice
PERSISTENT_MODES = {"auto": "auto", "on": "grid", "off": "steps"}


def run(cfg: BenchConfig, compare: str | None = None, on_step: Callable[[int], None] | None = None,
        model=None, device: str = "cpu", persistent: str = "auto") -> dict:
    """Time cfg.warmup + cfg.steps training steps; returns the result record.

    With compare="torch" PyTorch runs the same step right after each of ours (interleaved, so
    both see the same machine load), with as many threads as the kernels use. ``persistent``
    picks how the CUDA recurrences run (PERSISTENT_MODES).
    """
    from seqtool.kernels.cuda import settings

    with settings.using(settings.Recurrence(PERSISTENT_MODES[persistent])):
        return _run(cfg, compare, on_step, model, device)


def _run(cfg, compare, on_step, model, device) -> dict:
    from seqtool import kernels

    cfg.validate()
    check_compare(cfg, compare)
    threads = kernels.num_threads()
    ours, model = seqtool_step(cfg, model, device)
    theirs = None
    if compare == "torch":
        theirs, _ = torch_step(cfg, threads, model.state_dict(), device)
    times, torch_times = _alternate(ours, theirs, cfg.warmup, cfg.steps, on_step)
    flops = step_flops(cfg)
    step_s = statistics.median(times)
    tokens = cfg.batch * cfg.seq_len
    rec = {**asdict(cfg), "device": device, "threads": threads,
           "step_s": step_s, "step_s_min": min(times), "tokens_per_s": tokens / step_s,
           "flops_per_step": flops, "gflops": flops / step_s / 1e9}
    if theirs is not None:
        import torch

        torch_s = statistics.median(torch_times)
        rec.update({"torch_version": torch.__version__, "torch_step_s": torch_s,
                    "torch_step_s_min": min(torch_times), "torch_tokens_per_s": tokens / torch_s,
                    "torch_gflops": flops / torch_s / 1e9, "ratio": torch_s / step_s})
    return rec


def matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a float32 (n x n) @ (n x n) NumPy matmul (2 n^3 FLOPs)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty((n, n), np.float32)
    # The kernels pin every BLAS to one thread (kernels/blas.py); the peak to compare with
    # is NumPy's matmul with its usual threads, one per core the kernels use.
    from seqtool.kernels import num_threads
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=num_threads(), user_api="blas"):
        np.matmul(a, b, out=out)  # warm-up: BLAS threads started, pages touched
        best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeats))
    return 2.0 * n ** 3 / best / 1e9


# ---------------------------------------------------------------- the whole charlm training step


@dataclass
class CharlmBenchConfig:
    """One charlm training step: the model and batch of benchmarks/torch_charlm_peer.py."""
    hidden: int = 128
    layers: int = 2
    embed: int = 64
    vocab: int = 65  # tinyshakespeare's characters
    batch: int = 50
    seq_len: int = 50
    steps: int = 10
    warmup: int = 2
    seed: int = 0
    lr: float = 2e-3
    clip_norm: float = 5.0

    def validate(self) -> None:
        for name in ("hidden", "layers", "embed", "vocab", "batch", "seq_len", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise UsageError(f"warmup must be a non-negative integer, got {self.warmup!r}")


def charlm_tokens(cfg: CharlmBenchConfig):
    """Inputs and next-token targets (T, N) int64, random ids from cfg.seed."""
    ids = np.random.default_rng(cfg.seed).integers(0, cfg.vocab, (cfg.seq_len + 1, cfg.batch))
    return ids[:-1].copy(), ids[1:].copy()


def charlm_seqtool_step(cfg: CharlmBenchConfig):
    """(step, model): embedding, LSTM stack, head, cross-entropy, backward, gradient-norm clip,
    Adam, as `seqtool train charlm` runs them; the state is carried (detached) between steps."""
    from seqtool.core.losses import cross_entropy
    from seqtool.optim import Adam, clip_grad_norm
    from seqtool.tasks.charlm.model import build_charlm

    config = {"cell": "lstm", "hidden": cfg.hidden, "layers": cfg.layers, "embed": cfg.embed, "dropout": 0.0}
    model = build_charlm(config, cfg.vocab, rng=np.random.default_rng(cfg.seed + 1))
    params = list(model.parameters())
    opt = Adam(params, lr=cfg.lr)
    x, y = charlm_tokens(cfg)
    carried = [None]

    def step():
        logits, state = model(x, carried[0])
        carried[0] = tuple(s.data for s in state)
        loss = cross_entropy(logits, y)
        for p in params:
            p.grad = None
        loss.backward()
        clip_grad_norm(params, cfg.clip_norm)
        opt.step()

    return step, model


def charlm_torch_step(cfg: CharlmBenchConfig, threads: int, state_dict: dict):
    """(step, model): the same step in PyTorch (the model of benchmarks/torch_charlm_peer.py,
    equal weights)."""
    torch = _import_torch()
    torch.set_num_threads(max(1, int(threads)))
    nn = torch.nn
    model = nn.ModuleDict({"embed": nn.Embedding(cfg.vocab, cfg.embed),
                           "rnn": nn.LSTM(cfg.embed, cfg.hidden, cfg.layers),
                           "head": nn.Linear(cfg.hidden, cfg.vocab)})
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()})
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, y = (torch.from_numpy(a) for a in charlm_tokens(cfg))
    carried = [None]

    def step():
        out, state = model["rnn"](model["embed"](x), carried[0])
        carried[0] = tuple(s.detach() for s in state)
        logits = model["head"](out)
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()

    return step, model


def run_charlm(cfg: CharlmBenchConfig, compare: str | None = None,
               on_step: Callable[[int], None] | None = None) -> dict:
    """Time cfg.warmup + cfg.steps charlm training steps (PyTorch's interleaved with compare="torch")."""
    from seqtool import kernels

    cfg.validate()
    if compare not in (None, "torch"):
        raise UsageError(f"unknown --compare {compare!r}; only torch is supported")
    threads = kernels.num_threads()
    ours, model = charlm_seqtool_step(cfg)
    theirs = charlm_torch_step(cfg, threads, model.state_dict())[0] if compare == "torch" else None
    times, torch_times = _alternate(ours, theirs, cfg.warmup, cfg.steps, on_step)
    chars = cfg.batch * cfg.seq_len
    step_s = statistics.median(times)
    rec = {"task": "charlm", **asdict(cfg), "device": "cpu", "threads": threads, "step_s": step_s,
           "step_s_min": min(times), "chars_per_s": chars / step_s}
    if theirs is not None:
        import torch

        torch_s = statistics.median(torch_times)
        rec.update({"torch_version": torch.__version__, "torch_step_s": torch_s,
                    "torch_step_s_min": min(torch_times), "torch_chars_per_s": chars / torch_s,
                    "ratio": torch_s / step_s})
    return rec
