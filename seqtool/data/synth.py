"""Polyphonic scene synthesis from isolated event clips (DCASE 2016 task 2 style).

A scene = background (a recording or coloured noise) + clips placed on a timeline, each scaled
so that its RMS over the event is ebr_db above the background's RMS over the same samples
(the event-to-background ratio of the DCASE 2016 synthetic set).
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqtool.data.audio import MAX_SR, read_audio, write_wav
from seqtool.data.events import Event, read_events, write_events_file
from seqtool.errors import SeqtoolError, UsageError
from seqtool.core.memory import format_bytes, require_memory

NOISE_KINDS = ("white", "pink", "brown")
AUDIO_EXTS = (".wav", ".flac", ".ogg")
# file-name prefixes whose class name differs from the annotations (see the dataset's SOURCE.md)
LABEL_ALIASES = {"keysDrop": "keys"}
BACKGROUND_RMS = 10 ** (-30 / 20)  # -30 dBFS leaves headroom for events at +6 dB EBR
PEAK = 0.99


def noise(kind: str, n: int, rng: np.random.Generator, sr: int = 16000, f_low: float = 20.0) -> np.ndarray:
    """(n,) float32 noise with unit RMS; pink falls 3 dB/octave, brown 6 dB/octave above f_low Hz.

    Below f_low the spectrum stays flat: otherwise sub-audible drift holds most of the power
    and the local level (which the EBR refers to) would swing wildly along the scene.
    """
    if kind not in NOISE_KINDS:
        raise SeqtoolError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    white = rng.standard_normal(n)
    if kind != "white":
        # shape the spectrum directly: amplitude ~ f^-1/2 (pink) or f^-1 (brown)
        spec = np.fft.rfft(white)
        f = np.maximum(np.arange(len(spec)) * (sr / n), f_low)
        spec /= f ** (0.5 if kind == "pink" else 1.0)
        spec[0] = 0.0
        white = np.fft.irfft(spec, n)
    rms = np.sqrt(np.mean(white ** 2))
    return (white / rms if rms > 0 else white).astype(np.float32)


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def label_from_name(name: str) -> str:
    """'keysDrop001.wav' -> 'keys', 'cough130.wav' -> 'cough': class prefix before the number."""
    stem = re.sub(r"[\s_-]*\d+$", "", Path(name).stem)
    return LABEL_ALIASES.get(stem, stem)


def load_clip_library(folder, sr: int = 16000) -> dict[str, list[np.ndarray]]:
    """{label: [float32 clips at sr]} from a folder of isolated event clips.

    Accepts the dataset root (clips/ beside clips.tsv, whose label column wins) or the clip
    folder itself (labels from the file names).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SeqtoolError(f"{folder}: clip folder not found")
    clip_dir = folder / "clips" if (folder / "clips").is_dir() else folder
    table = folder / "clips.tsv"
    if not table.is_file():
        table = clip_dir.parent / "clips.tsv"
    names: dict[str, str] = {}
    if table.is_file():
        with open(table, encoding="utf-8", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
                if lineno == 1 and row and row[0] == "filename":
                    continue
                if not row:
                    continue
                if len(row) < 2 or not row[1]:
                    raise SeqtoolError(f"{table}:{lineno}: expected filename<TAB>label")
                names[row[0]] = row[1]
    files = sorted(p for p in clip_dir.iterdir() if p.suffix.lower() in AUDIO_EXTS)
    if not files:
        raise SeqtoolError(f"{clip_dir}: no audio clips (.wav/.flac/.ogg)")
    library: dict[str, list[np.ndarray]] = {}
    for p in files:
        label = names.get(p.name) or label_from_name(p.name)
        if not label:
            raise SeqtoolError(f"{p}: cannot tell the class from the file name")
        x, _ = read_audio(p, target_sr=sr)
        library.setdefault(label, []).append(x)
    return dict(sorted(library.items()))


def _overlap_count(intervals, onset, offset) -> int:
    """Largest number of intervals simultaneously active within [onset, offset)."""
    inside = [(a, b) for a, b in intervals if a < offset and b > onset]
    if not inside:
        return 0
    points = [onset] + [a for a, _ in inside if a > onset]
    return max(sum(1 for a, b in inside if a <= t < b) for t in points)


def random_timeline(labels, duration: float, events_per_class: int, max_polyphony: int,
                    rng: np.random.Generator, clip_lengths: dict | None = None,
                    same_class_gap: float = 0.1, max_tries: int = 2000) -> list[Event]:
    """events_per_class events of every label at random times, never more than max_polyphony
    at once (1 = no overlap). Event lengths come from clip_lengths {label: [seconds]} when
    given (so clips need no looping), else uniform in 0.3..3 s.

    Events of one class never overlap and keep same_class_gap apart, so their annotations do
    not merge into one.
    """
    if max_polyphony < 1:
        raise SeqtoolError(f"max polyphony must be >= 1, got {max_polyphony}")
    if duration <= 0:
        raise SeqtoolError(f"scene duration must be positive, got {duration}")
    todo = [lab for lab in labels for _ in range(int(events_per_class))]
    rng.shuffle(todo)
    # place long events first: they are the hardest to fit
    lengths = []
    for lab in todo:
        pool = (clip_lengths or {}).get(lab)
        length = float(rng.choice(pool)) if pool else float(rng.uniform(0.3, 3.0))
        lengths.append(min(length, duration))
    order = np.argsort(lengths, kind="stable")[::-1]
    placed: list[tuple[float, float, str]] = []
    for k in order:
        lab, length = todo[k], lengths[k]
        for _ in range(max_tries):
            on = float(rng.uniform(0.0, duration - length))
            off = on + length
            same = [(a - same_class_gap, b + same_class_gap) for a, b, lb in placed if lb == lab]
            if _overlap_count(same, on, off):
                continue
            if _overlap_count([(a, b) for a, b, _ in placed], on, off) < max_polyphony:
                placed.append((on, off, lab))
                break
        else:
            raise SeqtoolError(f"cannot fit {len(todo)} events into {duration:g} s with polyphony "
                               f"{max_polyphony}; use fewer events or a longer scene")
    placed.sort()
    return [Event("", round(a, 3), round(b, 3), lab) for a, b, lab in placed]


def _fit_clip(clip: np.ndarray, n: int, fade: int) -> np.ndarray:
    """Crop or loop clip to n samples with short linear fades against clicks."""
    clip = np.asarray(clip, dtype=np.float64)
    if len(clip) == 0:
        raise SeqtoolError("empty clip in the clip library")
    if len(clip) < n:
        f = min(fade, len(clip) // 4)
        piece = clip.copy()
        if f > 0:
            ramp = np.linspace(0.0, 1.0, f, endpoint=False)
            piece[:f] *= ramp
            piece[-f:] *= ramp[::-1]
        clip = np.tile(piece, -(-n // len(piece)))
    out = clip[:n].copy()
    f = min(fade, n // 4)
    if f > 0:
        ramp = np.linspace(0.0, 1.0, f, endpoint=False)
        out[:f] *= ramp
        out[-f:] *= ramp[::-1]
    return out


def _background(background, n: int, sr: int, rng) -> np.ndarray:
    if isinstance(background, np.ndarray):
        bg = np.asarray(background, dtype=np.float64)
    elif isinstance(background, str) and background in NOISE_KINDS and not os.path.exists(background):
        bg = noise(background, n, rng, sr).astype(np.float64)
    elif isinstance(background, (str, os.PathLike)):
        bg, _ = read_audio(background, target_sr=sr)
        bg = bg.astype(np.float64)
    else:
        raise SeqtoolError(f"background must be a file, an array or one of {', '.join(NOISE_KINDS)}")
    if len(bg) < n:
        bg = np.tile(bg, -(-n // max(len(bg), 1)))
    elif len(bg) > n:
        start = int(rng.integers(0, len(bg) - n + 1))  # a random stretch of a long recording
        bg = bg[start:start + n]
    rms = _rms(bg)
    if rms == 0:
        raise SeqtoolError("background is silent; an event-to-background ratio needs some background")
    return bg * (BACKGROUND_RMS / rms)


def synth_scene(timeline_events, clips_by_label: dict, background, sr: int, ebr_db, rng: np.random.Generator,
                duration: float | None = None, fade_ms: float = 10.0, pick: str = "random",
                filename: str = "") -> tuple[np.ndarray, list[Event]]:
    """Mix one scene; returns ((n,) float32 signal, events relabelled with filename).

    ebr_db: a number, or (low, high) to draw one per event. pick: "random" clip of the label,
    or "closest" in length to the event (less looping and cropping). The whole scene is scaled
    down if it would clip; that scales background and events alike, so EBRs are kept.
    """
    events = sorted(timeline_events, key=lambda e: (e.onset, e.offset, e.label))
    if duration is None:
        duration = max((e.offset for e in events), default=0.0)
    n = int(round(duration * sr))
    if n <= 0:
        raise SeqtoolError("scene has zero length: give a duration or a timeline with events")
    bg = _background(background, n, sr, rng)
    mix = bg.copy()
    fade = int(round(fade_ms * sr / 1000))
    out = []
    for e in events:
        clips = clips_by_label.get(e.label)
        if not clips:
            raise SeqtoolError(f"no clips for event label {e.label!r} (have: {', '.join(sorted(clips_by_label))})")
        a = int(round(e.onset * sr))
        b = min(int(round(e.offset * sr)), n)
        if b - a < 2:
            continue  # starts at or after the end of the scene
        if pick == "closest":
            clip = min(clips, key=lambda c: abs(len(c) - (b - a)))
        elif pick == "random":
            clip = clips[int(rng.integers(len(clips)))]
        else:
            raise SeqtoolError(f"clip choice must be 'random' or 'closest', got {pick!r}")
        x = _fit_clip(clip, b - a, fade)
        ebr = float(rng.uniform(*ebr_db)) if np.ndim(ebr_db) else float(ebr_db)
        rx = _rms(x)
        if rx == 0:
            raise SeqtoolError(f"a clip of {e.label!r} is silent")
        mix[a:b] += x * (_rms(bg[a:b]) * 10 ** (ebr / 20) / rx)
        out.append(Event(filename, e.onset, b / sr if b == n else e.offset, e.label))
    peak = float(np.max(np.abs(mix)))
    if peak > PEAK:
        mix *= PEAK / peak
    return mix.astype(np.float32), out


# Peak bytes per scene sample while mixing: float64 noise and its complex spectrum, float32
# background, events and mix (tracemalloc peak of one 60 s pink-noise scene: 34 per sample).
SCENE_BYTES_PER_SAMPLE = 48


def _check_options(duration, sr) -> None:
    if not (isinstance(duration, (int, float)) and math.isfinite(duration) and duration > 0):
        raise UsageError(f"--duration must be a positive number of seconds, got {duration!r}")
    if not (isinstance(sr, (int, np.integer)) and 1000 <= sr <= MAX_SR):
        raise UsageError(f"--sr must be an integer from 1000 to {MAX_SR} Hz, got {sr!r}")


def _check_room(out_dir: Path, n_scenes: int, seconds: float, sr: int) -> None:
    """Refuse before mixing when one scene cannot fit in memory or all of them on the disk."""
    samples = seconds * sr
    what = f"a scene of {seconds:g} s at {sr} Hz"
    if samples * SCENE_BYTES_PER_SAMPLE > 2 ** 62:
        raise SeqtoolError(f"{what} is too long to hold in memory")
    require_memory(int(samples * SCENE_BYTES_PER_SAMPLE), what)
    if out_dir.exists() and not out_dir.is_dir():
        raise SeqtoolError(f"cannot write scenes into {out_dir}: it is a file, not a folder")
    existing = next((p for p in (out_dir, *out_dir.resolve().parents) if p.exists()), None)
    if existing is None:
        return
    need = n_scenes * samples * 2  # 16-bit PCM
    free = shutil.disk_usage(existing).free
    if need > free:
        raise SeqtoolError(f"{n_scenes} scene(s) of {seconds:g} s at {sr} Hz need ~{format_bytes(need)} "
                           f"on disk; {existing} has {format_bytes(free)} free")


def synth_scenes_to_dir(out_dir, library, n_scenes: int, *, duration: float = 30.0, ebr_db=0.0,
                        events_per_class: int = 2, max_polyphony: int = 2, background="pink",
                        timelines=None, labels=None, seed: int = 0, sr: int = 16000, pick: str = "random",
                        prefix: str = "scene", gt_name: str = "ground_truth.tsv") -> tuple[list[Path], Path]:
    """Write n_scenes WAVs and one DCASE ground-truth TSV (with header) into out_dir.

    library: a clip folder (see load_clip_library) or {label: [clips]}. timelines: optional
    annotation files (onset offset label) reused in turn, e.g. the official dev timelines;
    otherwise random_timeline with events_per_class and max_polyphony over `labels` (default:
    all library labels). Returns (wav paths, TSV path). Every file is written atomically.
    """
    if n_scenes < 1:
        raise SeqtoolError(f"number of scenes must be >= 1, got {n_scenes}")
    _check_options(duration, sr)
    rng = np.random.default_rng(seed)
    lib = load_clip_library(library, sr) if isinstance(library, (str, os.PathLike)) else library
    labels = list(labels) if labels else sorted(lib)
    missing = [lab for lab in labels if lab not in lib]
    if missing:
        raise SeqtoolError(f"no clips for label(s) {', '.join(missing)}")
    loaded = [read_events(t) for t in timelines] if timelines else None
    longest = max([duration] + [e.offset for t in loaded or [] for e in t])
    out_dir = Path(out_dir)
    _check_room(out_dir, n_scenes, longest, sr)
    clip_lengths = {lab: [len(c) / sr for c in lib[lab]] for lab in labels}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SeqtoolError(f"cannot create {out_dir}: {e.strerror or e}") from None
    width = max(3, len(str(n_scenes - 1)))
    wavs, truth = [], []
    for i in range(n_scenes):
        name = f"{prefix}_{i:0{width}d}.wav"
        if loaded:
            timeline = loaded[i % len(loaded)]
            scene_len = max(duration, max((e.offset for e in timeline), default=0.0))
        else:
            timeline = random_timeline(labels, duration, events_per_class, max_polyphony, rng, clip_lengths)
            scene_len = duration
        signal, events = synth_scene(timeline, lib, background, sr, ebr_db, rng, duration=scene_len,
                                     pick=pick, filename=name)
        path = out_dir / name
        write_wav(path, signal, sr)
        wavs.append(path)
        truth.extend(events)
    gt = out_dir / gt_name
    write_events_file(truth, gt, header=True)
    return wavs, gt


# ----------------------------------------------------------------------------- scenes to train on


@dataclass(frozen=True)
class SceneRecipe:
    """How training scenes are mixed (``seqtool train sed --clips``): given timelines rendered with
    other clips each time, or random ones; every number drawn per scene (EBR per event) from its
    (low, high) range, the background picked from ``backgrounds`` (noise names or recordings)."""

    timelines: tuple  # tuples of Events (onset, offset, label), rendered in turn
    labels: tuple  # classes of the random timelines
    duration: float  # seconds of a random scene; a timeline's scene lasts at least this long
    events_per_class: tuple  # (low, high) of a random timeline
    polyphony: tuple  # (low, high) of a random timeline
    ebr_db: tuple  # (low, high) per event
    backgrounds: tuple  # NOISE_KINDS names or float arrays at the scene's sample rate

    def seconds(self, timeline_id) -> float:
        """The length of scene on timeline ``timeline_id`` (None: a random one)."""
        if timeline_id is None:
            return float(self.duration)
        return max(float(self.duration), max((e.offset for e in self.timelines[timeline_id]), default=0.0))


def load_timelines(paths, library: dict) -> list[tuple]:
    """Timelines from annotation files: a 3-column file is one timeline, a DCASE 4-column one has
    one per file it names. A class without clips is an error naming the file and line."""
    from seqtool.data.events import group_by_file

    timelines = []
    for path in paths:
        numbered = read_events(path, with_lines=True)
        if not numbered:
            raise SeqtoolError(f"{path}: no events in this timeline")
        for lineno, e in numbered:
            if e.label not in library:
                raise SeqtoolError(f"{path}:{lineno}: no clips of class {e.label!r} (the clips have: "
                                   f"{', '.join(sorted(library))})")
        timelines.extend(tuple(v) for v in group_by_file(e for _, e in numbered).values())
    return timelines


def load_backgrounds(specs, sr: int) -> tuple:
    """Noise names kept as they are, background recordings read once (resampled to sr)."""
    out = []
    for spec in specs:
        if spec in NOISE_KINDS and not os.path.exists(spec):
            out.append(spec)
            continue
        x, _ = read_audio(spec, target_sr=sr)
        if _rms(x) == 0:
            raise SeqtoolError(f"{spec}: background is silent; an event-to-background ratio needs some background")
        out.append(x)
    return tuple(out)


def _draw(rng, span) -> int:
    low, high = span
    return int(rng.integers(low, high + 1))


def _fitting_timeline(library: dict, recipe: SceneRecipe, rng, sr: int) -> list[Event]:
    """A random timeline of ``recipe``; when the events drawn do not fit (long clips at low
    polyphony), one event per class fewer until they do, so a long run never stops on one
    unlucky draw. The fewest events must fit (SceneMaker.check_fits says so at the start)."""
    lengths = {lab: [len(c) / sr for c in library[lab]] for lab in recipe.labels}
    count, polyphony = _draw(rng, recipe.events_per_class), _draw(rng, recipe.polyphony)
    while True:
        try:
            return random_timeline(recipe.labels, recipe.duration, count, polyphony, rng, lengths)
        except SeqtoolError:
            if count <= recipe.events_per_class[0]:
                raise
            count -= 1


def recipe_scene(library: dict, recipe: SceneRecipe, timeline_id, rng: np.random.Generator, sr: int,
                 filename: str = "") -> tuple[np.ndarray, list[Event]]:
    """One scene of ``recipe``: on timeline ``timeline_id`` (None: a random timeline), clips,
    EBRs and background drawn from ``rng``. Returns what synth_scene does."""
    seconds = recipe.seconds(timeline_id)
    if timeline_id is None:
        timeline = _fitting_timeline(library, recipe, rng, sr)
    else:
        timeline = recipe.timelines[timeline_id]
    background = recipe.backgrounds[int(rng.integers(len(recipe.backgrounds)))]
    return synth_scene(timeline, library, background, sr, tuple(recipe.ebr_db), rng, duration=seconds,
                       filename=filename)
