"""What the genre task reads: class folders, JSONL of note lists and lists of paths become Pieces
of feature rows (scores: one row per note; audio: log-mel frames).

DATA (train and eval) is a folder with one subfolder per class (MIDI or audio files), a JSONL of
note lists, or a list of paths, one per line ('-': stdin), each optionally followed by a tab and
its label; without a label a path's class is its parent folder's name, or what the label regex
matches in its file name (the regex is stored in the model, so eval reads lists the same way).
Prediction inputs are files, folders of files of the model's kind, JSONL of scores, or '-' for
paths on stdin.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from seqtool.data.dataset_folders import AUDIO_EXTS, MIDI_EXTS
from seqtool.errors import SeqtoolError, UsageError

__all__ = ["Piece", "InputSpec", "KINDS", "piece_features", "read_list", "read_data",
           "prediction_records"]

KINDS = ("score", "audio")


@dataclass
class Piece:
    name: str  # the path as given (or the score's id in a JSONL)
    label: str
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
    from seqtool.data.audio import FeatureConfig, logmel, read_audio

    cfg = FeatureConfig.from_dict(spec.features)
    signal, _ = read_audio(path, cfg.sr)
    return logmel(signal, cfg)


def _kind_of_file(path: str) -> str | None:
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


def read_list(path_or_dash: str, label_regex: str | None = None):
    """[(path, label, where)] from a list file ('-': stdin): one path per line, optionally
    followed by a tab and the label; without one the label is the regex match on the file name
    (label_regex) or the parent folder's name. Blank lines and lines starting with # are skipped."""
    from seqtool.io.fileio import display_name, open_input

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
        else:
            label = _label_from_path(p, label_regex, where)
        out.append((p, label, where))
    if not out:
        raise SeqtoolError(f"{name}: no file paths")
    return out


def _excluded(path: str, exclude) -> bool:
    return any(fnmatch.fnmatch(os.path.basename(path), g) or fnmatch.fnmatch(path, g) for g in exclude)


def read_data(data: str, spec: InputSpec | None, voices: str = "melody", strict: bool = False,
              exclude=(), label_regex: str | None = None, reporter=None, features: dict | None = None):
    """Pieces of DATA: a folder of class subfolders (MIDI or audio), a JSONL of note lists, or a
    list of paths (file or '-'). spec None: infer the kind (training; audio uses the FeatureConfig
    dict `features`, default settings when None); otherwise the files must be of the model's kind.
    Returns (pieces, spec). Unreadable files are listed on stderr and skipped unless strict."""
    label_regex = label_regex if label_regex is not None else (spec.label_regex if spec else None)
    _check_regex(label_regex)
    exclude = tuple(exclude)
    is_dir = data != "-" and os.path.isdir(data)
    if data != "-" and not is_dir and not os.path.isfile(data):
        raise SeqtoolError(f"{data}: no such file or folder")
    if not is_dir and data.lower().endswith(".jsonl"):
        return _read_jsonl(data, spec, voices, exclude, label_regex, strict, reporter)
    entries = _entries(data, is_dir, label_regex, exclude)
    spec = _spec_of_files(data, entries, spec, voices, label_regex, features)
    return _load_pieces(data, entries, spec, strict, reporter), spec


def _check_regex(label_regex: str | None) -> None:
    if label_regex:
        try:
            re.compile(label_regex)
        except re.error as e:
            raise UsageError(f"--label-regex {label_regex!r}: {e}") from None


def _read_jsonl(data: str, spec: InputSpec | None, voices: str, exclude: tuple,
                label_regex: str | None, strict: bool = False, reporter=None):
    """(pieces, spec) of a JSONL of scores (one piece per line, named by its id); a malformed
    record is skipped with a warning, or with ``strict`` an error."""
    if spec is not None and spec.kind != "score":
        raise SeqtoolError(f"{data}: a JSONL of scores, but the model reads audio")
    from seqtool.data.scores import read_scores_jsonl, score_features

    v = spec.voices if spec is not None else voices
    rows = read_scores_jsonl(data, v, strict=strict, warn=getattr(reporter, "warn", None))
    pieces = [Piece(f"{sid}", label, score_features(notes)) for sid, label, notes in rows
              if not _excluded(sid, exclude)]
    return pieces, spec or InputSpec("score", v, None, label_regex)


def _entries(data: str, is_dir: bool, label_regex: str | None, exclude: tuple):
    """[(path, label, where)] of a class folder, a single MIDI/audio file or a list of paths,
    without the excluded ones."""
    if is_dir:
        from seqtool.data.dataset_folders import detect_kind, scan_class_folders

        kind = "score" if detect_kind(data) == "midi" else "audio"
        items, _ = scan_class_folders(data, MIDI_EXTS if kind == "score" else AUDIO_EXTS)
        entries = [(str(p), label, str(p)) for p, label in items]
    elif _kind_of_file(data) is not None:
        # a single MIDI/audio file: its class is its folder's name (eval of one file)
        entries = [(data, _label_from_path(data, label_regex, data), data)]
    else:
        entries = read_list(data, label_regex)
    entries = [e for e in entries if not _excluded(e[0], exclude)]
    if not entries:
        raise SeqtoolError(f"{data}: every file is excluded")
    return entries


def _spec_of_files(data: str, entries, spec: InputSpec | None, voices: str,
                   label_regex: str | None, features: dict | None) -> InputSpec:
    """The files' kind (all one) as an InputSpec: a new one, or the model's when it agrees."""
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
        from seqtool.data.audio import FeatureConfig

        spec.features = FeatureConfig().to_dict()
    return spec


def _load_pieces(data: str, entries, spec: InputSpec, strict: bool, reporter) -> list[Piece]:
    """The pieces of the files that could be read (the others listed as warnings, or with
    strict the first one an error)."""
    from seqtool.data.dataset_folders import load_items

    where = {p: w for p, _, w in entries}
    ok, failed = load_items([(p, lab) for p, lab, _ in entries], lambda p: piece_features(p, spec), strict)
    if reporter is not None:
        for path, msg in failed:
            w = where[path]
            reporter.warn(f"skipped {msg if w == path else f'{w}: {msg}'}")
        if failed:
            reporter.warn(f"skipped {len(failed)} of {len(entries)} files that could not be read "
                          f"(--strict stops at the first)")
    pieces = [Piece(p, lab, feats) for p, lab, feats in ok if len(feats)]
    if not pieces:
        raise SeqtoolError(f"{data}: no readable {spec.kind} files")
    return pieces


# ------------------------------------------------------------------------------------- predict


def _expand_inputs(inputs, kind: str):
    """(path as given, where) for each input: files as given, folders' files of the model's
    kind (sorted, recursive), '-' = paths on stdin, one per line; a .jsonl stays one input."""
    from seqtool.data.dataset_folders import walk_files

    exts = MIDI_EXTS if kind == "score" else AUDIO_EXTS
    for item in inputs or ("-",):
        if item == "-":
            for ln, line in enumerate(sys.stdin, 1):
                p = line.rstrip("\r\n").split("\t")[0].strip()
                if p and not p.startswith("#"):
                    yield p, f"<stdin> line {ln}"
        elif os.path.isdir(item):
            files = [str(f) for f in walk_files(item) if f.name.lower().endswith(exts)]
            if not files:
                raise SeqtoolError(f"{item}: no {' '.join(exts)} files")
            for f in files:
                yield f, f
        else:
            yield item, item


def prediction_records(inputs, spec: InputSpec, record, strict: bool = False):
    """record(name, raw feature rows) of each piece to predict, one at a time as the inputs are
    read: a file's name is its path, a JSONL score's its id. A bad input is reported and the
    next one read (base.each_input), unless strict."""
    from seqtool.tasks.base import each_input

    def one(item):
        path, where = item
        for name, feats in _pieces_of(path, where, spec):
            yield record(name, feats)

    return each_input(_expand_inputs(inputs, spec.kind), one, strict)


def _pieces_of(path: str, where: str, spec: InputSpec):
    from seqtool.data.scores import read_scores_jsonl, score_features

    if path.lower().endswith(".jsonl"):
        if spec.kind != "score":
            raise SeqtoolError(f"{where}: a JSONL of scores, but the model reads audio")
        for sid, _, notes in read_scores_jsonl(path, spec.voices, require_label=False):
            yield sid, score_features(notes)
    else:
        yield path, _file_features(path, where, spec)


def _file_features(path: str, where: str, spec: InputSpec) -> np.ndarray:
    """piece_features with the input's place (a stdin line) in every error message."""
    try:
        feats = piece_features(path, spec)
    except SeqtoolError as e:
        msg = str(e)
        raise SeqtoolError(msg if where == path else f"{where}: {msg}") from None
    except (OSError, EOFError, ValueError, RuntimeError) as e:  # decoders' own errors
        raise SeqtoolError(f"{where}: {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    if not len(feats):
        raise SeqtoolError(f"{where}: {path} has no notes or frames")
    return feats
