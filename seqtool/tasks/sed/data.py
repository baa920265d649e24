"""Recordings and their annotations: which audio file an event list names, frame targets, the
validation split, and the inputs of predict and eval."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from seqtool.data.audio import FeatureConfig, logmel, read_audio
from seqtool.data.events import Event, check_labels, events_to_roll, group_by_file, read_events
from seqtool.errors import SeqtoolError

__all__ = ["Recording", "audio_path", "find_audio", "load_recordings", "split_recordings", "audio_inputs",
           "match_recordings", "match_table_names", "source_name"]


@dataclass
class Recording:
    name: str  # the annotation's filename column
    features: np.ndarray  # (T, D) float32 log-mel, normalised once the normaliser is fitted
    roll: np.ndarray  # (T, C) float32 0/1 targets
    duration: float  # seconds
    events: list


def source_name(path) -> str:
    """An event list's name in messages."""
    return "<stdin>" if str(path) == "-" else str(path)


def audio_path(audio_dir: str, fname: str) -> str | None:
    for candidate in (os.path.join(audio_dir, fname), os.path.join(audio_dir, os.path.basename(fname))):
        if os.path.isfile(candidate):
            return candidate
    return None


def find_audio(numbered, audio_dir: str, source: str) -> dict[str, str]:
    """{filename: path in audio_dir} for every file (lineno, event) pairs name, in order of first
    mention; a missing file is an error naming the line that first names it."""
    paths: dict[str, str] = {}
    for lineno, e in numbered:
        if e.filename not in paths:
            path = audio_path(audio_dir, e.filename)
            if path is None:
                raise SeqtoolError(f"{source}:{lineno}: audio file {e.filename} not found in {audio_dir}")
            paths[e.filename] = path
    return paths


def _recording(fname: str, path: str, events: list, labels, cfg: FeatureConfig) -> Recording:
    """One annotated recording's features and frame targets (events sorted by onset)."""
    x, _ = read_audio(path, target_sr=cfg.sr)
    feats = logmel(x, cfg)  # (T, D)
    roll = events_to_roll(events, labels, len(feats), cfg.hop_s)
    return Recording(fname, feats, roll, len(x) / cfg.sr, events)


def load_recordings(audio_dir, annotations, cfg: FeatureConfig, labels=None, reporter=None):
    """(recordings, labels) for the files an annotation list names, with frame targets.

    labels=None takes the sorted labels of the annotations; given labels (a model's) make an
    unknown one an error naming the annotation line.
    """
    from seqtool.training.trainer import NullReporter

    audio_dir = os.fspath(audio_dir)
    if not os.path.isdir(audio_dir):
        raise SeqtoolError(f"{audio_dir}: audio folder not found")
    numbered = read_events(annotations, with_lines=True)
    source = source_name(annotations)
    if not numbered:
        raise SeqtoolError(f"{source}: no events")
    if labels is None:
        labels = sorted({e.label for _, e in numbered})
    else:
        check_labels(numbered, labels, source)
    paths = find_audio(numbered, audio_dir, source)
    by_file = group_by_file(e for _, e in numbered)
    recordings = []
    with (reporter or NullReporter()).progress("features", total=len(paths)) as bar:
        for fname in sorted(paths):
            recordings.append(_recording(fname, paths[fname], by_file[fname], labels, cfg))
            bar.advance()
    return recordings, list(labels)


def split_recordings(recordings, val_frac: float, rng: np.random.Generator):
    """(train, val): a random val_frac of the recordings (at least one when there are two)."""
    n = len(recordings)
    n_val = int(round(n * val_frac))
    if val_frac > 0 and n >= 2:
        n_val = min(max(1, n_val), n - 1)
    else:
        n_val = 0
    order = rng.permutation(n)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [recordings[i] for i in train], [recordings[i] for i in val]


def audio_inputs(inputs) -> list[str]:
    """Audio inputs of predict: files, '-', or folders (their .wav/.flac/.ogg files, sorted)."""
    from seqtool.data.synth import AUDIO_EXTS

    out = []
    for p in map(os.fspath, inputs or ("-",)):
        if p != "-" and os.path.isdir(p):
            files = sorted(f for f in os.listdir(p) if f.lower().endswith(AUDIO_EXTS))
            if not files:
                raise SeqtoolError(f"{p}: no {' '.join(AUDIO_EXTS)} files in this folder")
            out.extend(os.path.join(p, f) for f in files)
        else:
            out.append(p)
    return out


def match_recordings(audio: list, numbered, source: str) -> tuple[list, list]:
    """(sorted [(reference filename, audio path)], reference events) that eval scores.

    One folder: the files the reference names, found in it. Files given one by one: matched to
    the reference by base name; reference events of other files are left out.
    """
    ref = [e for _, e in numbered]
    if len(audio) == 1 and os.path.isdir(audio[0]):
        if not numbered:
            raise SeqtoolError(f"{source}: no reference events to find recordings by")
        return sorted(find_audio(numbered, audio[0], source).items()), ref
    names = {os.path.basename(e.filename): e.filename for e in ref}
    jobs = [(names.get(os.path.basename(p), os.path.basename(p)), p) for p in audio]
    if not any(os.path.basename(p) in names for p in audio):
        # scoring would count 0 reference events and report a perfect-looking ER of 0
        shown = ", ".join(os.path.basename(p) for p in audio[:3]) + (", ..." if len(audio) > 3 else "")
        raise SeqtoolError(f"{source} names none of the inputs ({shown}): no reference to score "
                           f"them against")
    keep = {f for f, _ in jobs}
    return sorted(jobs), [e for e in ref if e.filename in keep]


def match_table_names(est: list, ref: list) -> list:
    """Predicted events renamed to the reference's filenames where only the folder differs:
    predict writes the paths it was given (scenes/a.wav); references usually hold base names."""
    ref_names = {e.filename for e in ref}
    by_base = {os.path.basename(f): f for f in ref_names}
    return [e if e.filename in ref_names or os.path.basename(e.filename) not in by_base
            else Event(by_base[os.path.basename(e.filename)], e.onset, e.offset, e.label) for e in est]
