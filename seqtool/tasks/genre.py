"""Sequence classification (many-to-one): genre from a score or a recording, digit from speech.

Model file: task "genre"; config {"cell", "hidden", "layers", "bidirectional", "dropout", "proj",
"pool", "attention", "input_size", "seq_len"}; meta["labels"] = class names (column order of the
probabilities); meta["input"] = {"kind": "score" | "audio", "voices": ..., "features": FeatureConfig
dict (audio only), "label_regex": ...}; meta["normalizer"] = per-feature mean/std of the training
data. Parameters: proj.weight/bias (optional), rnn.* (seqtool.nn names), att_in.*, att_v.weight
(attention pooling only), head.weight (C, H'), head.bias (C,).

Training sees random crops of at most seq_len steps of each piece (a different crop every epoch),
grouped into batches of similar length so little of a batch is padding; padded steps are masked
out of every pooling. Validation and prediction cut each piece into chunks of seq_len steps with
half a chunk of overlap (the last one aligned to the end), so the whole piece is heard, and
average the class probabilities over the chunks.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqtool import functional as F
from seqtool import modelfile
from seqtool.autograd import Tensor, no_grad
from seqtool.errors import SeqtoolError, UsageError
from seqtool.losses import cross_entropy
from seqtool.nn import GRU, LSTM, RNN, Linear, Module
from seqtool.xp import to_host

__all__ = ["GenreNet", "GenreTask", "Classifier", "Piece", "DEFAULTS", "defaults_for", "POOLS", "build_genre",
           "load_genre", "config_of", "read_data", "piece_features", "classify", "metrics"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
POOLS = ("last", "mean", "attention")
KINDS = ("score", "audio")
_MASK_NEG = 1e4  # added to padded steps' attention scores: exp(-1e4) is 0 in float32

DEFAULTS = {"cell": "lstm", "hidden": 128, "layers": 2, "bidirectional": True, "dropout": 0.2,
            "proj": 0, "pool": "attention", "attention": 64, "optimizer": "adam", "lr": 2e-3,
            "clip_norm": 5.0, "batch": 32, "val_frac": 0.1, "transpose": 0,
            "seq_len": 200}  # audio: 4 s of frames at the default 20 ms hop
# Scores are few and short (music21-styles: 366 training melodies of 30-300 notes). Measured on
# its 20% held-out files: 2 x biLSTM 128 on crops of 256 notes (whole melodies) overfit and reached
# 86%; 64 units, dropout 0.5 and crops of 32 notes (many different crops per piece, and the
# chunk average at prediction) 90.2% with two seeds, and 90.2-92.2% with +-5 semitone transpositions.
SCORE_DEFAULTS = {"hidden": 64, "dropout": 0.5, "seq_len": 32, "transpose": 5}


def defaults_for(kind: str) -> dict:
    """DEFAULTS for "score" or "audio" inputs; options given on the command line always win."""
    return {**DEFAULTS, **SCORE_DEFAULTS} if kind == "score" else dict(DEFAULTS)


# ---------------------------------------------------------------------------------------- model


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


# ---------------------------------------------------------------------------------------- data


@dataclass
class Piece:
    name: str  # the path as given (or "file.jsonl:id" for a score of a JSONL)
    label: str | None
    features: np.ndarray  # (T, D) float32, normalised once a normaliser is known


@dataclass
class InputSpec:
    """How files become feature rows; stored in the model so prediction repeats it."""

    kind: str  # "score" or "audio"
    voices: str = "melody"
    features: dict | None = None  # audio FeatureConfig
    label_regex: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "voices": self.voices, "features": self.features,
                "label_regex": self.label_regex}

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        if d.get("kind") not in KINDS:
            raise ValueError(f"input kind {d.get('kind')!r}")
        return cls(d["kind"], d.get("voices", "melody"), d.get("features"), d.get("label_regex"))

    @property
    def input_size(self) -> int:
        from seqtool.data.scores import N_FEATURES

        return N_FEATURES if self.kind == "score" else int(self.features["n_mels"])


def piece_features(path, spec: InputSpec) -> np.ndarray:
    """(T, D) float32 feature rows of one MIDI or audio file (not normalised)."""
    from seqtool.data.dataset_folders import AUDIO_EXTS, MIDI_EXTS

    name = str(path).lower()
    if spec.kind == "score":
        if not name.endswith(MIDI_EXTS):
            raise SeqtoolError(f"{path}: not a MIDI file (.mid, .midi); the model reads scores")
        from seqtool.data.scores import read_midi, score_features

        notes = read_midi(path, spec.voices)
        if not notes:
            raise SeqtoolError(f"{path}: no notes")
        return score_features(notes)
    if not name.endswith(AUDIO_EXTS):
        raise SeqtoolError(f"{path}: not an audio file ({' '.join(AUDIO_EXTS)}); the model reads audio")
    from seqtool.audio import FeatureConfig, logmel, read_audio

    cfg = FeatureConfig.from_dict(spec.features)
    signal, _ = read_audio(path, cfg.sr)
    return logmel(signal, cfg)


def _kind_of_file(path: str) -> str | None:
    from seqtool.data.dataset_folders import AUDIO_EXTS, MIDI_EXTS

    low = path.lower()
    if low.endswith(MIDI_EXTS):
        return "score"
    if low.endswith(AUDIO_EXTS):
        return "audio"
    return None


def _label_from_path(path: str, label_regex: str | None, where: str) -> str:
    if label_regex:
        m = re.search(label_regex, os.path.basename(path))
        if not m:
            raise SeqtoolError(f"{where}: file name {os.path.basename(path)!r} does not match "
                               f"--label-regex {label_regex!r}")
        return m.group(1) if m.groups() else m.group(0)
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    if not parent:
        raise SeqtoolError(f"{where}: {path} has no parent folder to name its class")
    return parent


def read_list(path_or_dash: str, label_regex: str | None = None, need_labels: bool = True):
    """[(path, label, where)] from a list file ('-': stdin): one path per line, optionally
    followed by a tab and the label; without one the label is the regex match on the file name
    (label_regex) or the parent folder's name. Blank lines and lines starting with # are skipped."""
    from seqtool.fileio import display_name, open_input

    name = display_name(path_or_dash)
    base = "" if path_or_dash == "-" else os.path.dirname(path_or_dash)
    out = []
    try:
        with open_input(path_or_dash) as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise SeqtoolError(f"{name}: not UTF-8 text ({e.reason})") from None
    for ln, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{name} line {ln}"
        parts = line.rstrip("\r").split("\t")
        if len(parts) > 2:
            raise SeqtoolError(f"{where}: expected PATH or PATH<TAB>LABEL, got {len(parts)} fields")
        p = parts[0].strip()
        if not os.path.isabs(p) and base and not os.path.exists(p):
            p = os.path.join(base, p)  # paths relative to the list file
        if len(parts) == 2 and parts[1].strip():
            label = parts[1].strip()
        elif need_labels:
            label = _label_from_path(p, label_regex, where)
        else:
            label = None
        out.append((p, label, where))
    if not out:
        raise SeqtoolError(f"{name}: no file paths")
    return out


def _excluded(path: str, exclude) -> bool:
    return any(fnmatch.fnmatch(os.path.basename(path), g) or fnmatch.fnmatch(path, g) for g in exclude)


def read_data(data: str, spec: InputSpec | None, voices: str = "melody", strict: bool = False,
              exclude=(), label_regex: str | None = None, reporter=None, need_labels: bool = True,
              features: dict | None = None):
    """Pieces of DATA: a folder of class subfolders (MIDI or audio), a JSONL of note lists, or a
    list of paths (file or '-'). spec None: infer the kind (training; audio uses the FeatureConfig
    dict `features`, default settings when None); otherwise the files must be of the model's kind. Returns (pieces, spec). Unreadable files are listed on stderr and
    skipped unless strict."""
    from seqtool.data.dataset_folders import (AUDIO_EXTS, MIDI_EXTS, detect_kind, load_items,
                                              scan_class_folders)

    label_regex = label_regex if label_regex is not None else (spec.label_regex if spec else None)
    if label_regex:
        try:
            re.compile(label_regex)
        except re.error as e:
            raise UsageError(f"--label-regex {label_regex!r}: {e}") from None
    exclude = tuple(exclude)
    is_dir = data != "-" and os.path.isdir(data)
    if data != "-" and not is_dir and not os.path.isfile(data):
        raise SeqtoolError(f"{data}: no such file or folder")

    if not is_dir and data.lower().endswith(".jsonl"):
        if spec is not None and spec.kind != "score":
            raise SeqtoolError(f"{data}: a JSONL of scores, but the model reads audio")
        from seqtool.data.scores import read_scores_jsonl, score_features

        v = spec.voices if spec is not None else voices
        rows = read_scores_jsonl(data, v, require_label=need_labels)
        pieces = [Piece(f"{sid}", label, score_features(notes)) for sid, label, notes in rows
                  if not _excluded(sid, exclude)]
        return pieces, spec or InputSpec("score", v, None, label_regex)

    if is_dir:
        kind = "score" if detect_kind(data) == "midi" else "audio"
        items, _ = scan_class_folders(data, MIDI_EXTS if kind == "score" else AUDIO_EXTS)
        entries = [(str(p), label, str(p)) for p, label in items]
    elif _kind_of_file(data) is not None:
        # a single MIDI/audio file: its class is its folder's name (eval of one file)
        entries = [(data, _label_from_path(data, label_regex, data) if need_labels else None, data)]
    else:
        entries = read_list(data, label_regex, need_labels)
    entries = [e for e in entries if not _excluded(e[0], exclude)]
    if not entries:
        raise SeqtoolError(f"{data}: every file is excluded")
    kinds = {_kind_of_file(p) for p, _, _ in entries}
    if None in kinds:
        bad = next((p, w) for p, _, w in entries if _kind_of_file(p) is None)
        raise SeqtoolError(f"{bad[1]}: {bad[0]} is neither MIDI ({' '.join(MIDI_EXTS)}) nor audio "
                           f"({' '.join(AUDIO_EXTS)})")
    if len(kinds) > 1:
        raise SeqtoolError(f"{data}: mixes MIDI and audio files; use one kind")
    kind = kinds.pop()
    if spec is None:
        spec = InputSpec(kind, voices, features if kind == "audio" else None, label_regex)
    elif spec.kind != kind:
        raise SeqtoolError(f"{data}: {kind} files, but the model reads {spec.kind}")
    if spec.kind == "audio" and spec.features is None:
        from seqtool.audio import FeatureConfig

        spec.features = FeatureConfig().to_dict()
    where = {p: w for p, _, w in entries}
    ok, failed = load_items([(p, lab) for p, lab, _ in entries], lambda p: piece_features(p, spec), strict)
    for path, msg in failed:
        w = where[path]
        shown = msg if w == path else f"{w}: {msg}"
        if reporter is not None:
            reporter.warn(f"skipped {shown}")
    if failed and reporter is not None:
        reporter.warn(f"skipped {len(failed)} of {len(entries)} files that could not be read "
                      f"(--strict stops at the first)")
    pieces = [Piece(p, lab, feats) for p, lab, feats in ok if len(feats)]
    if not pieces:
        raise SeqtoolError(f"{data}: no readable {spec.kind} files")
    return pieces, spec


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


# ------------------------------------------------------------------------------------- metrics


def metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix
    (rows: true class, columns: predicted class)."""
    C = len(labels)
    conf = np.zeros((C, C), np.int64)
    np.add.at(conf, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    n = int(conf.sum())
    tp = np.diag(conf).astype(np.float64)
    pred_n, true_n = conf.sum(axis=0), conf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = true_n > 0
    per_class = {lab: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                       "support": int(true_n[c])} for c, lab in enumerate(labels)}
    return {"accuracy": float(tp.sum() / n) if n else float("nan"), "n": n,
            "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
            "per_class": per_class, "labels": list(labels), "confusion": conf.tolist()}


# ------------------------------------------------------------------------------------- task


class GenreTask:
    """The trainer's view: random crops, length-bucketed batches, validation accuracy."""

    name = "genre"

    def __init__(self, model: GenreNet, train: list[Piece], val: list[Piece], labels: list[str],
                 spec: InputSpec, normalizer, batch: int, seq_len: int, transpose: int = 0):
        self.model, self.train, self.val, self.labels = model, train, val, list(labels)
        if transpose and spec.kind != "score":
            raise UsageError("--transpose applies to scores only")
        self.transpose = int(transpose)
        self.spec, self.normalizer = spec, normalizer
        self.batch, self.seq_len = int(batch), int(seq_len)
        index = {lab: i for i, lab in enumerate(self.labels)}
        self._y_train = np.array([index[p.label] for p in train], np.int64)
        self._y_val = np.array([index[p.label] for p in val], np.int64)
        self.n_batches = -(-len(train) // self.batch)
        self.position = 0
        self.epoch_seed = None
        self._plan = None
        self._last_accuracy = float("nan")

    def _make_plan(self, seed: int):
        """This epoch's batches: [(piece indices, crop starts)], drawn from `seed` alone so a
        resumed run rebuilds the same plan."""
        rng = np.random.default_rng(seed)
        n = len(self.train)
        order = rng.permutation(n)
        lens = np.array([min(len(self.train[i].features), self.seq_len) for i in order])
        starts = np.array([int(rng.integers(0, max(len(self.train[i].features) - self.seq_len, 0) + 1))
                           for i in order])
        shifts = rng.integers(-self.transpose, self.transpose + 1, n)  # semitones, per crop
        # buckets of 20 batches sorted by crop length: batches of similar lengths (little
        # padding) while the bucket contents stay random
        span = self.batch * 20
        batches = []
        for b0 in range(0, n, span):
            sl = slice(b0, b0 + span)
            o = np.argsort(lens[sl], kind="stable")
            idx, st, sh = order[sl][o], starts[sl][o], shifts[sl][o]
            for k in range(0, len(idx), self.batch):
                batches.append((idx[k:k + self.batch], st[k:k + self.batch], sh[k:k + self.batch]))
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]

    def _batch(self, k: int):
        idx, starts, shifts = self._plan[k]
        seqs = [self.train[i].features[s:s + self.seq_len] for i, s in zip(idx, starts)]
        x, lengths = pad_batch(seqs)
        if self.transpose:
            # the pitch column (0) is the only one a transposition changes (intervals and scale
            # degrees are relative); in normalised units a semitone is 1/12 / std
            step = 1.0 / (12.0 * float(self.normalizer.std[0]))
            x[:, :, 0] += np.where(np.arange(x.shape[0])[:, None] < lengths[None, :],
                                   shifts[None, :] * step, 0.0).astype(np.float32)
        return x, lengths, self._y_train[idx]

    def train_batches(self, rng):
        self.model.rnn.dropout_rng = rng
        self.model.train()
        if self._plan is None:
            self.epoch_seed = int(rng.integers(2 ** 62))
            self._plan = self._make_plan(self.epoch_seed)
        while self.position < self.n_batches:
            k = self.position
            self.position += 1
            yield self._batch(k)
        self.position = 0
        self.epoch_seed = None
        self._plan = None

    def loss(self, batch):
        x, lengths, y = batch
        return cross_entropy(self.model(x, lengths), y)

    def batch_tokens(self, batch) -> int:
        return int(batch[1].sum())

    def split_batch(self, batch, parts: int) -> list:
        """The pieces in `parts` slices (MPI ranks), each with the items its loss averages."""
        from seqtool.distributed import split_items

        return [(p, len(p[2])) for p in split_items(batch, (1, 0, 0), parts)]

    def epoch_progress(self) -> float:
        return self.position / max(self.n_batches, 1)

    def evaluate(self):
        """Chunk-averaged validation: loss = mean -log p(true class), plus accuracy."""
        if not self.val:
            return None
        probs = chunk_probabilities(self.model, [p.features for p in self.val], self.seq_len)
        p_true = probs[np.arange(len(self.val)), self._y_val]
        loss = float(-np.mean(np.log(np.maximum(p_true, 1e-12))))
        acc = float(np.mean(probs.argmax(axis=1) == self._y_val))
        self._last_accuracy = acc
        return {"loss": loss, "val_accuracy": round(acc, 6)}

    def on_validation(self, reporter) -> None:
        # the Trainer's line shows the loss; accuracy is what a classifier's user watches
        if self.val:
            reporter.info(f"  val accuracy {self._last_accuracy:.4f} ({len(self.val)} pieces)")

    def data_state(self) -> dict:
        return {"position": self.position, "epoch_seed": self.epoch_seed, "pieces": len(self.train),
                "batch": self.batch, "seq_len": self.seq_len, "transpose": self.transpose}

    def load_data_state(self, state: dict) -> None:
        if (state.get("pieces"), state.get("batch"), state.get("seq_len")) != (
                len(self.train), self.batch, self.seq_len):
            raise SeqtoolError(
                "the checkpoint was trained on other data or another --batch/--seq-len "
                f"({state.get('pieces')} pieces, batch {state.get('batch')}, seq-len "
                f"{state.get('seq_len')}; now {len(self.train)}, {self.batch}, {self.seq_len}); "
                "cannot resume exactly")
        self.position = int(state["position"])
        seed = state.get("epoch_seed")
        self.epoch_seed = None if seed is None else int(seed)
        self._plan = None if seed is None else self._make_plan(self.epoch_seed)

    def state_arrays(self) -> dict:
        return {}

    def load_state_arrays(self, arrays: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"task": "genre", "config": config_of(self.model, self.seq_len), "labels": self.labels,
                "input": self.spec.to_dict(), "normalizer": self.normalizer.to_dict(),
                "data": {"train_pieces": len(self.train), "val_pieces": len(self.val),
                         "train_steps": int(sum(len(p.features) for p in self.train))}}


# ------------------------------------------------------------------------------------- loading


@dataclass
class Classifier:
    """A loaded genre model with everything prediction needs."""

    model: GenreNet
    labels: list[str]
    spec: InputSpec
    normalizer: object
    seq_len: int
    meta: dict

    def probabilities(self, features_list) -> np.ndarray:
        """(P, C) chunk-averaged class probabilities of raw (unnormalised) feature arrays."""
        return chunk_probabilities(self.model, [self.normalizer(f) for f in features_list], self.seq_len)


def load_genre(path) -> Classifier:
    from seqtool.audio import FeatureConfig, Normalizer

    arrays, meta = modelfile.load_model(path, expect_task="genre")
    try:
        config, labels = meta["config"], [str(x) for x in meta["labels"]]
        spec = InputSpec.from_dict(meta["input"])
        if spec.kind == "audio":
            FeatureConfig.from_dict(spec.features)  # validates
        normalizer = Normalizer.from_dict(meta["normalizer"])
        if len(normalizer.mean) != int(config["input_size"]) or spec.input_size != int(config["input_size"]):
            raise ValueError("feature sizes disagree")
        model = build_genre(config, len(labels), rng=np.random.default_rng(0))
        seq_len = int(config["seq_len"])
    except (KeyError, TypeError, ValueError, UsageError, SeqtoolError) as e:
        raise SeqtoolError(f"{path} is not a valid genre model ({e})") from None
    params = {k: v for k, v in arrays.items() if not k.startswith(modelfile.OPTIM_PREFIX)}
    model.load_state_dict(params)
    return Classifier(model.eval(), labels, spec, normalizer, seq_len, meta)


def classify(clf: Classifier, pieces: list[Piece]) -> np.ndarray:
    return clf.probabilities([p.features for p in pieces])
