"""Sound event annotations: DCASE TSV reading/writing and frame-level activity rolls.

Accepted annotation rows (tab separated, or whitespace when a line has no tab):
    filename  onset  offset  event_label      (DCASE 2016-2019 lists, optional header line)
    onset  offset  event_label                (official per-recording files; filename supplied)

Frame convention (matches the centered STFT in seqtool.data.audio): frame t stands for time t * hop_s,
i.e. the interval [(t - 0.5) hop, (t + 0.5) hop). A frame is active when its time lies inside
[onset, offset); decoding puts boundaries half-way between frames, so a round trip is exact on
the frame grid.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqtool.errors import SeqtoolError
from seqtool.io.fileio import atomic_open

HEADER = ("filename", "onset", "offset", "event_label")
_HEADER_WORDS = {"onset", "offset", "event_onset", "event_offset", "event_label", "label", "filename"}


@dataclass(frozen=True, order=True)
class Event:
    filename: str
    onset: float
    offset: float
    label: str

    @property
    def duration(self) -> float:
        return self.offset - self.onset


def _split(line: str) -> list[str]:
    # tabs allow spaces inside file names; otherwise any whitespace separates
    if "\t" in line:
        return [f.strip() for f in line.rstrip("\r\n").split("\t")]
    return line.split()


def _time(text: str, what: str, where: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise SeqtoolError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(t):
        raise SeqtoolError(f"{where}: {what} {text!r} is not a finite number")
    if t < 0:
        raise SeqtoolError(f"{where}: negative {what} {text}")
    return t


def parse_events(lines, source: str = "<annotations>", filename: str | None = None,
                 with_lines: bool = False) -> list:
    """Parse annotation lines; errors name `source` and the 1-based line number.

    filename is used for 3-column rows (onset offset label), which carry no file name.
    with_lines: return (line number, Event) pairs, so later checks (a missing audio file, an
    unknown label) can name the line too.
    """
    events: list = []
    n_cols = None
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        cols = _split(raw)
        where = f"{source}:{lineno}"
        if n_cols is None and _HEADER_WORDS & {c.lower() for c in cols}:
            # a header only makes sense before the first row
            n_cols = len(cols)
            if n_cols not in (3, 4):
                raise SeqtoolError(f"{where}: header has {n_cols} columns, expected 3 or 4")
            continue
        if n_cols is None:
            n_cols = len(cols)
            if n_cols not in (3, 4):
                raise SeqtoolError(f"{where}: expected 4 columns (filename onset offset event_label) "
                                   f"or 3 (onset offset event_label), got {n_cols}")
        if len(cols) != n_cols:
            raise SeqtoolError(f"{where}: expected {n_cols} columns like the lines above, got {len(cols)}")
        if n_cols == 4:
            fname, on, off, label = cols
            if not fname:
                raise SeqtoolError(f"{where}: empty filename")
        else:
            on, off, label = cols
            if filename is None:
                raise SeqtoolError(f"{where}: 3-column rows (onset offset label) need a file name to refer to")
            fname = filename
        onset = _time(on, "onset", where)
        offset = _time(off, "offset", where)
        if onset > offset:
            raise SeqtoolError(f"{where}: onset {on} is after offset {off}")
        if not label:
            raise SeqtoolError(f"{where}: empty event label")
        event = Event(fname, onset, offset, label)
        events.append((lineno, event) if with_lines else event)
    return events


def read_events(path, filename: str | None = None, with_lines: bool = False) -> list:
    """Read a DCASE annotation file ("-" for stdin).

    For 3-column files the events are attributed to `filename`, by default the annotation
    file's stem + ".wav" (the official dev set names mixture and annotation that way).
    with_lines: (line number, Event) pairs, as parse_events.
    """
    if str(path) == "-":
        try:
            return parse_events(sys.stdin, "<stdin>", filename, with_lines)
        except UnicodeDecodeError:
            raise SeqtoolError("<stdin>: not UTF-8 text") from None
    if filename is None:
        filename = Path(path).stem + ".wav"
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_events(fh, str(path), filename, with_lines)
    except FileNotFoundError:
        raise SeqtoolError(f"{path}: no such annotation file") from None
    except UnicodeDecodeError:
        raise SeqtoolError(f"{path}: not a UTF-8 text file") from None
    except IsADirectoryError:
        raise SeqtoolError(f"{path}: is a folder, expected an annotation file") from None


def _fmt(t: float) -> str:
    # microsecond resolution is plenty and keeps files readable ("1.5", not "1.500000")
    s = f"{t:.6f}".rstrip("0").rstrip(".")
    return s or "0"


def write_events_tsv(events, fh, header: bool = False) -> None:
    """Write events as filename<TAB>onset<TAB>offset<TAB>event_label lines."""
    if header:
        fh.write("\t".join(HEADER) + "\n")
    for e in events:
        fh.write(f"{e.filename}\t{_fmt(e.onset)}\t{_fmt(e.offset)}\t{e.label}\n")


def write_events_file(events, path, header: bool = True) -> None:
    """write_events_tsv to a path atomically (temp file + rename), or stdout for "-"."""
    with atomic_open(path, "w") as fh:
        write_events_tsv(events, fh, header)


def check_labels(numbered_events, labels, source: str) -> None:
    """One-line error naming `source` and the line of the first event whose label is not in
    `labels` (e.g. a reference annotation with a class the model was not trained on)."""
    known = set(labels)
    for lineno, e in numbered_events:
        if e.label not in known:
            raise SeqtoolError(f"{source}:{lineno}: unknown event label {e.label!r} "
                               f"(known: {', '.join(sorted(known))})")


def group_by_file(events) -> dict[str, list[Event]]:
    """{filename: events sorted by onset}, files in sorted order."""
    out: dict[str, list[Event]] = {}
    for e in events:
        out.setdefault(e.filename, []).append(e)
    return {k: sorted(out[k], key=lambda e: (e.onset, e.offset, e.label)) for k in sorted(out)}


def events_to_roll(events, labels, n_frames: int, hop_s: float) -> np.ndarray:
    """(n_frames, n_classes) float32 0/1 activity of one recording's events.

    An event too short to contain a frame time still marks the frame nearest to its middle,
    so no annotated event disappears from the training targets.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    roll = np.zeros((n_frames, len(labels)), dtype=np.float32)
    for e in events:
        if e.label not in index:
            raise SeqtoolError(f"{e.filename}: event label {e.label!r} is not one of the known labels")
        start = math.ceil(e.onset / hop_s - 1e-9)
        end = math.ceil(e.offset / hop_s - 1e-9)
        if end <= start:
            start = int(round(0.5 * (e.onset + e.offset) / hop_s))
            end = start + 1
        start, end = max(start, 0), min(end, n_frames)
        if start < end:
            roll[start:end, index[e.label]] = 1.0
    return roll


def roll_to_events(probs, labels, hop_s: float, threshold=0.5, median_frames: int = 1,
                   filename: str = "") -> list[Event]:
    """Decode (n_frames, n_classes) probabilities into events.

    threshold: scalar or one per class (active when prob > threshold). median_frames: length of
    the per-class median filter applied to the binary activity (1 = off; odd values are
    symmetric).
    """
    from scipy.ndimage import median_filter

    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise SeqtoolError(f"expected probabilities of shape (frames, {len(labels)}), got {probs.shape}")
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(labels),)) \
        if np.ndim(threshold) <= 1 and np.size(threshold) in (1, len(labels)) else None
    if thr is None:
        raise SeqtoolError(f"threshold must be a number or {len(labels)} numbers (one per class)")
    if int(median_frames) < 1:
        raise SeqtoolError(f"median filter length must be >= 1 frame, got {median_frames}")
    active = (probs > thr[None, :]).astype(np.uint8)  # (T, C)
    if median_frames > 1 and len(active):
        active = median_filter(active, size=(int(median_frames), 1), mode="nearest")
    events = []
    for c, label in enumerate(labels):
        col = np.concatenate([[0], active[:, c], [0]]).astype(np.int8)
        d = np.diff(col)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        for s, e in zip(starts, ends):
            events.append(Event(filename, max(0.0, (s - 0.5) * hop_s), (e - 0.5) * hop_s, label))
    events.sort(key=lambda e: (e.onset, e.offset, e.label))
    return events
