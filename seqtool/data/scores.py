"""Symbolic scores: MIDI files and JSONL note lists -> notes -> per-note feature rows.

A score becomes a list of `Note(pitch, onset, duration, voice)`, onset and duration in beats
(quarter notes) by default, or seconds for MIDI with ``time_unit="seconds"``.

Voice selection (``voices=``):
    "melody"  one monophonic line, voice 0. MIDI: the first track that has (non-drum) notes; for a
              file whose notes all sit in one track, the lowest channel that has notes. JSONL: the
              lowest part number (part 0 = highest voice). That line is then reduced to its top voice
              (highest pitch at each onset), so the result is always monophonic.
    "all"     every note; voice = rank of its track (or of its channel for one-track files; the part
              number for JSONL).

Why the melody is forced monophonic: in music21-styles the number of parts alone separates the
classes (folk = 1, chorale = 4, Palestrina = 3-6). Taking only the first line is not enough, because
a single-track file (type 0, or a piano part) carries all voices in one stream, and chords within a
line (the double stops of some folk tunes) would leak "how many notes sound at once". After the
top-voice reduction every input looks like a single melody, whatever its number of parts.
"""

from __future__ import annotations

import bisect
import json
import math
from typing import NamedTuple

import numpy as np

from seqtool.errors import SeqtoolError, UsageError
from seqtool.errors import warn as _warn

VOICES = ("melody", "all")
TIME_UNITS = ("beats", "seconds")
DRUM_CHANNEL = 9  # General MIDI channel 10: unpitched percussion, never a melody

METER_PERIODS = (2, 4)  # metric phase over 2 and 4 typical inter-onset times (beat, bar-ish)
FEATURE_NAMES = ("pitch", "interval", "log_duration", "log_ioi", "rest_before", "is_melody") + tuple(
    f"phase{k}_{f}" for k in METER_PERIODS for f in ("cos", "sin")) + tuple(f"degree_{d}" for d in range(12))
N_FEATURES = len(FEATURE_NAMES)
INTERVAL_CLIP = 2.0  # octaves: leaps beyond two octaves are rare and carry no extra style information
LOG_CLIP = 4.0  # log2 ratio clip: 16x the typical length either way
REST_FRACTION = 0.2  # a gap longer than this fraction of the median IOI counts as a rest, so
#                      articulation gaps in performed MIDI (staccato, 4-decimal rounding) do not


class Note(NamedTuple):
    pitch: int
    onset: float
    duration: float
    voice: int


def _check_voices(voices: str) -> None:
    if voices not in VOICES:
        raise UsageError(f"voices must be one of {', '.join(VOICES)}, not {voices!r}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# top voice


def top_voice(notes: list[Note]) -> list[Note]:
    """Reduce notes to one monophonic line: the highest pitch at each onset, as voice 0.

    A new onset is skipped while the previously kept note is still held above (or at) it for more
    than half of the new note's length; a brief overlap is legato (or rounding), not a second
    voice, so it does not hide the next melody note. Kept notes are cut at the next kept onset.
    """
    ordered = sorted(notes, key=lambda n: (n.onset, -n.pitch, -n.duration))
    kept: list[Note] = []
    prev_onset = None
    for n in ordered:
        if n.onset == prev_onset:
            continue  # the highest note of this onset was considered first
        prev_onset = n.onset
        if kept:
            held = kept[-1]
            remaining = held.onset + held.duration - n.onset
            if held.pitch >= n.pitch and remaining > 0.5 * n.duration:
                continue
        kept.append(n)
    out = []
    for i, n in enumerate(kept):
        d = n.duration
        if i + 1 < len(kept):
            d = min(d, kept[i + 1].onset - n.onset)
        out.append(Note(n.pitch, n.onset, d, 0))
    return out


def _sort(notes: list[Note]) -> list[Note]:
    return sorted(notes, key=lambda n: (n.onset, -n.pitch, n.voice))


# ---------------------------------------------------------------------------------------------
# MIDI


def _tempo_seconds(tempos: list[tuple[int, int]], tpb: int):
    """tick -> seconds under a tempo map [(tick, microseconds per beat)], 120 bpm before the first."""
    ticks = [0]
    secs = [0.0]
    rates = [500000]
    for tick, tempo in sorted(tempos, key=lambda x: x[0]):
        if tick == ticks[-1]:
            rates[-1] = tempo  # the last change at a tick wins
            continue
        secs.append(secs[-1] + (tick - ticks[-1]) * rates[-1] / (1e6 * tpb))
        ticks.append(tick)
        rates.append(tempo)

    def convert(tick: int) -> float:
        i = bisect.bisect_right(ticks, tick) - 1
        return secs[i] + (tick - ticks[i]) * rates[i] / (1e6 * tpb)

    return convert


def _track_notes(track) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int]], int]:
    """Pair note-ons with note-offs in one track: ([(channel, pitch, start, end)], tempos, last tick)."""
    events = []
    tempos = []
    tick = 0
    for seq, msg in enumerate(track):
        tick += msg.time
        if msg.type == "set_tempo":
            tempos.append((tick, msg.tempo))
        elif msg.type == "note_on" and msg.velocity > 0:
            events.append((tick, 1, seq, msg.channel, msg.note))
        elif msg.type in ("note_off", "note_on"):  # note_on with velocity 0 is a note-off
            events.append((tick, 0, seq, msg.channel, msg.note))
    # offs before ons at the same tick: "off 60, on 60" and "on 60, off 60" both mean a repeated note
    events.sort()
    sounding: dict[tuple[int, int], int] = {}
    out = []
    for t, is_on, _, ch, pitch in events:
        key = (ch, pitch)
        start = sounding.pop(key, None)
        if start is not None and t > start:
            out.append((ch, pitch, start, t))
        if is_on:
            # a second note-on of a sounding pitch re-strikes it: the earlier note ends here
            sounding[key] = t
        # a note-off with nothing sounding is ignored
    for (ch, pitch), start in sounding.items():  # never switched off: ends with the track
        if tick > start:
            out.append((ch, pitch, start, tick))
    return out, tempos, tick


def read_midi(path, voices: str = "melody", time_unit: str = "beats") -> list[Note]:
    """Notes of a Standard MIDI File, sorted by (onset, -pitch, voice); see the module docstring."""
    _check_voices(voices)
    if time_unit not in TIME_UNITS:
        raise UsageError(f"time_unit must be one of {', '.join(TIME_UNITS)}, not {time_unit!r}")
    import mido

    try:
        mid = mido.MidiFile(str(path))
    except OSError as e:
        if e.strerror:
            raise SeqtoolError(f"{path}: cannot read MIDI file ({e.strerror})") from None
        raise SeqtoolError(f"{path}: not a readable MIDI file ({_one_line(e)})") from None
    except Exception as e:  # corrupt bytes surface as EOFError, KeyError, ValueError, IndexError...
        raise SeqtoolError(f"{path}: not a readable MIDI file ({_one_line(e)})") from None
    tpb = mid.ticks_per_beat
    if not isinstance(tpb, int) or tpb <= 0:
        raise SeqtoolError(f"{path}: unsupported MIDI time division {tpb!r}")

    per_track = [_track_notes(tr) for tr in mid.tracks]
    # raw: (track, channel, pitch, start_tick, end_tick)
    raw = [(ti, *n) for ti, (notes, _, _) in enumerate(per_track) for n in notes]
    if not raw:
        raise SeqtoolError(f"{path}: MIDI file has no notes")

    if time_unit == "beats":
        to_time = [lambda tick: tick / tpb] * len(per_track)
    elif mid.type == 2:  # asynchronous tracks: each keeps its own tempo map
        to_time = [_tempo_seconds(tempos, tpb) for _, tempos, _ in per_track]
    else:  # types 0 and 1: one tempo map for the file, wherever its set_tempo events sit
        conv = _tempo_seconds([t for _, tempos, _ in per_track for t in tempos], tpb)
        to_time = [conv] * len(per_track)

    def note(r, voice: int) -> Note:
        ti, _, pitch, start, end = r
        on = to_time[ti](start)
        return Note(int(pitch), float(on), float(to_time[ti](end) - on), int(voice))

    tracks = sorted({r[0] for r in raw})
    if voices == "melody":
        pitched = [r for r in raw if r[1] != DRUM_CHANNEL] or raw
        first = min(r[0] for r in pitched)
        line = [r for r in pitched if r[0] == first]
        if len(tracks) == 1:
            # one track holding every part: its channels are the parts
            ch = min(r[1] for r in line)
            line = [r for r in line if r[1] == ch]
        return top_voice([note(r, 0) for r in line])

    if len(tracks) == 1:
        channels = sorted({r[1] for r in raw})
        rank = {c: i for i, c in enumerate(channels)}
        return _sort([note(r, rank[r[1]]) for r in raw])
    rank = {t: i for i, t in enumerate(tracks)}
    return _sort([note(r, rank[r[0]]) for r in raw])


# ---------------------------------------------------------------------------------------------
# JSONL


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_note(row, j: int, where: str) -> Note | None:
    if not isinstance(row, (list, tuple)) or len(row) != 4:
        raise SeqtoolError(f"{where}: notes[{j}] must be [onset, duration, midi_pitch, part], got {row!r}")
    onset, dur, pitch, part = row
    if not _number(onset) or onset < 0:
        raise SeqtoolError(f"{where}: notes[{j}] onset {onset!r} is not a non-negative number")
    if not _number(dur) or dur < 0:
        raise SeqtoolError(f"{where}: notes[{j}] duration {dur!r} is not a non-negative number")
    if not _number(pitch) or pitch != int(pitch) or not 0 <= pitch <= 127:
        raise SeqtoolError(f"{where}: notes[{j}] pitch {pitch!r} is not a MIDI note number 0-127")
    if not _number(part) or part != int(part) or part < 0:
        raise SeqtoolError(f"{where}: notes[{j}] part {part!r} is not a non-negative integer")
    if dur == 0:
        return None  # grace notes: no duration, no place in a duration-relative encoding
    return Note(int(pitch), float(onset), float(dur), int(part))


def select_voices(notes: list[Note], voices: str = "melody") -> list[Note]:
    """Apply a voice selection to notes whose voice is a part number (0 = highest part)."""
    _check_voices(voices)
    if voices == "all" or not notes:
        return _sort(notes)
    first = min(n.voice for n in notes)
    return top_voice([n for n in notes if n.voice == first])


def _score_record(line: str, where: str, voices: str, require_label: bool, seen: dict, ln: int):
    """(id, label, notes) of one JSONL line, or SeqtoolError naming `where`."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise SeqtoolError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(obj, dict):
        raise SeqtoolError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    sid = obj.get("id")
    if isinstance(sid, int) and not isinstance(sid, bool):
        sid = str(sid)
    if not isinstance(sid, str) or not sid:
        raise SeqtoolError(f"{where}: missing or empty \"id\" (a string)")
    if sid in seen:
        raise SeqtoolError(f"{where}: duplicate id {sid!r} (first on line {seen[sid]})")
    label = obj.get("label")
    if not (label is None and not require_label) and (not isinstance(label, str) or not label):
        raise SeqtoolError(f"{where}: missing or empty \"label\" (a string)")
    rows = obj.get("notes")
    if not isinstance(rows, list) or not rows:
        raise SeqtoolError(f"{where}: \"notes\" must be a non-empty list of [onset, duration, midi_pitch, part]")
    notes = [n for j, row in enumerate(rows) if (n := _parse_note(row, j, where)) is not None]
    if not notes:
        raise SeqtoolError(f"{where}: no note with a positive duration")
    seen[sid] = ln
    return sid, label, select_voices(notes, voices)


def read_scores_jsonl(path, voices: str = "melody", require_label: bool = True, strict: bool = False,
                      warn=None):
    """Scores of a JSON Lines file -> [(id, label, notes)].

    Each line: {"id": str, "label": str, "notes": [[onset, duration, midi_pitch, part], ...], ...}.
    Other fields (n_parts, time_signature, key_sharps, source) are ignored on purpose: they give the
    class away without any music in them. Blank lines are skipped. Without require_label a missing
    label reads as None (for prediction). A malformed record is skipped, and ``warn`` (default:
    seqtool.errors.warn) gets one message naming the first lines, as train skips unreadable files;
    with ``strict`` it is a SeqtoolError naming the line.
    """
    _check_voices(voices)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise SeqtoolError(f"{path}: cannot read ({e.strerror or _one_line(e)})") from None
    except UnicodeDecodeError as e:
        raise SeqtoolError(f"{path}: not UTF-8 text ({_one_line(e)})") from None

    out, skipped = [], []
    seen: dict[str, int] = {}
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(_score_record(line, f"{path}:{ln}", voices, require_label, seen, ln))
        except SeqtoolError as e:
            if strict:
                raise
            skipped.append(str(e))
    if not out:
        why = f" ({len(skipped)} malformed; the first: {skipped[0]})" if skipped else " (empty file)"
        raise SeqtoolError(f"{path}: no scores{why}")
    if skipped:
        more = f"; {len(skipped) - 1} more" if len(skipped) > 1 else ""
        (warn or _warn)(f"skipped {len(skipped)} malformed record{'s' if len(skipped) > 1 else ''} "
                        f"(--strict stops at the first): {skipped[0]}{more}")
    return out


# ---------------------------------------------------------------------------------------------
# features


def score_features(notes: list[Note]) -> np.ndarray:
    """(T, N_FEATURES) float32, one row per note in time order (onset, -pitch, voice).

    Columns (FEATURE_NAMES):
      pitch         (midi - 60) / 12
      interval      semitones from the previous note of the same voice / 12, clipped to +-2; 0 first
      log_duration  log2(duration / median duration of the piece), clipped to +-4
      log_ioi       log2(onset gap to the previous note of the same voice / median such gap), clipped
                    to +-4 (a chord note in the same voice gets -4); 0 for a voice's first note
      rest_before   1 when the voice was silent before the note for more than REST_FRACTION of the
                    median gap
      is_melody     1 for voice 0
      phase{2,4}_{cos,sin}  cos and sin of 2 pi onset / (k * median gap), k = 2, 4: where the note
                    falls in a cycle of 2 or 4 typical notes, counted from the first onset (a
                    unit-free stand-in for metric position: on-beat vs syncopated)
      degree_0..11  one-hot (pitch - final) mod 12, the final being the lowest pitch at the last
                    onset: the piece's tonal centre in nearly all tonal and modal music, so this is
                    the scale degree, the same in every key (modal vs major/minor, chromaticism)
    Times enter only as ratios to the piece's own typical values, so tempo and notation units
    (Palestrina in half notes, chorales in quarters) cannot give the class away.
    """
    if not notes:
        return np.zeros((0, N_FEATURES), np.float32)
    ns = _sort(list(notes))
    pitch = np.array([n.pitch for n in ns], np.float64)
    onset = np.array([n.onset for n in ns], np.float64)
    dur = np.array([n.duration for n in ns], np.float64)
    voice = np.array([n.voice for n in ns], np.int64)
    T = len(ns)
    prev = _previous_in_voice(voice)
    has = prev >= 0
    p = prev[has]
    interval, ioi, gap = np.zeros(T), np.zeros(T), np.zeros(T)
    interval[has] = pitch[has] - pitch[p]
    ioi[has] = onset[has] - onset[p]
    gap[has] = onset[has] - (onset[p] + dur[p])
    pos = dur[dur > 0]
    med_dur = float(np.median(pos)) if pos.size else 1.0
    pos = ioi[has & (ioi > 0)]
    med_ioi = float(np.median(pos)) if pos.size else med_dur

    feats = np.zeros((T, N_FEATURES), np.float32)
    feats[:, 0] = (pitch - 60.0) / 12.0
    feats[:, 1] = np.clip(interval / 12.0, -INTERVAL_CLIP, INTERVAL_CLIP)
    feats[:, 2] = _log_ratio(dur, med_dur)
    feats[:, 3] = np.where(has, _log_ratio(ioi, med_ioi), 0.0)
    feats[:, 4] = has & (gap > REST_FRACTION * med_ioi)
    feats[:, 5] = voice == 0
    col = _phase_features(feats, onset, med_ioi, 6)
    final = int(pitch[onset == onset[-1]].min()) % 12
    feats[np.arange(T), col + (pitch.astype(np.int64) - final) % 12] = 1.0
    return feats


def _previous_in_voice(voice: np.ndarray) -> np.ndarray:
    """Index of the previous note of the same voice (-1 for a voice's first note)."""
    prev = np.full(len(voice), -1, np.int64)
    last: dict[int, int] = {}
    for i, v in enumerate(voice.tolist()):
        prev[i] = last.get(v, -1)
        last[v] = i
    return prev


def _log_ratio(x, med):
    # flooring at med * 2^-LOG_CLIP keeps log2 finite for zero lengths and clips the low side
    return np.clip(np.log2(np.maximum(x, med * 2.0 ** -LOG_CLIP) / med), -LOG_CLIP, LOG_CLIP)


def _phase_features(feats: np.ndarray, onset: np.ndarray, med_ioi: float, col: int) -> int:
    """cos/sin of the onset's phase in cycles of METER_PERIODS typical gaps, from column
    ``col``; returns the next free column."""
    for k in METER_PERIODS:
        angle = 2.0 * np.pi * (onset - onset[0]) / (k * med_ioi)
        feats[:, col] = np.cos(angle)
        feats[:, col + 1] = np.sin(angle)
        col += 2
    return col


# ---------------------------------------------------------------------------------------------
# crops and chunks


def random_crop(features: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of `length` rows (a view); the whole piece when it is not longer."""
    if length < 1:
        raise ValueError(f"crop length must be >= 1, got {length}")
    T = len(features)
    if T <= length:
        return features
    start = int(rng.integers(0, T - length + 1))
    return features[start:start + length]


def chunk_starts(T: int, length: int, hop: int) -> list[int]:
    """Window starts every `hop` rows, plus one window ending exactly at T so the tail is covered."""
    if length < 1 or hop < 1:
        raise ValueError(f"chunk length and hop must be >= 1, got length={length} hop={hop}")
    if hop > length:
        raise ValueError(f"hop {hop} > length {length} would skip rows between chunks")
    if T <= length:
        return [0]
    starts = list(range(0, T - length + 1, hop))
    if starts[-1] != T - length:
        starts.append(T - length)
    return starts


def chunks(features: np.ndarray, length: int, hop: int) -> list[np.ndarray]:
    """Overlapping windows covering the whole piece (the last one aligned to the end), for
    averaging predictions over a long score; one window (the whole piece) when it is short."""
    return [features[s:s + length] for s in chunk_starts(len(features), length, hop)]
