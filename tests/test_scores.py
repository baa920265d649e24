"""Score readers and features: MIDI files built here with mido, JSONL validation, hand-computed
features, crops/chunks, and a smoke test over music21-styles when ../shared/data is present."""

import json
import math
import re
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from seqtool.data.scores import (
    FEATURE_NAMES,
    N_FEATURES,
    Note,
    chunk_starts,
    chunks,
    random_crop,
    read_midi,
    read_scores_jsonl,
    score_features,
    top_voice,
)
from seqtool.errors import SeqtoolError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "music21-styles"

TPB = 96


def on(note, t, ch=0, vel=80):
    return mido.Message("note_on", note=note, velocity=vel, time=t, channel=ch)


def off0(note, t, ch=0):
    """A note-off written as note_on with velocity 0 (running-status style)."""
    return mido.Message("note_on", note=note, velocity=0, time=t, channel=ch)


def off(note, t, ch=0):
    return mido.Message("note_off", note=note, velocity=64, time=t, channel=ch)


def tempo(us, t=0):
    return mido.MetaMessage("set_tempo", tempo=us, time=t)


def write(path, tracks, type_=1):
    mid = mido.MidiFile(type=type_, ticks_per_beat=TPB)
    for msgs in tracks:
        mid.tracks.append(mido.MidiTrack(msgs))
    mid.save(str(path))
    return path


def two_track(tmp_path):
    # track 0: melody 72 (beat 0-1), 74 (1-2), 76 (2-4), offs as velocity-0 note-ons
    # track 1: bass 48 (0-4) on channel 1 with a real note_off, plus the tempo changes:
    #          120 bpm, then 240 bpm from beat 2 -- tempo in a non-first track applies to the file
    t0 = [on(72, 0), off0(72, TPB), on(74, 0), off0(74, TPB), on(76, 0), off0(76, 2 * TPB)]
    t1 = [tempo(500000), on(48, 0, ch=1), tempo(250000, 2 * TPB), off(48, 2 * TPB, ch=1)]
    return write(tmp_path / "two.mid", [t0, t1])


def test_two_tracks_melody_in_beats(tmp_path):
    notes = read_midi(two_track(tmp_path))
    assert notes == [Note(72, 0.0, 1.0, 0), Note(74, 1.0, 1.0, 0), Note(76, 2.0, 2.0, 0)]


def test_two_tracks_all_in_seconds_follows_tempo_changes(tmp_path):
    notes = read_midi(two_track(tmp_path), voices="all", time_unit="seconds")
    # beats 0-2 at 0.5 s/beat, beats 2-4 at 0.25 s/beat
    expected = [(72, 0.0, 0.5, 0), (48, 0.0, 1.5, 1), (74, 0.5, 0.5, 0), (76, 1.0, 0.5, 0)]
    assert [n.pitch for n in notes] == [e[0] for e in expected]
    for n, (p, o, d, v) in zip(notes, expected):
        assert n.voice == v
        assert n.onset == pytest.approx(o, abs=1e-9)
        assert n.duration == pytest.approx(d, abs=1e-9)


def test_beats_do_not_depend_on_tempo(tmp_path):
    a = read_midi(two_track(tmp_path), voices="all")
    assert [(n.pitch, n.onset, n.duration, n.voice) for n in a] == [
        (72, 0.0, 1.0, 0), (48, 0.0, 4.0, 1), (74, 1.0, 1.0, 0), (76, 2.0, 2.0, 0)]


def test_ticks_per_beat_is_used(tmp_path):
    mid = mido.MidiFile(type=0, ticks_per_beat=1000)
    mid.tracks.append(mido.MidiTrack([on(60, 0), off(60, 250), on(62, 750), off(62, 1500)]))
    mid.save(str(tmp_path / "tpb.mid"))
    assert read_midi(tmp_path / "tpb.mid") == [Note(60, 0.0, 0.25, 0), Note(62, 1.0, 1.5, 0)]


def test_overlapping_same_pitch_and_same_tick_order(tmp_path):
    msgs = [
        on(60, 0), on(60, 48),      # re-strike of a sounding pitch: first note ends at tick 48
        off(60, 48), off(60, 0),    # second note ends at 96; the extra off is an orphan
        on(62, 0),                  # 62 from 96
        on(62, 96), off0(62, 0),    # at 192 a note-on listed before the note-off of the same pitch
        off0(62, 96),               # ... still means: one note ends, the next begins (192-288)
    ]
    path = write(tmp_path / "over.mid", [msgs], type_=0)
    assert read_midi(path) == [Note(60, 0.0, 0.5, 0), Note(60, 0.5, 0.5, 0),
                               Note(62, 1.0, 1.0, 0), Note(62, 2.0, 1.0, 0)]


def test_note_never_switched_off_ends_with_track(tmp_path):
    path = write(tmp_path / "open.mid", [[on(60, 0), on(64, 96), mido.MetaMessage("end_of_track", time=96)]])
    # "melody" reduces to the top line: 60 is cut where 64 (higher) starts
    assert read_midi(path, voices="all") == [Note(60, 0.0, 2.0, 0), Note(64, 1.0, 1.0, 0)]


def test_one_track_several_voices_melody_is_top_voice(tmp_path):
    # one channel, SATB-like: soprano holds 72 over four alto quarters, then a chord,
    # then a legato descent whose first note overlaps the next by 0.1 beat
    q = TPB
    ev = [  # (start, end, pitch) in ticks
        (0, 4 * q, 72), (0, q, 64), (q, 2 * q, 65), (2 * q, 3 * q, 67), (3 * q, 4 * q, 65),
        (4 * q, 5 * q, 60), (4 * q, 5 * q, 67),
        (5 * q, 6 * q + q // 10 + 1, 71), (6 * q, 7 * q, 69),
    ]
    msgs, t = [], 0
    for tick, kind, p in sorted([(s, 1, p) for s, e, p in ev] + [(e, 0, p) for s, e, p in ev]):
        msgs.append((on if kind else off)(p, tick - t))
        t = tick
    path = write(tmp_path / "satb.mid", [msgs], type_=0)
    assert read_midi(path) == [Note(72, 0.0, 4.0, 0), Note(67, 4.0, 1.0, 0),
                               Note(71, 5.0, 1.0, 0), Note(69, 6.0, 1.0, 0)]
    assert len(read_midi(path, voices="all")) == len(ev)


def test_one_track_channels_are_parts(tmp_path):
    msgs = [on(50, 0, ch=3), on(70, 0, ch=2), off(70, TPB, ch=2), off(50, 0, ch=3),
            on(72, 0, ch=2), off(72, TPB, ch=2)]
    path = write(tmp_path / "chan.mid", [msgs], type_=0)
    assert read_midi(path) == [Note(70, 0.0, 1.0, 0), Note(72, 1.0, 1.0, 0)]
    assert read_midi(path, voices="all") == [Note(70, 0.0, 1.0, 0), Note(50, 0.0, 1.0, 1),
                                             Note(72, 1.0, 1.0, 0)]


def test_melody_skips_leading_drum_and_empty_tracks(tmp_path):
    conductor = [tempo(400000)]
    drums = [on(36, 0, ch=9), off(36, TPB, ch=9)]
    tune = [on(67, 0, ch=1), off(67, 2 * TPB, ch=1)]
    path = write(tmp_path / "drums.mid", [conductor, drums, tune])
    assert read_midi(path) == [Note(67, 0.0, 2.0, 0)]
    # voices rank the tracks that have notes
    assert {(n.pitch, n.voice) for n in read_midi(path, voices="all")} == {(36, 0), (67, 1)}


def test_melody_hides_the_number_of_parts(tmp_path):
    """The same top line as 1 part, as 4 tracks, and as 4 voices in one track: same features."""
    top = [(0, 1, 67), (1, 2, 69), (2, 4, 71)]
    lower = [[(0, 4, 60)], [(0, 2, 55), (2, 4, 57)], [(0, 4, 48)]]

    def track(notes, ch):
        msgs, t = [], 0
        for tick, kind, p in sorted([(s * TPB, 1, p) for s, e, p in notes] + [(e * TPB, 0, p) for s, e, p in notes]):
            msgs.append((on if kind else off)(p, tick - t, ch=ch))
            t = tick
        return msgs

    one = read_midi(write(tmp_path / "one.mid", [track(top, 0)]))
    four = read_midi(write(tmp_path / "four.mid", [track(top, 0)] + [track(v, i + 1) for i, v in enumerate(lower)]))
    merged = read_midi(write(tmp_path / "merged.mid", [track(top + sum(lower, []), 0)], type_=0))
    assert one == four == merged
    np.testing.assert_array_equal(score_features(one), score_features(merged))


@pytest.mark.parametrize("content", [b"", b"not a midi file at all", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x00\x60MTrk\x00\x00\x01\x00\x90"])
def test_unreadable_midi_names_the_file(tmp_path, content):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(SeqtoolError) as err:
        read_midi(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_missing_and_noteless_midi(tmp_path):
    with pytest.raises(SeqtoolError, match="missing.mid"):
        read_midi(tmp_path / "missing.mid")
    path = write(tmp_path / "silent.mid", [[tempo(500000)]])
    with pytest.raises(SeqtoolError, match=r"silent\.mid: MIDI file has no notes"):
        read_midi(path)


# ----------------------------------------------------------------------------------- JSONL


def jl(path, objs):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


def test_jsonl_reads_scores_and_selects_voices(tmp_path):
    a = {"id": "a", "label": "folk", "n_parts": 1, "time_signature": "6/8",
         "notes": [[0, 0.5, 67, 0], [0.5, 0.5, 69, 0], [0.5, 0.5, 62, 0], [1.0, 0.0, 70, 0], [1.0, 1, 71, 0]]}
    b = {"id": 7, "label": "chorale",
         "notes": [[0, 1, 72, 0], [0, 1, 60, 1], [1, 2, 74, 0], [1, 1, 59, 1], [2, 1, 57, 1]]}
    path = jl(tmp_path / "s.jsonl", [a, "", b])
    got = read_scores_jsonl(path)
    assert [g[:2] for g in got] == [("a", "folk"), ("7", "chorale")]
    # folk: the double stop at 0.5 keeps its top note; the zero-length grace note is dropped
    assert got[0][2] == [Note(67, 0.0, 0.5, 0), Note(69, 0.5, 0.5, 0), Note(71, 1.0, 1.0, 0)]
    assert got[1][2] == [Note(72, 0.0, 1.0, 0), Note(74, 1.0, 2.0, 0)]
    allv = read_scores_jsonl(path, voices="all")[1][2]
    assert allv == [Note(72, 0.0, 1.0, 0), Note(60, 0.0, 1.0, 1), Note(74, 1.0, 2.0, 0),
                    Note(59, 1.0, 1.0, 1), Note(57, 2.0, 1.0, 1)]


GOOD = '{"id": "x%d", "label": "L", "notes": [[0, 1, 60, 0]]}'


@pytest.mark.parametrize("bad, pattern", [
    ('{"id": "y", "label": "L", "notes": [[0, 1, 60, 0]', r"invalid JSON"),
    ('[1, 2]', r"expected a JSON object"),
    ('{"label": "L", "notes": [[0, 1, 60, 0]]}', r'"id"'),
    ('{"id": "y", "notes": [[0, 1, 60, 0]]}', r'"label"'),
    ('{"id": "y", "label": "L", "notes": []}', r'"notes"'),
    ('{"id": "y", "label": "L", "notes": [[0, 1, 60]]}', r"notes\[0\] must be"),
    ('{"id": "y", "label": "L", "notes": [[0, 1, 60, 0], [1, -1, 60, 0]]}', r"notes\[1\] duration"),
    ('{"id": "y", "label": "L", "notes": [[0, 1, 128, 0]]}', r"notes\[0\] pitch"),
    ('{"id": "y", "label": "L", "notes": [[0, 1, 60.5, 0]]}', r"notes\[0\] pitch"),
    ('{"id": "y", "label": "L", "notes": [[NaN, 1, 60, 0]]}', r"notes\[0\] onset"),
    ('{"id": "y", "label": "L", "notes": [[0, 1, 60, "s"]]}', r"notes\[0\] part"),
    ('{"id": "y", "label": "L", "notes": [[0, 0, 60, 0]]}', r"no note with a positive duration"),
    ('{"id": "x1", "label": "L", "notes": [[0, 1, 60, 0]]}', r"duplicate id 'x1' \(first on line 2\)"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, bad, pattern):
    # line 1 and 2 are fine, line 3 is blank, the bad one is line 4
    path = jl(tmp_path / "bad.jsonl", [GOOD % 0, GOOD % 1, "", bad])
    with pytest.raises(SeqtoolError) as err:
        read_scores_jsonl(path, strict=True)
    msg = str(err.value)
    assert msg.startswith(f"{path}:4: ") and "\n" not in msg
    assert re.search(pattern, msg), msg
    # without strict the record is skipped, and one warning carries the same message
    warnings = []
    got = read_scores_jsonl(path, warn=warnings.append)
    assert [sid for sid, _, _ in got] == ["x0", "x1"]
    assert len(warnings) == 1 and msg in warnings[0] and "skipped 1 malformed record" in warnings[0]


def test_jsonl_with_only_malformed_records_names_the_first(tmp_path):
    path = jl(tmp_path / "bad.jsonl", ["{oops", "[1]"])
    with pytest.raises(SeqtoolError, match=r"no scores \(2 malformed; the first: .*bad.jsonl:1: invalid JSON"):
        read_scores_jsonl(path)


def test_jsonl_empty_missing_and_optional_label(tmp_path):
    with pytest.raises(SeqtoolError, match="empty"):
        read_scores_jsonl(jl(tmp_path / "e.jsonl", ["", "  "]))
    with pytest.raises(SeqtoolError, match="nope.jsonl"):
        read_scores_jsonl(tmp_path / "nope.jsonl")
    path = jl(tmp_path / "u.jsonl", ['{"id": "u", "notes": [[0, 1, 60, 0]]}'])
    assert read_scores_jsonl(path, require_label=False) == [("u", None, [Note(60, 0.0, 1.0, 0)])]


# -------------------------------------------------------------------------------- features


def test_features_by_hand():
    notes = [  # given out of order on purpose
        Note(67, 3.5, 1.0, 0), Note(48, 0.0, 4.0, 1), Note(60, 0.0, 1.0, 0),
        Note(62, 1.0, 1.0, 0), Note(64, 2.0, 0.5, 0), Note(100, 4.5, 0.25, 0),
    ]
    # time order: 60, 48 (same onset, lower), 62, 64, 67, 100
    # durations 1 4 1 .5 1 .25 -> median 1; voice-0 onset gaps 1 1 1.5 1 -> median 1
    L = math.log2
    expected = np.array([
        # pitch      interval        log_dur   log_ioi   rest  is_melody
        [0.0,        0.0,            0.0,      0.0,      0,    1],
        [-1.0,       0.0,            2.0,      0.0,      0,    0],   # bass: first of its voice
        [2 / 12,     2 / 12,         0.0,      0.0,      0,    1],
        [4 / 12,     2 / 12,         -1.0,     0.0,      0,    1],
        [7 / 12,     3 / 12,         0.0,      L(1.5),   1,    1],   # silent 2.5 -> 3.5
        [40 / 12,    2.0,            -2.0,     0.0,      0,    1],   # +33 semitones clipped to 2 octaves
    ], np.float32)
    got = score_features(notes)
    assert got.dtype == np.float32 and got.shape == (6, N_FEATURES) == (6, len(FEATURE_NAMES))
    np.testing.assert_allclose(got[:, :6], expected, atol=1e-6)


def test_meter_phase_and_scale_degree_by_hand():
    # melody in G ending on G: onsets 0 1 2 2.5 (median gap 1)
    notes = [Note(60, 0.0, 1.0, 0), Note(62, 1.0, 1.0, 0), Note(64, 2.0, 0.5, 0), Note(67, 2.5, 1.5, 0)]
    f = score_features(notes)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    s = math.sqrt(0.5)
    # phase over 2 gaps: 0, 1/2, 1, 5/4 cycles; over 4 gaps: 0, 1/4, 1/2, 5/8 cycles
    np.testing.assert_allclose(f[:, col["phase2_cos"]], [1, -1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(f[:, col["phase2_sin"]], [0, 0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(f[:, col["phase4_cos"]], [1, 0, -1, -s], atol=1e-6)
    np.testing.assert_allclose(f[:, col["phase4_sin"]], [0, 1, 0, -s], atol=1e-6)
    degrees = f[:, col["degree_0"]:col["degree_11"] + 1]
    assert (degrees.sum(axis=1) == 1).all()
    # C D E G over the final G: 5, 7, 9, 0 semitones above the tonal centre
    assert degrees.argmax(axis=1).tolist() == [5, 7, 9, 0]
    # with a bass at the last onset the final is the lowest note there (C), not the melody's G
    f2 = score_features(notes + [Note(48, 2.5, 1.5, 1)])
    d2 = f2[:, col["degree_0"]:col["degree_11"] + 1].argmax(axis=1)
    assert sorted(d2.tolist()) == sorted([0, 2, 4, 7, 0])


def test_features_ignore_tempo_and_units_but_not_transposition():
    base = [Note(60, 0.0, 1.0, 0), Note(64, 1.0, 0.5, 0), Note(62, 1.5, 0.5, 0), Note(67, 3.0, 2.0, 0)]
    halves = [Note(n.pitch, n.onset * 2, n.duration * 2, n.voice) for n in base]   # notated in half notes
    fast = [Note(n.pitch, n.onset * 0.37, n.duration * 0.37, n.voice) for n in base]  # seconds, fast tempo
    f = score_features(base)
    np.testing.assert_allclose(score_features(halves), f, atol=1e-6)
    np.testing.assert_allclose(score_features(fast), f, atol=1e-6)
    up = score_features([n._replace(pitch=n.pitch + 5) for n in base])
    np.testing.assert_allclose(up[:, 1:], f[:, 1:], atol=1e-6)
    np.testing.assert_allclose(up[:, 0], f[:, 0] + 5 / 12, atol=1e-6)


def test_rest_flag_ignores_articulation_gaps():
    # performed (detached) quarters: 10% gaps are articulation; the half-beat gap is a rest
    notes = [Note(60 + i, float(i), 0.9, 0) for i in range(4)] + [Note(70, 4.4, 0.9, 0)]
    rest = score_features(notes)[:, FEATURE_NAMES.index("rest_before")]
    np.testing.assert_array_equal(rest, [0, 0, 0, 0, 1])


def test_features_extremes_are_finite_and_clipped():
    notes = [Note(60, 0.0, 1e-9, 0), Note(60, 0.0, 1.0, 1), Note(61, 1e-9, 1000.0, 0), Note(62, 5000.0, 1.0, 0)]
    f = score_features(notes)
    assert np.isfinite(f).all()
    assert np.abs(f[:, 2:4]).max() <= 4.0
    assert score_features([]).shape == (0, N_FEATURES)


def test_top_voice_keeps_monophonic_line_unchanged():
    line = [Note(60, 0.0, 1.0, 0), Note(62, 1.0, 0.5, 0), Note(59, 2.0, 1.0, 0)]
    assert top_voice(list(reversed(line))) == line


# ------------------------------------------------------------------------------ crops/chunks


def test_chunks_cover_the_piece_and_end_aligned():
    assert chunk_starts(10, 4, 3) == [0, 3, 6]
    assert chunk_starts(11, 4, 3) == [0, 3, 6, 7]
    assert chunk_starts(3, 4, 2) == [0]
    for T in range(1, 40):
        f = np.arange(T, dtype=np.float32)[:, None]
        cs = chunks(f, 5, 2)
        assert all(len(c) == min(5, T) for c in cs)
        covered = np.concatenate([c[:, 0] for c in cs])
        assert set(covered.astype(int)) == set(range(T))
        assert cs[-1][-1, 0] == T - 1
    with pytest.raises(ValueError):
        chunks(np.zeros((10, 2)), 4, 5)
    with pytest.raises(ValueError):
        chunks(np.zeros((10, 2)), 0, 1)


def test_random_crop():
    f = np.arange(50, dtype=np.float32).reshape(25, 2)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        c = random_crop(f, 8, rng)
        s = int(c[0, 0]) // 2
        np.testing.assert_array_equal(c, f[s:s + 8])
        starts.add(s)
    assert starts == set(range(18))  # every start 0..T-L is reachable
    assert random_crop(f, 30, rng) is f
    a = random_crop(f, 5, np.random.default_rng(3))
    b = random_crop(f, 5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------- real data


def _midi_name(sid):
    return re.sub(r"[^A-Za-z0-9_-]+", "_", sid) + ".mid"


@pytest.mark.skipif(not (DATA / "scores.jsonl").exists(), reason="music21-styles data not present")
def test_music21_styles_jsonl_and_midi_agree():
    scores = read_scores_jsonl(DATA / "scores.jsonl")
    counts = Counter(label for _, label, _ in scores)
    assert counts == {"baroque_chorale": 170, "renaissance_polyphony": 170, "folk": 170}  # SOURCE.md
    raw_parts = {}
    for line in (DATA / "scores.jsonl").read_text().splitlines():
        obj = json.loads(line)
        raw_parts[obj["id"]] = obj["n_parts"]
    tol = 2 / 480 + 1e-4  # the MIDI files are quantized to 480 ticks per quarter, the JSONL to 4 decimals
    for i, (sid, label, notes) in enumerate(scores):
        f = score_features(notes)
        assert f.shape == (len(notes), N_FEATURES) and np.isfinite(f).all()
        assert (f[:, FEATURE_NAMES.index("is_melody")] == 1).all()
        onsets = np.array([n.onset for n in notes])
        ends = onsets + np.array([n.duration for n in notes])
        assert (np.diff(onsets) > 0).all() and (ends[:-1] <= onsets[1:] + 1e-9).all()  # one line
        path = DATA / "midi" / label / _midi_name(sid)
        mnotes = read_midi(path)
        assert [n.pitch for n in mnotes] == [n.pitch for n in notes], sid
        np.testing.assert_allclose([n.onset for n in mnotes], onsets, atol=tol)
        np.testing.assert_allclose([n.duration for n in mnotes], ends - onsets, atol=tol)
        if i % 17 == 0:  # "all" on a sample: voices are the parts
            allv = read_midi(path, voices="all")
            assert len({n.voice for n in allv}) == raw_parts[sid]
    n_files = sum(1 for _ in (DATA / "midi").glob("*/*.mid"))
    assert n_files == len(scores)
