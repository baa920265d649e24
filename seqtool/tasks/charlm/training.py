"""The trainer's view of a charlm: truncated BPTT batches, loss, validation, resumable position.

Training is truncated BPTT torch-rnn style: the training ids are cut into N parallel streams
(one per batch row); consecutive chunks of seq_len steps continue each stream, and the hidden
state is carried from one chunk to the next (detached, so gradients stop at chunk boundaries).
"""

from __future__ import annotations

import numpy as np

from seqtool.core.autograd import Tensor, no_grad
from seqtool.data import text as textdata
from seqtool.errors import SeqtoolError
from seqtool.core.losses import cross_entropy
from seqtool.tasks.charlm.model import CharLM, config_of, decode
from seqtool.core.xp import to_host

__all__ = ["CharLMTask"]

_EVAL_STREAMS = 128  # parallel streams over the validation text (kernels like wide batches)
_EVAL_CHUNK = 256  # steps per kernel call when evaluating (bounds the saved-gates memory)
_EVAL_WARMUP = 64  # preceding tokens run (not scored) to warm up each stream's state


def _detach(state):
    if isinstance(state, tuple):
        return tuple(s.data if isinstance(s, Tensor) else s for s in state)
    return state.data if isinstance(state, Tensor) else state


class CharLMTask:
    """The trainer's view of a charlm: batches, loss, validation, resumable position."""

    name = "charlm"

    def __init__(self, model: CharLM, corpus: textdata.Corpus, batch: int, seq_len: int,
                 sample_chars: int = 120, data_options: dict | None = None):
        self.model, self.corpus, self.unit = model, corpus, corpus.unit
        self.vocab = {"unit": corpus.unit, "tokens": corpus.tokens}
        self.seq_len = int(seq_len)
        train = corpus.train
        if len(train) < self.seq_len + 1:
            raise SeqtoolError(f"text too short: {len(train)} training tokens, --seq-len {seq_len} "
                               f"needs at least {seq_len + 1}; use a smaller --seq-len")
        # Fewer streams than asked when the text is short, so every epoch has a batch.
        self.batch = max(1, min(int(batch), (len(train) - 1) // self.seq_len))
        N, T = self.batch, self.seq_len
        S = (len(train) - 1) // N  # tokens per stream
        self.chunks = S // T
        used = self.chunks * T
        starts = np.arange(N) * S
        # (chunks, T, N) inputs and targets: chunk k of stream n is train[n*S + k*T : ... + T]
        idx = starts[None, None, :] + np.arange(used).reshape(self.chunks, T)[:, :, None]
        self._x = np.ascontiguousarray(train[idx])
        self._y = np.ascontiguousarray(train[idx + 1])
        self.position = 0  # next chunk of the current epoch
        self._state = None  # carried hidden state (numpy), None at an epoch's start
        self.sample_chars = sample_chars
        # remembered in the model file so --resume needs no repeated flags
        self.data_options = {**(data_options or {}), "batch": self.batch, "seq_len": self.seq_len}

    # ---- trainer protocol
    def train_batches(self, rng):
        self.model.rnn.dropout_rng = rng  # dropout draws from the checkpointed generator
        self.model.train()
        while self.position < self.chunks:
            k = self.position
            self.position += 1
            yield self._x[k], self._y[k]
        self.position = 0
        self._state = None

    def loss(self, batch):
        x, y = batch  # (T, N) each
        logits, state = self.model(x, self._state)  # (T, N, V)
        self._state = _detach(state)
        return cross_entropy(logits, y)

    def epoch_progress(self) -> float:
        return self.position / self.chunks

    def batch_tokens(self, batch) -> int:
        return batch[0].size

    carried_batch_axis = 1  # h/c are (layers, N, H): each MPI rank carries its streams' rows

    def split_batch(self, batch, parts: int) -> list:
        """The streams in `parts` slices (MPI ranks), each with the tokens its loss averages."""
        from seqtool.training.distributed import split_items

        return [(p, p[0].size) for p in split_items(batch, (1, 1), parts)]

    def evaluate(self):
        """Mean loss (nats per token) over the validation text, or None without one."""
        return self.adopt_validation(self.merge_validation([self.evaluate_part(0, 1)]))

    def _val_streams(self):
        """(streams' first positions in the ids, tokens per stream, warm-up tokens), or None."""
        val, full = self.corpus.val, self.corpus.ids
        if len(val) < 2:
            return None
        offset = len(full) - len(val)
        N = max(1, min(_EVAL_STREAMS, (len(val) - 1) // 8))
        S = (len(val) - 1) // N
        return offset + np.arange(N) * S, S, int(min(_EVAL_WARMUP, offset))

    def evaluate_part(self, rank: int, size: int):
        """(summed loss, tokens) of this rank's contiguous share of the validation streams
        (each stream is scored alike whichever rank runs it), or None without validation text."""
        from seqtool.training.distributed import split_bounds

        layout = self._val_streams()
        if layout is None:
            return None
        starts, S, W = layout
        lo, hi = split_bounds(len(starts), size)[rank]
        starts, full, model = starts[lo:hi], self.corpus.ids, self.model
        if not len(starts):
            return 0.0, 0
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        with no_grad():
            state = None
            if W:  # the tokens just before each stream, unscored, so no stream starts cold
                warm = full[starts[:, None] - W + np.arange(W)[None, :]].T  # (W, N)
                _, state = model(np.ascontiguousarray(warm), None)
                state = _detach(state)
            for t0 in range(0, S, _EVAL_CHUNK):
                t1 = min(S, t0 + _EVAL_CHUNK)
                pos = starts[None, :] + np.arange(t0, t1)[:, None]  # (t, N)
                logits, state = model(full[pos], state)
                state = _detach(state)
                loss = cross_entropy(logits, full[pos + 1], reduction="sum")
                total += float(loss.data)
                count += pos.size
        model.train(was_training)
        return total, count

    def merge_validation(self, parts):
        if parts[0] is None:
            return None
        total, count = parts[0]
        for t, c in parts[1:]:
            total, count = total + t, count + c
        return {"loss": total / count, "val_tokens": count}

    def adopt_validation(self, result):
        return result  # nothing to keep: the progress sample depends on the weights alone

    def on_validation(self, reporter) -> None:
        if getattr(reporter, "quiet", True) or not self.sample_chars:
            return
        text = self.sample(self.sample_chars)
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        reporter.info("  sample: " + repr(text)[1:-1][:200])

    def sample(self, n: int, temperature: float = 0.8, seed: int = 0):
        """A short sample for progress output; its own generator leaves training's untouched."""
        rng = np.random.default_rng(seed)
        model = self.model
        was_training = model.training
        model.eval()
        tok = int(self.corpus.train[0])
        out, state = [], None
        with no_grad():
            for _ in range(n):
                logits, state = model(np.array([[tok]]), state)
                state = _detach(state)
                z = to_host(logits.data[0, 0]).astype(np.float64) / temperature
                p = np.exp(z - z.max())
                tok = int(rng.choice(len(p), p=p / p.sum()))
                out.append(tok)
        model.train(was_training)
        return decode(out, self.vocab)

    def data_state(self) -> dict:
        return {"position": self.position, "chunks": self.chunks, "batch": self.batch,
                "seq_len": self.seq_len}

    def load_data_state(self, state: dict) -> None:
        if (state.get("chunks"), state.get("batch"), state.get("seq_len")) != (self.chunks, self.batch,
                                                                                 self.seq_len):
            raise SeqtoolError(
                "the checkpoint was trained on other data or another --batch/--seq-len "
                f"({state.get('chunks')} chunks of {state.get('batch')}x{state.get('seq_len')}, "
                f"now {self.chunks} of {self.batch}x{self.seq_len}); cannot resume exactly")
        self.position = int(state["position"])

    def state_arrays(self) -> dict:
        if self._state is None:
            return {}
        if isinstance(self._state, tuple):
            return {"h": self._state[0], "c": self._state[1]}
        return {"h": self._state}

    def load_state_arrays(self, arrays: dict) -> None:
        if "h" not in arrays:
            self._state = None
        elif "c" in arrays:
            self._state = (arrays["h"].copy(), arrays["c"].copy())
        else:
            self._state = arrays["h"].copy()

    def meta(self) -> dict:
        return {"task": "charlm", "config": config_of(self.model, self.unit), "vocab": self.vocab,
                "data": {"train_tokens": int(len(self.corpus.train)),
                         "val_tokens": int(len(self.corpus.val))},
                "data_options": self.data_options}
