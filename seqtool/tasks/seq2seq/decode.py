"""Decoding a trained seq2seq model: batched greedy search and beam search, and the model file
loader (model + vocabularies = a Translator).

Model file meta: "vocab" = {"unit", "source": [...], "target": [...]} (token i of each side,
specials first: <pad> <unk> <sos> <eos>); "data" has "max_target_len" (the default decoding
limit grows from it); "data_options" has "reverse" (the training file's columns were swapped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtool.io import modelfile
from seqtool.core.autograd import Tensor, no_grad
from seqtool.errors import SeqtoolError, UsageError
from seqtool.tasks.seq2seq.model import Seq2Seq, build_seq2seq
from seqtool.tasks.seq2seq.text import EOS, PAD, SOS, UNITS, Vocab, detokenize, tokenize
from seqtool.core.xp import asarray_on, to_host

__all__ = ["EVAL_BATCH", "Hypothesis", "Translator", "load_seq2seq"]

EVAL_BATCH = 128  # sources decoded at once by batched greedy search (validation, eval)


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
