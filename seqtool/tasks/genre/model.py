"""The genre network: [input projection] -> stacked (bi)RNN over ragged sequences -> pooling -> Linear,
and chunk-averaged class probabilities of whole pieces.

Parameters: proj.weight/bias (optional), rnn.* (seqtool.nn names), att_in.*, att_v.weight
(attention pooling only), head.weight (C, H'), head.bias (C,). Padded steps are masked out of
every pooling. Prediction cuts each piece into chunks of seq_len steps with half a chunk of
overlap (the last one aligned to the end), so the whole piece is heard, and averages the class
probabilities over the chunks.
"""

from __future__ import annotations

import numpy as np

from seqtool.core import functional as F
from seqtool.core.autograd import Tensor, no_grad
from seqtool.errors import SeqtoolError, UsageError
from seqtool.nn import GRU, LSTM, RNN, Linear, Module
from seqtool.core.xp import to_host

__all__ = ["GenreNet", "POOLS", "config_of", "build_genre", "pad_batch", "chunk_probabilities"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
POOLS = ("last", "mean", "attention")
_MASK_NEG = 1e4  # added to padded steps' attention scores: exp(-1e4) is 0 in float32


class GenreNet(Module):
    """[Linear input projection] -> stacked (bi)RNN over ragged sequences -> pooling -> Linear.

    forward(x (T, N, D), lengths (N,)) -> logits (N, C).
    """

    def __init__(self, input_size: int, n_classes: int, hidden: int = 128, layers: int = 2,
                 cell: str = "lstm", bidirectional: bool = True, dropout: float = 0.0, proj: int = 0,
                 pool: str = "attention", attention: int = 64, rng=None):
        super().__init__()
        if cell not in _CELLS:
            raise UsageError(f"unknown cell {cell!r}; choose one of: {', '.join(_CELLS)}")
        if pool not in POOLS:
            raise UsageError(f"unknown pooling {pool!r}; choose one of: {', '.join(POOLS)}")
        if n_classes < 2:
            raise SeqtoolError(f"classification needs at least 2 classes, got {n_classes}")
        rng = rng if rng is not None else np.random.default_rng()
        self.input_size, self.n_classes = int(input_size), int(n_classes)
        self.cell, self.pool, self.dropout, self.proj_size = cell, pool, float(dropout), int(proj)
        self.attention_size = int(attention)
        d = self.input_size
        if self.proj_size:
            self.proj = Linear(d, self.proj_size, rng=rng)
            d = self.proj_size
        self.rnn = _CELLS[cell](d, hidden, layers, bidirectional=bidirectional, dropout=dropout, rng=rng)
        out = hidden * (2 if bidirectional else 1)
        if pool == "attention":
            # additive attention over time (Bahdanau-style scorer with a learned query vector)
            self.att_in = Linear(out, self.attention_size, rng=rng)
            self.att_v = Linear(self.attention_size, 1, bias=False, rng=rng)
        self.head = Linear(out, self.n_classes, rng=rng)

    def forward(self, x, lengths):
        """x (T, N, D) float, lengths (N,) ints in [1, T] -> logits (N, C)."""
        pooled, _ = self.encode(x, lengths)
        if self.dropout and self.training:
            pooled = F.dropout(pooled, self.dropout, True, self.rnn.dropout_rng)
        return self.head(pooled)

    def encode(self, x, lengths):
        """(pooled (N, H'), attention weights (T, N) or None) for x (T, N, D)."""
        lengths = to_host(lengths).astype(np.int64, copy=False)
        if not isinstance(x, Tensor):
            x = Tensor(self.on_device(x))
        T, N, _ = x.shape
        if N and lengths.min() < 1:
            raise SeqtoolError("every sequence needs at least one step")
        if self.proj_size:
            x = F.tanh(self.proj(x))  # (T, N, P)
        y, state = self.rnn(x, lengths=lengths)  # (T, N, H')
        mask = self.on_device((np.arange(T)[:, None] < lengths[None, :]).astype(y.dtype)[:, :, None])  # (T, N, 1)
        if self.pool == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (L*dirs, N, H)
            dirs = self.rnn.num_directions
            # with lengths the forward direction stops at step len-1 and the backward one ends at
            # step 0: both final states have read the whole (unpadded) sequence
            last = [F.getitem(h_n, -dirs + d) for d in range(dirs)]
            return (last[0] if dirs == 1 else F.concat(last, axis=1)), None
        if self.pool == "mean":
            inv = self.on_device((1.0 / lengths.astype(y.dtype))[:, None])  # (N, 1)
            return F.sum(y * mask, axis=0) * inv, None
        scores = self.att_v(F.tanh(self.att_in(y)))  # (T, N, 1)
        scores = scores + (mask - 1.0) * _MASK_NEG  # padded steps get no weight
        weights = F.softmax(scores, axis=0)  # (T, N, 1)
        return F.sum(y * weights, axis=0), weights.data[:, :, 0]  # weights stay on the device


def config_of(model: GenreNet, seq_len: int) -> dict:
    rnn = model.rnn
    return {"cell": model.cell, "hidden": rnn.hidden_size, "layers": rnn.num_layers,
            "bidirectional": bool(rnn.bidirectional), "dropout": model.dropout, "proj": model.proj_size,
            "pool": model.pool, "attention": model.attention_size, "input_size": model.input_size,
            "seq_len": int(seq_len)}


def build_genre(config: dict, n_classes: int, rng=None) -> GenreNet:
    return GenreNet(int(config["input_size"]), n_classes, int(config["hidden"]), int(config["layers"]),
                    config["cell"], bool(config["bidirectional"]), float(config["dropout"]),
                    int(config.get("proj", 0)), config.get("pool", "attention"),
                    int(config.get("attention", 64)), rng=rng)


# ------------------------------------------------------------------------------------- batching


def pad_batch(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Time-major zero-padded (T, N, D) float32 and lengths (N,) int64."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    T, D = int(lengths.max()), seqs[0].shape[1]
    x = np.zeros((T, len(seqs), D), np.float32)
    for i, s in enumerate(seqs):
        x[:len(s), i] = s
    return x, lengths


def chunk_probabilities(model: GenreNet, pieces_features, seq_len: int, batch_steps: int = 32768):
    """(P, C) class probabilities of each piece, averaged over chunks of seq_len steps
    (hop seq_len // 2) that together cover the whole piece."""
    from seqtool.data.scores import chunk_starts

    hop = max(1, seq_len // 2)
    owners, windows = [], []
    for i, f in enumerate(pieces_features):
        for s in chunk_starts(len(f), seq_len, hop):
            owners.append(i)
            windows.append(f[s:s + seq_len])
    owners = np.array(owners, np.int64)
    # sort by length so each batch is nearly padding-free
    order = np.argsort([len(w) for w in windows], kind="stable")
    probs = np.zeros((len(windows), model.n_classes), np.float64)
    was_training = model.training
    model.eval()
    with no_grad():
        k = 0
        while k < len(order):
            # ascending lengths: the 256th window from here bounds every batch that starts here
            longest = len(windows[order[min(k + 255, len(order) - 1)]])
            n = max(1, min(256, batch_steps // max(longest, 1)))
            idx = order[k:k + n]
            x, lengths = pad_batch([windows[j] for j in idx])
            z = to_host(model(x, lengths).data).astype(np.float64)
            z = np.exp(z - z.max(axis=1, keepdims=True))
            probs[idx] = z / z.sum(axis=1, keepdims=True)
            k += n
    model.train(was_training)
    out = np.zeros((len(pieces_features), model.n_classes))
    np.add.at(out, owners, probs)
    counts = np.bincount(owners, minlength=len(pieces_features)).astype(np.float64)
    return out / counts[:, None]
