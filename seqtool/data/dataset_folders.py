"""Class-per-folder data sets (root/<label>/**/<file>), input-kind detection, stratified splits and
tolerant loading (skip unreadable files, list them, unless strict)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from seqtool.errors import SeqtoolError

AUDIO_EXTS = (".wav", ".flac", ".ogg")
MIDI_EXTS = (".mid", ".midi")
JSONL_EXTS = (".jsonl",)


def _has_ext(name: str, exts: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(e.lower() for e in exts))


def walk_files(folder: Path) -> Iterable[Path]:
    """Files under folder, recursively, in sorted order; hidden files and folders left out
    (.DS_Store, ._* resource forks, .git would otherwise look like data)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def scan_class_folders(root, exts: Sequence[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """(items [(path, label)], labels sorted) for root/<label>/... files ending in one of exts.

    The label is the name of the top-level subfolder; files deeper down belong to it too. Files
    directly in root have no label and are ignored; subfolders without matching files are not
    labels (a class with no examples cannot be trained or scored).
    """
    root = Path(root)
    if not root.is_dir():
        raise SeqtoolError(f"{root}: not a folder of class subfolders")
    items: list[tuple[Path, str]] = []
    labels = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [f for f in walk_files(sub) if _has_ext(f.name, exts)]
        if files:
            labels.append(sub.name)
            items.extend((f, sub.name) for f in files)
    if not items:
        raise SeqtoolError(f"{root}: no class subfolders with {' '.join(exts)} files")
    return items, labels


def detect_kind(root_or_file) -> str:
    """"jsonl", "midi" or "audio" from a file's extension, or from the files inside a folder."""
    p = Path(root_or_file)
    if p.is_file():
        for kind, exts in (("jsonl", JSONL_EXTS), ("midi", MIDI_EXTS), ("audio", AUDIO_EXTS)):
            if _has_ext(p.name, exts):
                return kind
        raise SeqtoolError(f"{p}: unknown input kind (expected .jsonl, {' '.join(MIDI_EXTS + AUDIO_EXTS)})")
    if not p.is_dir():
        raise SeqtoolError(f"{p}: no such file or folder")
    found = set()
    for f in walk_files(p):
        if _has_ext(f.name, MIDI_EXTS):
            found.add("midi")
        elif _has_ext(f.name, AUDIO_EXTS):
            found.add("audio")
        if len(found) > 1:
            # guessing would silently train on half the data
            raise SeqtoolError(f"{p}: holds both MIDI and audio files; point to one kind of folder")
    if not found:
        raise SeqtoolError(f"{p}: no MIDI ({' '.join(MIDI_EXTS)}) or audio ({' '.join(AUDIO_EXTS)}) files")
    return found.pop()


def stratified_split(labels_per_item: Sequence, frac: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), sorted: about `frac` of every class held out.

    Each class with at least two items gives at least one held-out item and keeps at least one for
    training when frac > 0, so small classes still show up in validation.
    """
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {frac}")
    rng = np.random.default_rng(rng)
    labels = list(labels_per_item)
    by_class: dict = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    held = []
    for lab in sorted(by_class, key=str):  # fixed order: same rng -> same split
        idx = np.array(by_class[lab], np.int64)
        n = len(idx)
        if n < 2:
            k = 0  # a single example must stay in training
        elif frac > 0:
            k = min(max(int(round(frac * n)), 1), n - 1)
        else:
            k = 0
        held.extend(rng.permutation(idx)[:k].tolist())
    val = np.array(sorted(held), np.int64)
    train = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val)
    return train, val


# What readers raise on bad files: our own errors, plus what decoders (soundfile, mido) throw.
_LOAD_ERRORS = (SeqtoolError, OSError, EOFError, ValueError, RuntimeError)


def _message(path, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if str(path) in text else f"{path}: {text}"


def load_items(items: Iterable[tuple], loader: Callable, strict: bool = False):
    """Run loader(path) on every (path, label) item -> (ok [(path, label, data)], failed [(path, msg)]).

    A file that fails to load is listed in `failed` and skipped, so one bad file does not stop a
    long run; with strict=True the first failure is raised as a SeqtoolError instead. An empty `ok`
    is returned as is: the caller knows whether that is fatal.
    """
    ok = []
    failed = []
    for path, label in items:
        try:
            data = loader(path)
        except _LOAD_ERRORS as e:
            msg = _message(path, e)
            if strict:
                if isinstance(e, SeqtoolError) and msg == str(e):
                    raise
                raise SeqtoolError(msg) from e
            failed.append((path, msg))
            continue
        ok.append((path, label, data))
    return ok, failed
