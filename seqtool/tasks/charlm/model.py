"""Character (or byte, or word) language model: the network, its defaults and model-file contract.

Model file: task "charlm"; config {"cell", "hidden", "layers", "embed", "dropout",
"reset_after", "nonlinearity", "unit"}; meta["vocab"] = {"unit": unit, "tokens": [...]} where
tokens[i] is the string for id i (for unit "byte": the ints 0..255). Parameters:
embed.weight (V, E), rnn.weight_ih_l0 ... (seqtool.nn names, unidirectional), head.weight (V, H),
head.bias (V,).
"""

from __future__ import annotations

import numpy as np

from seqtool.core import functional as F
from seqtool.data import text as textdata
from seqtool.errors import UsageError
from seqtool.nn import GRU, LSTM, RNN, Embedding, Linear, Module

__all__ = ["CharLM", "DEFAULTS", "defaults_for", "build_charlm", "encode_text", "decode", "config_of"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
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
