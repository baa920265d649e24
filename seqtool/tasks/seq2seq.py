"""Encoder-decoder translation with attention: vocabulary, model, training task, greedy and beam search.

Model (Luong et al. 2015, with Bahdanau's additive scorer as an option)::

    encoder   source embedding -> stacked (optionally bidirectional) RNN/LSTM/GRU over the
              whole source in one kernel call per layer and direction (ragged `lengths`);
              bidirectional: hidden/2 units per direction, so the memory has `hidden` features
              and the decoder starts from [forward; backward] final states of each layer.
    decoder   target embedding (+ the previous attentional vector: input feeding) -> stacked
              unidirectional RNN, one kernel call per layer and step (T=1); without input
              feeding (attention none, or --no-input-feeding) and with full teacher forcing,
              one whole-sequence call per layer, and the attention takes all T queries at once;
              attention none: the decoder sees the source only through its initial state
              (the fixed-vector model);
              dot:      score(h, s) = h . s
              general:  score(h, s) = h . W_a s                 (W_a s precomputed per batch)
              additive: score(h, s) = v . tanh(W_q h + W_k s)   (W_k s precomputed per batch)
              context c = sum_s softmax(score)_s s (padded source positions masked);
              attentional vector h~ = tanh(W_c [c; h]); logits = W_out h~.

Model file: task "seq2seq"; config {"cell", "hidden", "layers", "embed", "dropout",
"bidirectional", "attention", "input_feeding" (absent in older files: on), "unit"};
meta["vocab"] = {"unit", "source": [...], "target": [...]} (token i of each side, specials
first: <pad> <unk> <sos> <eos>); meta["data"] has
"max_target_len" (the default decoding limit grows from it).

Word units split text into words and punctuation; a token written without a space before it
carries the joiner mark (U+FFED), so detokenize(tokenize(s)) gives s back with single spaces.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from seqtool import functional as F
from seqtool import modelfile
from seqtool.autograd import Function, Tensor, no_grad
from seqtool.errors import SeqtoolError, UsageError
from seqtool.losses import cross_entropy
from seqtool.nn import GRU, LSTM, RNN, Embedding, Linear, Module
from seqtool.nn.module import Parameter
from seqtool.xp import asarray_on, to_host, zeros

__all__ = [
    "PAD", "UNK", "SOS", "EOS", "SPECIALS", "JOINER", "ATTENTIONS", "DEFAULTS", "Vocab", "tokenize",
    "detokenize", "Seq2Seq", "Seq2SeqTask", "DotAttention", "AdditiveAttention", "build_seq2seq", "OLDER_FILE_CONFIG",
    "load_seq2seq", "Translator", "Hypothesis", "LSTMCellFn", "GRUCellFn",
]  # fmt: skip

PAD, UNK, SOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")
JOINER = "\uffed"  # marks a token glued to the previous one (OpenNMT's joiner)
ATTENTIONS = ("none", "dot", "general", "additive")
UNITS = ("word", "char")
_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
_WORD_RE = re.compile(r"\w+|[^\w\s]")
# SCAN (16.7k pairs) and Tatoeba en-fr (68k) on 2 shared cores: 1 layer of 256 with general
# attention learns both within minutes; batches of 64 keep the per-step Python cost amortised.
# No input feeding by default: on Tatoeba in 30 minutes it ran 18.5 epochs instead of 12 and
# reached dev BLEU 36.3 instead of 28.1.
DEFAULTS = {"cell": "lstm", "hidden": 256, "layers": 1, "embed": 128, "dropout": 0.1,
            "bidirectional": False, "attention": "general", "input_feeding": False, "unit": "word",
            "optimizer": "adam", "lr": 1e-3, "clip_norm": 5.0, "batch": 64, "val_frac": 0.05,
            "min_count": 1, "teacher_forcing": 1.0}
CONFIG_KEYS = ("cell", "hidden", "layers", "embed", "dropout", "bidirectional", "attention",
               "input_feeding", "unit")
# Config keys added after the first model files were written, as those files behave.
OLDER_FILE_CONFIG = {"input_feeding": True}
_VAL_DECODE = 500  # validation pairs decoded greedily for exact match / BLEU at each validation
_EVAL_BATCH = 128
_NEG = -1e30  # masked attention score: exp() underflows to exactly 0


# ----------------------------------------------------------------------------- text <-> tokens


def tokenize(text: str, unit: str) -> list[str]:
    """Tokens of one sentence; whitespace runs count as one space."""
    if unit == "char":
        return list(" ".join(text.split()))
    tokens = []
    prev_end = None
    for m in _WORD_RE.finditer(text):
        glued = prev_end is not None and m.start() == prev_end
        tokens.append(JOINER + m.group() if glued else m.group())
        prev_end = m.end()
    return tokens


def detokenize(tokens, unit: str) -> str:
    if unit == "char":
        return "".join(tokens)
    out = []
    for tok in tokens:
        if tok.startswith(JOINER) and out:
            out.append(tok[len(JOINER):])
        else:
            if out:
                out.append(" ")
            out.append(tok[len(JOINER):] if tok.startswith(JOINER) else tok)
    return "".join(out)


def display_token(tok: str) -> str:
    """A token as a person reads it (no joiner mark, visible space)."""
    tok = tok[len(JOINER):] if tok.startswith(JOINER) else tok
    return "\u2423" if tok == " " else tok


class Vocab:
    """Token <-> id for one side; ids 0..3 are the specials."""

    def __init__(self, tokens: list[str]):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise SeqtoolError(f"a seq2seq vocabulary must start with {' '.join(SPECIALS)}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences, min_count: int = 1) -> "Vocab":
        """Tokens seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(tok for toks in sentences for tok in toks)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens) -> np.ndarray:
        get = self.index.get
        return np.array([get(t, UNK) for t in tokens], dtype=np.int64)

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]


# ----------------------------------------------------------------------------- attention ops


def _masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the source axis of scores (N, T, S), mask (N, S) False at padding."""
    mask = mask[:, None, :]
    scores = np.where(mask, scores, scores.dtype.type(_NEG))
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    e *= mask
    return e / e.sum(axis=-1, keepdims=True)


def _queries(q):
    """(N, D) -> (N, 1, D): one decoder step is a sequence of one query."""
    return q[:, None, :] if q.ndim == 2 else q


def _attention_backward(a, values, g_ctx, g_a):
    """Shared tail: (d scores (N, T, S), d values (N, S, Dv)) from the context/weights gradients,
    each None (not used downstream) or shaped like the forward's outputs ((N, [T,] ...))."""
    g_ctx = (zeros(a.shape[:2] + values.shape[2:], a.dtype, like=a) if g_ctx is None
             else _queries(g_ctx))
    g_a = None if g_a is None else _queries(g_a)
    dv = np.matmul(a.transpose(0, 2, 1), g_ctx)  # (N, S, Dv)
    da = np.matmul(g_ctx, values.transpose(0, 2, 1))  # (N, T, S)
    if g_a is not None:
        da = da + g_a
    ds = a * (da - (a * da).sum(axis=-1, keepdims=True))  # softmax backward; 0 where masked
    return ds, dv


class DotAttention(Function):
    """(q (N, D) or (N, T, D), keys (N, S, D), values (N, S, Dv); mask (N, S) bool) ->
    (context (N, [T,] Dv), weights (N, [T,] S)), score = q . key (Luong dot; "general" passes
    keys = W_a s). T queries: every decoder step at once (no input feeding)."""

    def forward(self, q, keys, values, mask=None):
        self.single = q.ndim == 2
        q = _queries(q)
        scores = np.matmul(q, keys.transpose(0, 2, 1))  # (N, T, S)
        a = _masked_softmax(scores, mask)
        ctx = np.matmul(a, values)  # (N, T, Dv)
        self.save_for_backward(q, keys, values, a)
        return (ctx[:, 0], a[:, 0]) if self.single else (ctx, a)

    def backward(self, g_ctx, g_a):
        q, keys, values, a = self.saved_tensors
        ds, dv = _attention_backward(a, values, g_ctx, g_a)
        dq = np.matmul(ds, keys)  # (N, T, D)
        dk = np.matmul(ds.transpose(0, 2, 1), q)  # (N, S, D)
        return (dq[:, 0] if self.single else dq), dk, dv


class AdditiveAttention(Function):
    """(q (N, [T,] A) = W_q h, keys (N, S, A) = W_k s + b, v (A,), values (N, S, Dv); mask) ->
    (context (N, [T,] Dv), weights (N, [T,] S)), score = v . tanh(q + key) (Bahdanau's MLP scorer)."""

    def forward(self, q, keys, v, values, mask=None):
        self.single = q.ndim == 2
        q = _queries(q)
        e = np.tanh(keys[:, None, :, :] + q[:, :, None, :])  # (N, T, S, A)
        scores = e @ v  # (N, T, S)
        a = _masked_softmax(scores, mask)
        ctx = np.matmul(a, values)  # (N, T, Dv)
        self.save_for_backward(e, v, values, a)
        return (ctx[:, 0], a[:, 0]) if self.single else (ctx, a)

    def backward(self, g_ctx, g_a):
        e, v, values, a = self.saved_tensors
        ds, dvals = _attention_backward(a, values, g_ctx, g_a)
        dpre = (ds[..., None] * v) * (1 - e * e)  # (N, T, S, A)
        dv = np.einsum("ntsa,nts->a", e, ds)
        dq = dpre.sum(axis=2)  # (N, T, A)
        return (dq[:, 0] if self.single else dq), dpre.sum(axis=1), dv, dvals


# ----------------------------------------------------------------------------- decoder cells
# One decoder step is two GEMMs (input and recurrent projections, through F.linear) and one fused
# gate op. Measured CPU time per training step on SCAN batches (N=64, one thread): H=256 0.110 s
# with these cells, 0.104 s calling the whole-sequence LSTM kernel with T=1; H=128 0.040 vs
# 0.038 s. The GEMMs dominate either way; the cells keep a step in plain NumPy, gradchecked alone,
# and tests check them against the kernels.


def _sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * x)  # exact, and no overflow warning for large |x|


class LSTMCellFn(Function):
    """(gates (N, 4H) = x W_ih^T + b_ih + h W_hh^T + b_hh, c (N, H)) -> (h' (N, H), c' (N, H)),
    gate order i, f, g, o (PyTorch's)."""

    def forward(self, gates, c):
        H = c.shape[1]
        i, f = _sigmoid(gates[:, :H]), _sigmoid(gates[:, H:2 * H])
        g, o = np.tanh(gates[:, 2 * H:3 * H]), _sigmoid(gates[:, 3 * H:])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        self.save_for_backward(i, f, g, o, c, tc)
        return o * tc, c_new

    def backward(self, dh, dc):
        i, f, g, o, c, tc = self.saved_tensors
        dh = np.zeros_like(tc) if dh is None else dh
        dct = dh * o * (1 - tc * tc)
        if dc is not None:
            dct = dct + dc
        dgates = np.concatenate([dct * g * i * (1 - i), dct * c * f * (1 - f),
                                 dct * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        return dgates, dct * f


class GRUCellFn(Function):
    """(gi (N, 3H) = x W_ih^T + b_ih, gh (N, 3H) = h W_hh^T + b_hh, h (N, H)) -> h' (N, H), gate
    order r, z, n with the reset gate applied after the recurrent product (PyTorch's GRU)."""

    def forward(self, gi, gh, h):
        H = h.shape[1]
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        ghn = gh[:, 2 * H:]
        n = np.tanh(gi[:, 2 * H:] + r * ghn)
        self.save_for_backward(r, z, n, ghn, h)
        return (1 - z) * n + z * h

    def backward(self, dh_new):
        r, z, n, ghn, h = self.saved_tensors
        dpre_n = dh_new * (1 - z) * (1 - n * n)
        dpre_r = dpre_n * ghn * r * (1 - r)
        dpre_z = dh_new * (h - n) * z * (1 - z)
        dgi = np.concatenate([dpre_r, dpre_z, dpre_n], axis=1)
        dgh = np.concatenate([dpre_r, dpre_z, dpre_n * r], axis=1)
        return dgi, dgh, dh_new * z


# ----------------------------------------------------------------------------- the model


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
        if attention == "general":
            self.attn_key = Linear(H, H, bias=False, rng=rng)
        elif attention == "additive":
            self.attn_key = Linear(H, H, rng=rng)
            self.attn_query = Linear(H, H, bias=False, rng=rng)
            self.attn_v = Parameter(rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), H).astype(np.float32))
        if attention != "none":
            self.attn_out = Linear(2 * H, H, bias=False, rng=rng)  # Luong's W_c
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
        if self.attention == "dot":
            keys = values
        else:
            keys = self.attn_key(values)
        return Memory(values, keys, mask), start

    def _layer(self, layer: int, x, state):
        """One decoder layer, one step: x (N, D) -> (h (N, H), new state); the same weights
        as the whole-sequence decoder call (PyTorch layout)."""
        w_ih, w_hh, b_ih, b_hh = self.decoder._params(layer, "", x.dtype)
        if self.cell == "lstm":
            h, c = state
            h, c = LSTMCellFn.apply(F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh), c)
            return h, (h, c)
        if self.cell == "gru":
            h = GRUCellFn.apply(F.linear(x, w_ih, b_ih), F.linear(state, w_hh, b_hh), state)
        else:
            h = F.tanh(F.linear(x, w_ih, b_ih) + F.linear(state, w_hh, b_hh))
        return h, h

    def step(self, emb, feed, state, memory: Memory):
        """One decoder step: emb (N, E) of the previous target token, feed (N, H) the previous
        attentional vector (None without attention) -> (output (N, H), new state, weights (N, S))."""
        x = F.concat([emb, feed], axis=1) if self.input_feed else emb
        new_state = []
        for layer in range(self.layers):
            x, s = self._layer(layer, x, state[layer])
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
        if self.attention == "additive":
            ctx, weights = AdditiveAttention.apply(self.attn_query(top), memory.keys, self.attn_v,
                                                   memory.values, mask=memory.mask)
        else:
            ctx, weights = DotAttention.apply(top, memory.keys, memory.values, mask=memory.mask)
        return self._drop(F.tanh(self.attn_out(F.concat([ctx, top], axis=-1)))), weights

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


# ----------------------------------------------------------------------------- decoding


@dataclass
class Hypothesis:
    ids: list  # target ids without <eos>
    score: float  # sum of log-probabilities (with <eos> when it ended)
    attention: np.ndarray | None  # (steps, S): one row per emitted token, <eos> included


class Translator:
    """A loaded model with its vocabularies: text in, text out (greedy or beam search)."""

    def __init__(self, model: Seq2Seq, unit: str, src: Vocab, tgt: Vocab, max_target_len: int = 50,
                 reverse: bool = False):
        self.model, self.unit, self.src, self.tgt = model, unit, src, tgt
        self.max_target_len = int(max_target_len)
        self.reverse = bool(reverse)  # the training file's columns were swapped

    @classmethod
    def from_meta(cls, model: Seq2Seq, meta: dict) -> "Translator":
        vocab = meta["vocab"]
        if vocab["unit"] not in UNITS:
            raise ValueError(f"unknown unit {vocab['unit']!r}")
        return cls(model.eval(), vocab["unit"], Vocab(vocab["source"]), Vocab(vocab["target"]),
                   int((meta.get("data") or {}).get("max_target_len", 50)),
                   bool((meta.get("data_options") or {}).get("reverse", False)))

    def source_ids(self, text: str) -> tuple[list[str], np.ndarray]:
        toks = tokenize(text, self.unit)
        return toks, self.src.encode(toks)

    def default_max_len(self, src_len: int) -> int:
        return max(self.max_target_len, 2 * src_len) + 5

    def text(self, ids) -> str:
        return detokenize(self.tgt.decode(ids), self.unit)

    @no_grad()
    def greedy(self, sources: list[np.ndarray], max_len: int | None = None) -> list[Hypothesis]:
        """Batched greedy decoding of id arrays (each non-empty); results in input order."""
        model = self.model
        N = len(sources)
        lengths = np.array([len(s) for s in sources], np.int64)
        S = int(lengths.max())
        src = np.full((S, N), PAD, np.int64)
        for i, s in enumerate(sources):
            src[:len(s), i] = s
        limits = np.array([max_len or self.default_max_len(int(n)) for n in lengths])
        memory, state = model.encode(src, lengths)
        feed = model.initial_feed(N)
        tok = np.full(N, SOS, np.int64)
        done = np.zeros(N, bool)
        steps, attn, scores = [], [], np.zeros(N)
        for t in range(int(limits.max())):
            out, state, weights = model.step(model.tgt_embed(tok), feed, state, memory)
            feed = out if model.input_feed else None
            logits = to_host(model.out(out).data)  # (N, V)
            tok = logits.argmax(axis=1)
            z = logits - logits.max(axis=1, keepdims=True)
            logp = -np.log(np.exp(z).sum(axis=1))  # log-softmax at the argmax (z = 0 there)
            scores += np.where(done, 0.0, logp)
            steps.append(tok)
            if weights is not None:
                attn.append(to_host(weights.data))
            done |= (tok == EOS) | (t + 1 >= limits)
            if done.all():
                break
        steps = np.stack(steps, axis=1)  # (N, t)
        attn = np.stack(attn, axis=1) if attn else None  # (N, t, S)
        results = []
        for i in range(N):
            row = steps[i]
            ends = np.flatnonzero(row == EOS)
            n = int(ends[0]) if ends.size else min(len(row), int(limits[i]))
            rows = n + 1 if ends.size else n  # the <eos> step has an attention row too
            a = attn[i, :rows, :lengths[i]] if attn is not None else None
            results.append(Hypothesis(row[:n].tolist(), float(scores[i]), a))
        return results

    @no_grad()
    def beam(self, source: np.ndarray, beam: int, length_penalty: float = 1.0,
             max_len: int | None = None) -> Hypothesis:
        """Beam search for one source: hypotheses that end with <eos> are set aside; the search
        stops when `beam` have ended (or at max_len) and the best by score / length**alpha wins
        (length counts <eos>, as in fairseq)."""
        model = self.model
        limit = max_len or self.default_max_len(len(source))
        src = np.asarray(source, np.int64)[:, None]
        memory, state = model.encode(src, np.array([len(source)], np.int64))
        feed = model.initial_feed(1)
        seqs = np.zeros((1, 0), np.int64)
        attn = np.zeros((1, 0, len(source)), np.float32)
        scores = np.zeros(1)
        tok = np.array([SOS], np.int64)
        finished: list[tuple[float, Hypothesis]] = []
        V = len(self.tgt)
        for t in range(limit):
            k = len(tok)
            mem = memory if memory.mask.shape[0] == k else memory.select(np.zeros(k, np.int64))
            out, state, weights = model.step(model.tgt_embed(tok), feed, state, mem)
            logits = to_host(model.out(out).data).astype(np.float64)
            weights = None if weights is None else to_host(weights.data)
            z = logits - logits.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (k, V)
            cand = (scores[:, None] + logp).reshape(-1)
            take = min(2 * beam, cand.size)
            top = np.argpartition(-cand, take - 1)[:take]
            top = top[np.argsort(-cand[top], kind="stable")]
            keep = []
            for flat in top:
                parent, token = divmod(int(flat), V)
                row_attn = weights[parent] if weights is not None else None
                if token == EOS or t + 1 >= limit:
                    ids = seqs[parent].tolist() + ([] if token == EOS else [token])
                    a = (np.concatenate([attn[parent], row_attn[None]], axis=0)
                         if row_attn is not None else None)
                    length = len(ids) + (token == EOS)
                    norm = float(cand[flat]) / max(length, 1) ** length_penalty
                    finished.append((norm, Hypothesis(ids, float(cand[flat]), a)))
                    continue
                keep.append((parent, token, flat))
                if len(keep) == beam:
                    break
            if len(finished) >= beam or not keep:
                break
            parents = np.array([p for p, _, _ in keep])
            tok = np.array([tk for _, tk, _ in keep], np.int64)
            scores = cand[[f for _, _, f in keep]]
            seqs = np.concatenate([seqs[parents], tok[:, None]], axis=1)
            if weights is not None:
                attn = np.concatenate([attn[parents], weights[parents][:, None, :]], axis=1)
            rows = asarray_on(parents, like=out.data)  # on the model's device, once per step
            state = _select_state(state, rows)
            feed = Tensor(out.data[rows]) if model.input_feed else None
        finished.sort(key=lambda x: -x[0])
        return finished[0][1]


def _select_state(state, rows):
    picked = []
    for s in state:
        if isinstance(s, tuple):
            picked.append(tuple(Tensor(x.data[rows]) for x in s))
        else:
            picked.append(Tensor(s.data[rows]))
    return picked


def load_seq2seq(path) -> Translator:
    arrays, meta = modelfile.load_model(path, expect_task="seq2seq")
    try:
        vocab = meta["vocab"]
        model = build_seq2seq(meta["config"], len(vocab["source"]), len(vocab["target"]),
                              rng=np.random.default_rng(0))
        params = {k: v for k, v in arrays.items() if not k.startswith(modelfile.OPTIM_PREFIX)}
        model.load_state_dict(params)
        return Translator.from_meta(model, meta)
    except (KeyError, TypeError, ValueError, UsageError) as e:
        raise SeqtoolError(f"{path} is not a valid seq2seq model ({e})") from None


# ----------------------------------------------------------------------------- training task


def _pad(seqs, prefix=None, suffix=None) -> np.ndarray:
    """Time-major (T, N) int64 batch padded with <pad>."""
    extra = (prefix is not None) + (suffix is not None)
    T = max(len(s) for s in seqs) + extra
    out = np.full((T, len(seqs)), PAD, np.int64)
    for i, s in enumerate(seqs):
        row = ([prefix] if prefix is not None else []) + list(s) + ([suffix] if suffix is not None else [])
        out[:len(row), i] = row
    return out


def make_batches(src_ids, tgt_ids, indices, batch: int) -> list[np.ndarray]:
    """Index groups of `batch` pairs of similar lengths (little padding); fixed for a data set."""
    tie = np.random.default_rng(0).random(len(indices))  # same order on every run: resumable
    order = sorted(range(len(indices)), key=lambda k: (len(src_ids[indices[k]]),
                                                        len(tgt_ids[indices[k]]), tie[k]))
    idx = np.asarray(indices, np.int64)[order]
    return [idx[i:i + batch] for i in range(0, len(idx), batch)]


class Seq2SeqTask:
    """The Trainer's view of seq2seq: length-bucketed batches in a fresh order each epoch."""

    name = "seq2seq"

    def __init__(self, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, src_tokens, tgt_tokens,
                 unit: str, batch: int, val_frac: float, teacher_forcing: float = 1.0,
                 references: list[str] | None = None):
        self.model, self.src_vocab, self.tgt_vocab, self.unit = model, src_vocab, tgt_vocab, unit
        self.teacher_forcing = float(teacher_forcing)
        self.src_ids = [src_vocab.encode(t) for t in src_tokens]
        self.tgt_ids = [tgt_vocab.encode(t) for t in tgt_tokens]
        n = len(self.src_ids)
        n_val = int(round(n * val_frac)) if n > 1 else 0
        perm = np.random.default_rng(0).permutation(n)  # independent of --seed: resume finds the same split
        self.val_idx = np.sort(perm[:n_val])
        self.train_idx = np.sort(perm[n_val:])
        if len(self.train_idx) == 0:
            raise SeqtoolError("no training pairs left after holding out validation pairs; lower --val-frac")
        self.batch = int(batch)
        self.batches = make_batches(self.src_ids, self.tgt_ids, self.train_idx, self.batch)
        self.val_batches = (make_batches(self.src_ids, self.tgt_ids, self.val_idx, _EVAL_BATCH)
                            if n_val else [])
        self.references = references  # detokenized targets, for validation BLEU
        self.max_target_len = int(max(len(t) for t in self.tgt_ids))
        self.position = 0
        self.order = None
        self.order_seed = None
        self._rng = None

    def _batch(self, idx):
        src = _pad([self.src_ids[i] for i in idx])
        lengths = np.array([len(self.src_ids[i]) for i in idx], np.int64)
        tgt = [self.tgt_ids[i] for i in idx]
        return src, lengths, _pad(tgt, prefix=SOS), _pad(tgt, suffix=EOS)

    # ---- trainer protocol
    def train_batches(self, rng):
        self._rng = rng
        self.model.dropout_rng = rng
        self.model.encoder.dropout_rng = rng
        self.model.decoder.dropout_rng = rng
        self.model.train()
        if self.order is None:
            self.order_seed = int(rng.integers(2**31))
            self.order = np.random.default_rng(self.order_seed).permutation(len(self.batches))
        while self.position < len(self.batches):
            k = self.order[self.position]
            self.position += 1
            yield self._batch(self.batches[k])
        self.position, self.order, self.order_seed = 0, None, None

    def loss(self, batch):
        src, lengths, tgt_in, tgt_out = batch
        logits = self.model(src, lengths, tgt_in, self.teacher_forcing, self._rng)
        return cross_entropy(logits, tgt_out, ignore_index=PAD)

    def batch_tokens(self, batch) -> int:
        return int((batch[3] != PAD).sum())

    def split_batch(self, batch, parts: int) -> list:
        """The pairs in `parts` slices (MPI ranks), each with the target tokens its loss averages."""
        from seqtool.distributed import split_items

        return [(p, int((p[3] != PAD).sum())) for p in split_items(batch, (1, 0, 1, 1), parts)]

    def epoch_progress(self) -> float:
        return self.position / len(self.batches)

    def evaluate(self):
        if not self.val_batches:
            return None
        model = self.model
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        with no_grad():
            for idx in self.val_batches:
                src, lengths, tgt_in, tgt_out = self._batch(idx)
                logits = model(src, lengths, tgt_in)
                total += float(cross_entropy(logits, tgt_out, ignore_index=PAD, reduction="sum").data)
                count += int((tgt_out != PAD).sum())
        result = {"loss": total / count}
        self.last_scores = self._decode_scores()
        result.update(self.last_scores)
        model.train(was_training)
        return result

    def on_validation(self, reporter) -> None:
        scores = getattr(self, "last_scores", None)
        if scores and not getattr(reporter, "quiet", True):
            shown = [f"exact match {100 * scores['val_exact']:.2f}%"]
            if "val_bleu" in scores:
                shown.append(f"BLEU {scores['val_bleu']:.2f}")
            reporter.info(f"  greedy on {min(len(self.val_idx), _VAL_DECODE)} validation pairs: "
                          + ", ".join(shown))

    def _decode_scores(self) -> dict:
        """Greedy exact match (and BLEU when sacrebleu is there) on up to _VAL_DECODE val pairs."""
        pick = self.val_idx[:_VAL_DECODE]
        translator = Translator(self.model, self.unit, self.src_vocab, self.tgt_vocab, self.max_target_len)
        hyps = []
        for k in range(0, len(pick), _EVAL_BATCH):
            part = pick[k:k + _EVAL_BATCH]
            hyps += translator.greedy([self.src_ids[i] for i in part])
        exact = np.mean([h.ids == self.tgt_ids[i].tolist() for h, i in zip(hyps, pick)])
        scores = {"val_exact": round(float(exact), 4)}
        if self.references is not None:
            try:
                import sacrebleu
            except ImportError:
                return scores
            texts = [translator.text(h.ids) for h in hyps]
            refs = [self.references[i] for i in pick]
            scores["val_bleu"] = round(sacrebleu.corpus_bleu(texts, [refs]).score, 2)
        return scores

    def data_state(self) -> dict:
        return {"position": self.position, "order_seed": self.order_seed,
                "batches": len(self.batches), "batch": self.batch}

    def load_data_state(self, state: dict) -> None:
        if (state.get("batches"), state.get("batch")) != (len(self.batches), self.batch):
            raise SeqtoolError(
                f"the checkpoint was trained on other data or another --batch ({state.get('batches')} "
                f"batches of {state.get('batch')}, now {len(self.batches)} of {self.batch}); "
                f"cannot resume exactly")
        self.position = int(state["position"])
        seed = state.get("order_seed")
        self.order_seed = None if seed is None else int(seed)
        self.order = (None if seed is None
                      else np.random.default_rng(self.order_seed).permutation(len(self.batches)))

    def state_arrays(self) -> dict:
        return {}

    def load_state_arrays(self, arrays: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"task": "seq2seq", "config": config_of(self.model, self.unit),
                "vocab": {"unit": self.unit, "source": self.src_vocab.tokens,
                          "target": self.tgt_vocab.tokens},
                "data": {"train_pairs": int(len(self.train_idx)), "val_pairs": int(len(self.val_idx)),
                         "max_target_len": self.max_target_len}}
