"""The encoder-decoder (Luong et al. 2015, with Bahdanau's additive scorer as an option)::

    encoder   source embedding -> stacked (optionally bidirectional) RNN/LSTM/GRU over the
              whole source in one kernel call per layer and direction (ragged `lengths`);
              bidirectional: hidden/2 units per direction, so the memory has `hidden` features
              and the decoder starts from [forward; backward] final states of each layer.
    decoder   target embedding (+ the previous attentional vector: input feeding) -> stacked
              unidirectional RNN, one step at a time (seqtool.nn.cell_step); without input
              feeding (attention none, or --no-input-feeding) and with full teacher forcing,
              one whole-sequence call per layer, and the attention takes all T queries at once;
              attention none: the decoder sees the source only through its initial state
              (the fixed-vector model); otherwise seqtool.nn.Attention (dot, general,
              additive) gives h~ = tanh(W_c [c; h]); logits = W_out h~.

Model file: task "seq2seq"; config {"cell", "hidden", "layers", "embed", "dropout",
"bidirectional", "attention", "input_feeding" (absent in older files: on), "unit"}; the
weights keep the names they had before the attention was a layer of its own (attn_key.weight,
attn_query.weight, attn_v, attn_out.weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtool.core import functional as F
from seqtool.core.autograd import Tensor
from seqtool.errors import UsageError
from seqtool.nn import ATTENTIONS, GRU, LSTM, RNN, Attention, Embedding, Linear, Module, cell_step
from seqtool.tasks.seq2seq.text import PAD
from seqtool.core.xp import asarray_on, to_host

__all__ = ["CONFIG_KEYS", "OLDER_FILE_CONFIG", "Memory", "Seq2Seq", "config_of", "build_seq2seq"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
CONFIG_KEYS = ("cell", "hidden", "layers", "embed", "dropout", "bidirectional", "attention",
               "input_feeding", "unit")
# Config keys added after the first model files were written, as those files behave.
OLDER_FILE_CONFIG = {"input_feeding": True}
# The attention layer's weights in model files: "attn_key.weight" is "attn.key.weight" here.
_FILE_PREFIX, _LAYER_PREFIX = "attn_", "attn."


@dataclass
class Memory:
    """What the decoder attends to, for one batch of sources."""

    values: Tensor | None  # (N, S, H) encoder outputs
    keys: Tensor | None  # (N, S, H or A): values, W_a values or W_k values + b
    mask: np.ndarray  # (N, S) bool, False at padding; on the model's device

    def select(self, rows: np.ndarray) -> "Memory":
        """The memory of the given batch rows (beam search); no gradient."""
        rows = asarray_on(rows, like=self.mask)
        pick = (lambda t: None if t is None else Tensor(t.data[rows]))
        return Memory(pick(self.values), pick(self.keys), self.mask[rows])


class Seq2Seq(Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, embed: int, hidden: int, layers: int = 1,
                 cell: str = "lstm", dropout: float = 0.0, bidirectional: bool = False,
                 attention: str = "general", input_feeding: bool = True, rng=None):
        super().__init__()
        if cell not in _CELLS:
            raise UsageError(f"unknown cell {cell!r}; choose one of: {', '.join(_CELLS)}")
        if attention not in ATTENTIONS:
            raise UsageError(f"unknown attention {attention!r}; choose one of: {', '.join(ATTENTIONS)}")
        if bidirectional and hidden % 2:
            raise UsageError(f"a bidirectional encoder splits --hidden between its two directions: "
                             f"give an even number, not {hidden}")
        rng = rng if rng is not None else np.random.default_rng()
        self.cell, self.hidden, self.layers, self.dropout = cell, int(hidden), int(layers), float(dropout)
        self.bidirectional, self.attention = bool(bidirectional), attention
        self.input_feed = attention != "none" and bool(input_feeding)
        H = self.hidden
        # N(0, 1) embeddings (torch's default) saturate small LSTMs; scale them like the weights.
        self.src_embed = Embedding(src_vocab, embed, padding_idx=PAD, rng=rng)
        self.tgt_embed = Embedding(tgt_vocab, embed, padding_idx=PAD, rng=rng)
        self.src_embed.weight.data *= 0.1
        self.tgt_embed.weight.data *= 0.1
        enc_h = H // 2 if bidirectional else H
        self.encoder = _CELLS[cell](embed, enc_h, layers, dropout=dropout, bidirectional=bidirectional,
                                    rng=rng)
        self.decoder = _CELLS[cell](embed + (H if self.input_feed else 0), H, layers, dropout=dropout,
                                    rng=rng)
        if attention != "none":
            self.attn = Attention(attention, H, rng=rng)
        self.out = Linear(H, tgt_vocab, rng=rng)
        self.dropout_rng = self.encoder.dropout_rng

    # ---- pieces shared by training and decoding
    def _drop(self, x):
        if self.dropout and self.training:
            return F.dropout(x, self.dropout, True, self.dropout_rng)
        return x

    def encode(self, src: np.ndarray, lengths: np.ndarray):
        """src (S, N) ids, lengths (N,) -> (Memory, decoder start state: list per layer)."""
        S, N = src.shape
        x = self._drop(self.src_embed(src))  # (S, N, E)
        out, state = self.encoder(x, None, lengths)  # out (S, N, H)
        lstm = self.cell == "lstm"
        h_n, c_n = state if lstm else (state, None)  # (L * dirs, N, H / dirs)
        start = []
        for layer in range(self.layers):
            if self.bidirectional:
                h = F.concat([h_n[2 * layer], h_n[2 * layer + 1]], axis=1)
                c = F.concat([c_n[2 * layer], c_n[2 * layer + 1]], axis=1) if lstm else None
            else:
                h, c = h_n[layer], (c_n[layer] if lstm else None)
            start.append((h, c) if lstm else h)
        mask = self.on_device(np.arange(S)[None, :] < to_host(lengths)[:, None])  # (N, S)
        if self.attention == "none":
            return Memory(None, None, mask), start
        values = self._drop(out).transpose(1, 0, 2)  # (N, S, H)
        return Memory(values, self.attn.keys(values), mask), start

    def step(self, emb, feed, state, memory: Memory):
        """One decoder step: emb (N, E) of the previous target token, feed (N, H) the previous
        attentional vector (None without attention) -> (output (N, H), new state, weights (N, S))."""
        x = F.concat([emb, feed], axis=1) if self.input_feed else emb
        new_state = []
        for layer in range(self.layers):
            x, s = cell_step(self.cell, x, state[layer], *self.decoder._params(layer, "", x.dtype))
            new_state.append(s)
            if layer < self.layers - 1:
                x = self._drop(x)
        if self.attention == "none":
            return self._drop(x), new_state, None
        out, weights = self._attend(x, memory)
        return out, new_state, weights

    def _attend(self, top, memory: Memory):
        """Top decoder states (N, H), or (N, T, H) for every step at once -> (attentional
        vectors h~ = tanh(W_c [c; h]) after dropout, attention weights (N, [T,] S))."""
        out, weights = self.attn(top, memory.keys, memory.values, memory.mask)
        return self._drop(out), weights

    def named_parameters(self, prefix: str = ""):
        """In the order of model files from before the attention layer: additive attention's v
        was the model's own parameter, so it came first (optimizer state is stored by index)."""
        params = list(super().named_parameters(prefix))
        first = [(n, p) for n, p in params if n.endswith(_LAYER_PREFIX + "v")]
        return iter(first + [(n, p) for n, p in params if not n.endswith(_LAYER_PREFIX + "v")])

    def state_dict(self) -> dict:
        """The weights under their model-file names (see _FILE_PREFIX)."""
        return {_file_name(k): v for k, v in super().state_dict().items()}

    def load_state_dict(self, state: dict, strict: bool = True):
        return super().load_state_dict({_layer_name(k): v for k, v in state.items()}, strict)

    def initial_feed(self, n: int):
        return Tensor(self.on_device(np.zeros((n, self.hidden), np.float32))) if self.input_feed else None

    # ---- training forward
    def forward(self, src, src_len, tgt_in, teacher_forcing: float = 1.0, rng=None):
        """Logits (T, N, V) for targets tgt_in (T, N) (starting with <sos>)."""
        memory, state = self.encode(src, src_len)
        T, N = tgt_in.shape
        emb = self._drop(self.tgt_embed(tgt_in))  # (T, N, E)
        if not self.input_feed and teacher_forcing >= 1.0:
            # Nothing feeds back: the decoder runs as one whole-sequence call per layer, and
            # attention (if any) takes every step's query at once.
            if self.cell == "lstm":
                hx = (F.stack([s[0] for s in state]), F.stack([s[1] for s in state]))
            else:
                hx = F.stack(state)
            y, _ = self.decoder(emb, hx)  # (T, N, H)
            if self.attention == "none":
                return self.out(self._drop(y))
            out, _ = self._attend(y.transpose(1, 0, 2), memory)  # (N, T, H)
            return self.out(out.transpose(1, 0, 2))
        feed = self.initial_feed(N)
        outs, logits = [], []
        sampled = teacher_forcing < 1.0
        prev_pred = None
        for t in range(T):
            e_t = emb[t]
            if sampled and t > 0:
                # Per example: the gold token with probability `teacher_forcing`, else the
                # model's own previous prediction (scheduled-sampling style).
                use_gold = rng.random(N) < teacher_forcing
                if not use_gold.all():
                    tokens = np.where(use_gold, to_host(tgt_in[t]), to_host(prev_pred))
                    e_t = self._drop(self.tgt_embed(tokens))
            out, state, _ = self.step(e_t, feed, state, memory)
            feed = out if self.input_feed else None
            if sampled:
                lg = self.out(out)
                prev_pred = lg.data.argmax(axis=1)
                logits.append(lg)
            else:
                outs.append(out)
        if sampled:
            return F.stack(logits, axis=0)
        return self.out(F.stack(outs, axis=0))  # one GEMM for all steps


def _file_name(name: str) -> str:
    return _FILE_PREFIX + name[len(_LAYER_PREFIX):] if name.startswith(_LAYER_PREFIX) else name


def _layer_name(name: str) -> str:
    return _LAYER_PREFIX + name[len(_FILE_PREFIX):] if name.startswith(_FILE_PREFIX) else name


def config_of(model: Seq2Seq, unit: str) -> dict:
    return {"cell": model.cell, "hidden": model.hidden, "layers": model.layers,
            "embed": model.src_embed.embedding_dim, "dropout": model.dropout,
            "bidirectional": model.bidirectional, "attention": model.attention,
            "input_feeding": model.input_feed, "unit": unit}


def build_seq2seq(config: dict, src_vocab: int, tgt_vocab: int, rng=None) -> Seq2Seq:
    config = {**OLDER_FILE_CONFIG, **config}
    return Seq2Seq(src_vocab, tgt_vocab, int(config["embed"]), int(config["hidden"]),
                   int(config["layers"]), config["cell"], float(config["dropout"]),
                   bool(config["bidirectional"]), config["attention"],
                   bool(config["input_feeding"]), rng=rng)
