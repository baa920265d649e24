"""Using a trained charlm: prime it, generate text, score text.

    lm = seqtool.tasks.charlm.load("lm.st")
    text = generate(lm, 500, temperature=0.8, prime_text="The ", seed=1)
    loss, n = text_loss(lm, "some text")          # nats per token, tokens scored

Priming and scoring run the seqtool.nn layers (the training code's forward); generation runs
the compiled loop in seqtool.kernels.sample, carrying the same state. Tokens: char = one
character, byte = one UTF-8 byte (output decoded incrementally, invalid bytes replaced by
U+FFFD so what is printed is always valid UTF-8), word = whitespace-separated words (output
joined with single spaces).
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, Iterator

import numpy as np

from seqtool.device import cuda_kernels_for_host_arrays
from seqtool.errors import SeqtoolError, UsageError
from seqtool.core.xp import arange, asarray_on, is_device_array, to_host

if TYPE_CHECKING:
    from seqtool.tasks.charlm import Predictor

__all__ = ["encode", "prime", "iter_generate", "generate", "text_loss", "GATES"]

_CELLS = {"lstm": 0, "gru": 1, "rnn": 2}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_SHOW_UNKNOWN = 10


# ----------------------------------------------------------------------------- tokens


def _split(model: Predictor, text: str) -> list:
    if model.unit == "byte":
        return list(text.encode("utf-8", errors="surrogateescape"))
    if model.unit == "word":
        return text.split()
    return list(text)


def encode(model: Predictor, text: str, what: str = "text") -> np.ndarray:
    """Token ids (n,) int64 of ``text``; tokens the vocabulary lacks raise one SeqtoolError."""
    pieces = _split(model, text)
    ids = [model.index.get(p, -1) for p in pieces]
    if -1 in ids:
        unknown = list(dict.fromkeys(p for p, i in zip(pieces, ids) if i < 0))
        shown = ", ".join(f"0x{p:02x}" if isinstance(p, int) else repr(p)
                          for p in unknown[:_SHOW_UNKNOWN])
        more = f" and {len(unknown) - _SHOW_UNKNOWN} more" if len(unknown) > _SHOW_UNKNOWN else ""
        kind = {"char": "characters", "byte": "bytes", "word": "words"}[model.unit]
        raise SeqtoolError(f"{what} has {kind} the model's vocabulary lacks: {shown}{more}")
    return np.asarray(ids, np.int64)


class _Detokenizer:
    """Token ids -> text, incrementally. Bytes go through an incremental UTF-8 decoder: an
    incomplete multi-byte sequence is held back until it completes; invalid bytes, and an
    incomplete tail at the end, become U+FFFD."""

    def __init__(self, model: Predictor, after_prime: bool):
        self.unit = model.unit
        self.tokens = model.tokens
        self.sep = after_prime  # word unit: a space before the first word after a prime
        if self.unit == "byte":
            self.table = np.asarray(model.tokens, np.uint8)
            self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: np.ndarray) -> str:
        if self.unit == "byte":
            return self.decoder.decode(self.table[ids].tobytes())
        if self.unit == "word":
            if not len(ids):
                return ""
            text = (" " if self.sep else "") + " ".join(self.tokens[i] for i in ids)
            self.sep = True
            return text
        return "".join(self.tokens[i] for i in ids)

    def finish(self) -> str:
        return self.decoder.decode(b"", final=True) if self.unit == "byte" else ""


# ----------------------------------------------------------------------------- forward


def _forward(model: Predictor, ids: np.ndarray, state=None, lengths=None):
    """Run (T, N) ids through the recurrent layers: returns top outputs (T, N, H) and the state
    ((L, N, H) h and c; c is None for gru/rnn)."""
    from seqtool.core.autograd import no_grad

    x = model.embed[asarray_on(ids, like=model.embed)]  # (T, N, E)
    with no_grad():
        if model.cell == "lstm":
            y, (h, c) = model.rnn(x, state, lengths=lengths)
            return y.data, (h.data, c.data)
        y, h = model.rnn(x, None if state is None else state[0], lengths=lengths)
        return y.data, (h.data, None)


def prime(model: Predictor, text: str) -> tuple[np.ndarray, np.ndarray]:
    """The state (h, c), each (L, H) float32, after the network has read ``text``."""
    h, c = model.zero_state()
    ids = encode(model, text, "--prime") if text else np.zeros(0, np.int64)
    if len(ids):
        _, (hn, cn) = _forward(model, ids[:, None])
        h = np.ascontiguousarray(to_host(hn[:, 0]), np.float32)
        if cn is not None:
            c = np.ascontiguousarray(to_host(cn[:, 0]), np.float32)
    return h, c


# Layer 0's input products are tabulated per token (embed @ W_ih0^T) up to this many bytes.
_TABLE_BYTES = 32 << 20


def _block_bounds():
    """The kernels' block bounds (kernels.blas.block) as plain Python: calling the @njit
    function from Python would compile it in every process (~0.4 s of each `seqtool sample`)."""
    from seqtool.kernels.blas import block

    return block.py_func


def _gate_rows(hidden: int, gates: int, lo: int, hi: int) -> np.ndarray:
    """The rows of units lo..hi-1 in a (gates * hidden, .) weight, in gate order."""
    return (np.arange(gates)[:, None] * hidden + np.arange(lo, hi)).ravel()


def _block_rows(hidden: int, gates: int, nblocks: int) -> np.ndarray:
    """Row order of the packed layout (kernels/sample.py): block by block, each block's units'
    rows in gate order."""
    block = _block_bounds()
    return np.concatenate([_gate_rows(hidden, gates, *block(b, nblocks, hidden))
                           for b in range(nblocks)])


def _kernel_weights(model: Predictor, nblocks: int = 1) -> tuple:
    """The compiled loop's weight arguments, packed for `nblocks` blocks of hidden units (see
    kernels/sample.py), followed by nblocks."""
    block = _block_bounds()
    rnn, L, H, V = model.rnn, model.layers, model.hidden, model.vocab_size
    G = GATES[model.cell]
    classic_gru = model.cell == "gru" and not model.reset_after
    rows = _block_rows(H, G, nblocks)
    weight = lambda name: getattr(rnn, name).data  # noqa: E731
    packed = lambda name: np.ascontiguousarray(weight(name)[rows], np.float32)  # noqa: E731
    w_ih0 = packed("weight_ih_l0")
    if V * G * H * 4 <= _TABLE_BYTES:
        x0 = np.ascontiguousarray(model.embed @ w_ih0.T)  # (V, GH)
        w_ih0 = np.zeros((0, 0), np.float32)
    else:
        x0 = model.embed
    # Panels, block by block: C(b, l) then R(b, l) (kernels/sample.py), each starting at a
    # multiple of 16 floats from the first.
    pieces, offsets, at = [], np.zeros((nblocks, L, 2), np.int64), 0
    for b in range(nblocks):
        lo, hi = block(b, nblocks, H)
        rows_in = _gate_rows(H, G, lo, hi)
        rows_hh = _gate_rows(H, 2, lo, hi) if classic_gru else rows_in  # r, z only
        for l in range(L):
            consumer = (model.head_w[:, lo:hi] if l == L - 1
                        else weight(f"weight_ih_l{l + 1}")[rows_in]).T
            recurrent = weight(f"weight_hh_l{l}")[rows_hh].T
            for which, panel in enumerate((consumer, recurrent)):
                panel = np.ascontiguousarray(panel, np.float32).ravel()
                offsets[b, l, which] = at
                pad = -panel.size % 16
                pieces += [panel, np.zeros(pad, np.float32)]
                at += panel.size + pad
    panels = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    w_hn = (np.stack([np.ascontiguousarray(weight(f"weight_hh_l{l}")[2 * H:], np.float32)
                      for l in range(L)]) if classic_gru else np.zeros((0, 0, 0), np.float32))
    b_ih = np.stack([packed(f"bias_ih_l{k}") for k in range(L)])
    b_hh = np.stack([packed(f"bias_hh_l{k}") for k in range(L)])
    if model.cell != "gru":  # one bias per gate (the GRU's n gate needs b_hn apart)
        b_ih, b_hh = b_ih + b_hh, np.zeros_like(b_hh)
    x0, w_ih0, panels, w_hn, b_ih, b_hh, head_b = _on_huge_pages(
        [x0, w_ih0, panels, w_hn, b_ih, b_hh, model.head_b])
    return x0, w_ih0, panels, offsets, w_hn, b_ih, b_hh, head_b, nblocks


_HUGE = 2 << 20


def _on_huge_pages(arrays: list) -> list:
    """Copies of `arrays` in one anonymous mapping that asks Linux for 2 MB pages.

    Each sampling thread streams ~1.6 MB of weights per token from its core's 2 MB L2 (2 x 256
    LSTM); with 4 KB pages their physical addresses crowd some cache sets and spill others,
    while a 2 MB page covers every set evenly. Where madvise is missing, plain copies."""
    import mmap

    sizes = [-(-a.nbytes // 64) * 64 for a in arrays]  # cache-line aligned offsets
    total = sum(sizes)
    if not hasattr(mmap, "MADV_HUGEPAGE") or total < _HUGE // 2:
        return arrays
    length = -(-total // _HUGE) * _HUGE + _HUGE  # room to align the start to 2 MB
    buf = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:
        pass
    raw = np.frombuffer(buf, np.uint8)
    offset = -raw.ctypes.data % _HUGE
    out = []
    for a, size in zip(arrays, sizes):
        view = raw[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        out.append(view)  # keeps raw, and with it the mapping, alive
        offset += size
    return out


# A barrier wait longer than this many polls (~1 s) means the threads are not running side by
# side; the chunk is then redone on one thread.
_SPIN_LIMIT = 1 << 24


def sampling_threads(model: Predictor) -> int:
    """Threads for the compiled sampling loop: one per 64 hidden units, at most Numba's count
    and the CPUs this process may run on (two spinning threads sharing a core would each wait
    a scheduler time slice at every barrier)."""
    import os

    from seqtool.kernels import num_threads

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(num_threads(), cpus, model.hidden // 64))


def run_sampler(model: Predictor, weights: tuple, h, c, temperature, top_k, argmax, uniforms, out,
                threads: int) -> int:
    """Fill `out` with tokens from the compiled loop, advancing h and c (L, H) in place;
    `weights` from _kernel_weights (threads beyond its block count are not used). Returns the
    thread count that worked: 1 after a fallback, so callers stop asking for more."""
    from seqtool.kernels.sample import sample_tokens

    *arrays, nblocks = weights
    args = (nblocks, _CELLS[model.cell], model.reset_after, model.relu, temperature, top_k,
            argmax, uniforms, out)
    if threads > 1 and sample_tokens(*arrays, h, c, *args, threads, _SPIN_LIMIT):
        return threads
    sample_tokens(*arrays, h, c, *args, 1, _SPIN_LIMIT)  # one thread never waits
    return 1


def _device_weights(model: Predictor) -> dict:
    """The CUDA sampler's weights (kernels/cuda/sample.py), packed once per generation."""
    from seqtool.kernels.cuda import sample as cuda_sample

    layer = lambda name: [getattr(model.rnn, f"{name}_l{k}").data for k in range(model.layers)]  # noqa: E731
    return cuda_sample.pack(model.embed, layer("weight_ih"), layer("weight_hh"), layer("bias_ih"),
                            layer("bias_hh"), model.head_w, model.head_b)


def _device_tokens(model: Predictor, weights: dict, h, c, temperature, top_k, argmax, uniforms, out) -> None:
    """What the compiled loop does, for weights on a GPU: all of `out`'s tokens in one launch of
    the CUDA sampler (same `pick`, same uniforms). h, c (L, H) advance past them."""
    from seqtool.kernels.cuda import sample as cuda_sample

    cuda_sample.sample_tokens(weights, _CELLS[model.cell], model.reset_after, model.relu, h, c,
                              temperature, top_k, argmax, uniforms, out)


def iter_generate(model: Predictor, length: int, temperature: float = 1.0, prime_text: str = "",
                  top_k: int = 0, argmax: bool = False, seed: int | None = None,
                  stop_at: str | None = None, chunk: int = 64,
                  include_prime: bool = True) -> Iterator[str]:
    """Yield the generated text piece by piece: the prime (if asked), then one piece per
    ``chunk`` tokens. Stops after ``length`` tokens, or right after ``stop_at`` appears in the
    generated text. The same seed gives the same text whatever the chunk size."""
    if length < 0:
        raise UsageError("--length must be >= 0")
    if not argmax and not temperature > 0:
        raise UsageError("--temperature must be > 0")
    if top_k < 0:
        raise UsageError("--top-k must be >= 0")
    if chunk < 1:
        raise UsageError("chunk must be >= 1")
    h, c = prime(model, prime_text)
    on_device = is_device_array(model.embed) or cuda_kernels_for_host_arrays()
    threads = sampling_threads(model)
    weights = _device_weights(model) if on_device else _kernel_weights(model, threads)
    rng = np.random.default_rng(seed)
    detok = _Detokenizer(model, after_prime=bool(prime_text.strip()))
    if include_prime and prime_text:
        yield prime_text
    out = np.empty(chunk, np.int64)
    generated = ""  # only kept for the --stop-at search
    done = 0
    while done < length:
        n = min(chunk, length - done)
        u = rng.random(n)  # drawn in sequence: chunking does not change the stream
        if on_device:
            _device_tokens(model, weights, h, c, float(temperature), int(top_k), bool(argmax), u,
                           out[:n])
        else:
            threads = run_sampler(model, weights, h, c, float(temperature), int(top_k),
                                  bool(argmax), u, out[:n], threads)
        done += n
        piece = detok.feed(out[:n])
        if done >= length:
            piece += detok.finish()
        if stop_at:
            start = max(0, len(generated) - len(stop_at) + 1)
            generated += piece
            hit = generated.find(stop_at, start)
            if hit >= 0:
                end = hit + len(stop_at)
                yield piece[:len(piece) - (len(generated) - end)]
                return
            generated = generated[-len(stop_at):]  # enough to match across pieces
        if piece:
            yield piece


def generate(model: Predictor, length: int, temperature: float = 1.0, prime_text: str = "",
             top_k: int = 0, argmax: bool = False, seed: int | None = None,
             stop_at: str | None = None, include_prime: bool = True, chunk: int = 4096) -> str:
    """The whole generated text (see iter_generate)."""
    return "".join(iter_generate(model, length, temperature, prime_text, top_k, argmax, seed,
                                 stop_at, chunk=64 if stop_at else chunk,
                                 include_prime=include_prime))


# ----------------------------------------------------------------------------- scoring


def _token_losses_sum(model: Predictor, ids: np.ndarray, batch: int = 32, window: int = 256,
                      min_segment: int = 2048) -> tuple[float, int]:
    """Sum of -log p(ids[t+1] | ids[:t+1]) over t, and the number of predictions.

    Long texts are cut into up to ``batch`` contiguous segments run side by side (one batched
    kernel call per ``window`` steps, state carried between windows); each segment starts from
    a zero state, so up to batch-1 boundaries see less context. Texts shorter than
    ``min_segment`` * 2 run as a single exact sequence.
    """
    m = len(ids) - 1  # predictions
    if m <= 0:
        return 0.0, 0
    N = int(max(1, min(batch, m // min_segment)))
    S = -(-m // N)  # segment length
    inp = np.zeros(N * S, np.int64)
    tgt = np.zeros(N * S, np.int64)
    inp[:m], tgt[:m] = ids[:-1], ids[1:]
    inp, tgt = inp.reshape(N, S).T, tgt.reshape(N, S).T  # (S, N) time-major
    seg_len = np.clip(m - np.arange(N) * S, 0, S)  # (N,)
    state, total = None, 0.0
    for t0 in range(0, S, window):
        T = min(window, S - t0)
        lengths = np.clip(seg_len - t0, 0, T).astype(np.int64)
        y, state = _forward(model, inp[t0:t0 + T], state, lengths)  # (T, N, H)
        logits = y.reshape(T * N, -1) @ model.head_w.T + model.head_b  # (T*N, V)
        logits = logits.astype(np.float64)
        mx = logits.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
        targets = asarray_on(tgt[t0:t0 + T].reshape(-1), like=logits)
        nll = lse - logits[arange(T * N, like=logits), targets]
        valid = asarray_on((np.arange(T)[:, None] < lengths[None, :]).reshape(-1), like=logits)
        total += float(nll[valid].sum())
    return total, m


def text_loss(model: Predictor, text: str, what: str = "text") -> tuple[float, int]:
    """(mean negative log-likelihood in nats per token, tokens predicted), teacher-forced:
    every token after the first is predicted from all before it. NaN when nothing is scored."""
    total, n = _token_losses_sum(model, encode(model, text, what))
    return (total / n if n else float("nan")), n
