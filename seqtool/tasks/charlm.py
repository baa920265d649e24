"""Character (or byte, or word) language model: model, model-file contract, training task.

Model file: task "charlm"; config {"cell", "hidden", "layers", "embed", "dropout",
"reset_after", "nonlinearity", "unit"}; meta["vocab"] = {"unit": unit, "tokens": [...]} where
tokens[i] is the string for id i (for unit "byte": the ints 0..255). Parameters:
embed.weight (V, E), rnn.weight_ih_l0 ... (seqtool.nn names, unidirectional), head.weight (V, H),
head.bias (V,).

Training is truncated BPTT torch-rnn style: the training ids are cut into N parallel streams
(one per batch row); consecutive chunks of seq_len steps continue each stream, and the hidden
state is carried from one chunk to the next (detached, so gradients stop at chunk boundaries).
"""

from __future__ import annotations

import numpy as np

from seqtool import functional as F
from seqtool import modelfile
from seqtool.autograd import Tensor, no_grad
from seqtool.data import text as textdata
from seqtool.errors import SeqtoolError, UsageError
from seqtool.losses import cross_entropy
from seqtool.nn import GRU, LSTM, RNN, Embedding, Linear, Module
from seqtool.xp import to_host

__all__ = ["CharLM", "CharLMTask", "DEFAULTS", "defaults_for", "load_charlm", "build_charlm", "encode_text", "decode",
           "config_of"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
CONFIG_KEYS = ("cell", "hidden", "layers", "embed", "dropout", "reset_after", "nonlinearity", "unit")
# Measured on tinyshakespeare (1.1 MB), 2 shared cores, --time-budget 60: 2x LSTM 128, batch 32,
# seq-len 64 reached val 1.88 nats/char; 2x LSTM 256, batch 64, seq-len 100 only 2.07 (fewer updates).
DEFAULTS = {"cell": "lstm", "hidden": 128, "layers": 2, "embed": 64, "dropout": 0.0,
            "optimizer": "adam", "lr": 2e-3, "clip_norm": 5.0, "batch": 32, "seq_len": 64,
            "val_frac": 0.1}
# A long budget gives a 2x128 model more passes over a ~1 MB text than it can use (1800 s on
# tinyshakespeare: val 1.53 by 900 s, then flat). From LONG_BUDGET_S on, the architecture
# defaults are a wider network with dropout instead; explicit options always win.
LONG_BUDGET_S = 1200.0
LONG_BUDGET_DEFAULTS = {"hidden": 256, "dropout": 0.25}


def defaults_for(time_budget: float | None) -> dict:
    """The DEFAULTS that apply to a run with this --time-budget (None: no budget)."""
    if time_budget is not None and time_budget >= LONG_BUDGET_S:
        return {**DEFAULTS, **LONG_BUDGET_DEFAULTS}
    return dict(DEFAULTS)


_EVAL_STREAMS = 128  # parallel streams over the validation text (kernels like wide batches)
_EVAL_CHUNK = 256  # steps per kernel call when evaluating (bounds the saved-gates memory)
_EVAL_WARMUP = 64  # preceding tokens run (not scored) to warm up each stream's state


class CharLM(Module):
    """Embedding -> stacked unidirectional RNN -> linear head, time-major."""

    def __init__(self, vocab_size: int, embed: int, hidden: int, layers: int, cell: str = "lstm",
                 dropout: float = 0.0, reset_after: bool = True, nonlinearity: str = "tanh",
                 rng: np.random.Generator | None = None):
        super().__init__()
        if cell not in _CELLS:
            raise UsageError(f"unknown cell {cell!r}; choose one of: {', '.join(_CELLS)}")
        rng = rng if rng is not None else np.random.default_rng()
        self.vocab_size, self.cell, self.dropout = int(vocab_size), cell, float(dropout)
        self.embed = Embedding(vocab_size, embed, rng=rng)
        self.rnn = _CELLS[cell](embed, hidden, layers, dropout=dropout, reset_after=reset_after,
                                nonlinearity=nonlinearity, rng=rng)
        self.head = Linear(hidden, vocab_size, rng=rng)

    def forward(self, tokens, state=None):
        """tokens (T, N) int -> logits (T, N, V), new state ((h, c) for LSTM, else h; (L, N, H))."""
        x = self.embed(tokens)  # (T, N, E)
        y, state = self.rnn(x, state)  # (T, N, H)
        if self.dropout and self.training:  # torch-rnn also drops after the last layer
            y = F.dropout(y, self.dropout, True, self.rnn.dropout_rng)
        return self.head(y), state  # (T, N, V)


def config_of(model: CharLM, unit: str) -> dict:
    rnn = model.rnn
    return {"cell": model.cell, "hidden": rnn.hidden_size, "layers": rnn.num_layers,
            "embed": model.embed.embedding_dim, "dropout": model.dropout,
            "reset_after": bool(rnn.reset_after), "nonlinearity": rnn.nonlinearity, "unit": unit}


def build_charlm(config: dict, vocab_size: int, rng=None) -> CharLM:
    return CharLM(vocab_size, int(config["embed"]), int(config["hidden"]), int(config["layers"]),
                  config["cell"], float(config["dropout"]), bool(config.get("reset_after", True)),
                  config.get("nonlinearity", "tanh"), rng=rng)


def load_charlm(path) -> tuple[CharLM, dict]:
    """(model in eval mode, meta) from a charlm model or checkpoint file."""
    arrays, meta = modelfile.load_model(path, expect_task="charlm")
    try:
        config, vocab = meta["config"], meta["vocab"]
        model = build_charlm(config, len(vocab["tokens"]), rng=np.random.default_rng(0))
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise SeqtoolError(f"{path} is not a valid charlm model ({e})") from None
    params = {k: v for k, v in arrays.items() if not k.startswith(modelfile.OPTIM_PREFIX)}
    model.load_state_dict(params)
    return model.eval(), meta


def encode_text(text, vocab: dict, unknown: str = "error") -> np.ndarray:
    """Ids (int32) of ``text`` (str; bytes or str for unit byte) under ``meta["vocab"]``.

    ``unknown``: "error" raises SeqtoolError on a token not in the vocabulary, "skip" drops it.
    """
    unit = vocab["unit"]
    if unit == "word" and unknown == "error" and textdata.UNK in vocab["tokens"]:
        unknown = "unk"
    return textdata.encode(text, vocab["tokens"], unit, unknown=unknown)


def decode(ids, vocab: dict):
    """str for units char/word; bytes for unit byte."""
    tokens = vocab["tokens"]
    if vocab["unit"] == "byte":
        return bytes(int(tokens[int(i)]) for i in ids)
    return "".join(tokens[int(i)] for i in ids)


def _detach(state):
    if isinstance(state, tuple):
        return tuple(s.data if isinstance(s, Tensor) else s for s in state)
    return state.data if isinstance(state, Tensor) else state


class CharLMTask:
    """The trainer's view of a charlm: batches, loss, validation, resumable position."""

    name = "charlm"

    def __init__(self, model: CharLM, corpus: textdata.Corpus, batch: int, seq_len: int,
                 reporter=None, sample_chars: int = 120):
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
        self._rng = None

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
        from seqtool.distributed import split_items

        return [(p, p[0].size) for p in split_items(batch, (1, 1), parts)]

    def evaluate(self):
        """Mean loss (nats per token) over the validation text, or None without one."""
        val, full = self.corpus.val, self.corpus.ids
        if len(val) < 2:
            return None
        offset = len(full) - len(val)
        N = max(1, min(_EVAL_STREAMS, (len(val) - 1) // 8))
        S = (len(val) - 1) // N
        starts = offset + np.arange(N) * S
        model = self.model
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        with no_grad():
            state = None
            W = int(min(_EVAL_WARMUP, offset))
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
        return {"loss": total / count, "val_tokens": count}

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
                         "val_tokens": int(len(self.corpus.val))}}
