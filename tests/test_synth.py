from pathlib import Path

import numpy as np
import pytest

from seqtool.data.audio import read_audio
from seqtool.data.events import Event, read_events
from seqtool.errors import SeqtoolError
from seqtool.data.synth import (label_from_name, load_clip_library, noise, random_timeline, synth_scene,
                           synth_scenes_to_dir)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dcase2016-task2-office"
SR = 8000


def needs_data():
    if not (DATA / "clips").is_dir():
        pytest.skip("dcase2016-task2-office data not present")


def tone_library():
    t = np.arange(int(0.7 * SR)) / SR
    return {"beep": [np.sin(2 * np.pi * 1000 * t).astype(np.float32)],
            "hum": [np.sin(2 * np.pi * 200 * t[: SR // 4]).astype(np.float32)]}


def active_count(events, t):
    return sum(1 for e in events if e.onset <= t < e.offset)


def test_noise_colours():
    rng = np.random.default_rng(0)
    n = 2 ** 16
    for kind, slope in [("white", 0.0), ("pink", -3.0), ("brown", -6.0)]:
        x = noise(kind, n, rng, sr=SR)
        assert x.dtype == np.float32 and np.sqrt(np.mean(x.astype(float) ** 2)) == pytest.approx(1, rel=1e-4)
        p = np.abs(np.fft.rfft(x)) ** 2
        # power per bin in the octaves 1-2 kHz and 2-4 kHz (bins = Hz * n / SR)
        lo = p[int(1000 * n / SR):int(2000 * n / SR)].mean()
        hi = p[int(2000 * n / SR):int(4000 * n / SR)].mean()
        assert 10 * np.log10(hi / lo) == pytest.approx(slope, abs=0.5), kind
    with pytest.raises(SeqtoolError):
        noise("purple", 10, rng)


@pytest.mark.parametrize("poly", [1, 2, 3])
def test_random_timeline_respects_polyphony(poly):
    rng = np.random.default_rng(poly)
    labels = ["a", "b", "c", "d"]
    ev = random_timeline(labels, 30.0, 4, poly, rng, clip_lengths={lab: [0.5, 1.0, 2.0] for lab in labels})
    assert sorted(e.label for e in ev) == sorted(labels * 4)
    assert all(0 <= e.onset < e.offset <= 30.0 for e in ev)
    assert all(round(e.duration, 3) in (0.5, 1.0, 2.0) for e in ev)
    # the active count only changes at onsets, so checking there finds the maximum
    worst = max(active_count(ev, e.onset) for e in ev)
    assert worst <= poly
    for lab in labels:  # events of one class never touch
        same = sorted((e for e in ev if e.label == lab), key=lambda e: e.onset)
        assert all(b.onset > a.offset for a, b in zip(same, same[1:]))


def test_random_timeline_impossible():
    with pytest.raises(SeqtoolError, match="cannot fit"):
        random_timeline(["a", "b"], 3.0, 3, 1, np.random.default_rng(0), clip_lengths={"a": [1.0], "b": [1.0]},
                        max_tries=50)


@pytest.mark.parametrize("ebr", [-6.0, 0.0, 6.0])
def test_events_land_on_timeline_at_the_right_ebr(ebr):
    rng = np.random.default_rng(7)
    bg = noise("pink", 4 * SR, np.random.default_rng(99), sr=SR)
    timeline = [Event("", 0.5, 1.0, "beep"), Event("", 1.5, 2.5, "hum"), Event("", 3.0, 3.4, "beep")]
    x, ev = synth_scene(timeline, tone_library(), bg, SR, ebr, rng, duration=4.0, filename="s.wav")
    assert x.shape == (4 * SR,) and x.dtype == np.float32
    assert ev == [Event("s.wav", e.onset, e.offset, e.label) for e in timeline]
    inside = np.zeros(len(x), dtype=bool)
    for e in timeline:
        inside[int(e.onset * SR):int(e.offset * SR)] = True
    # the background is the input noise times an unknown gain: fit it where no event plays
    gain = np.dot(x[~inside], bg[~inside]) / np.dot(bg[~inside], bg[~inside])
    assert np.max(np.abs(x[~inside] - gain * bg[~inside])) < 1e-4
    events_only = x - gain * bg
    for e in timeline:
        a, b = int(e.onset * SR), int(e.offset * SR)
        part = events_only[a:b]
        measured = 20 * np.log10(np.sqrt(np.mean(part ** 2)) / np.sqrt(np.mean((gain * bg[a:b]) ** 2)))
        assert measured == pytest.approx(ebr, abs=0.5)
        # the right clip: its dominant frequency
        spec = np.abs(np.fft.rfft(part))
        assert np.argmax(spec) * SR / len(part) == pytest.approx(1000 if e.label == "beep" else 200, abs=5)


def test_ebr_range_and_clipping_guard():
    rng = np.random.default_rng(1)
    timeline = [Event("", 0.1, 0.6, "beep")]
    x, _ = synth_scene(timeline, tone_library(), "white", SR, (30.0, 40.0), rng, duration=1.0)
    assert np.max(np.abs(x)) <= 0.99 + 1e-6  # +30 dB over -30 dBFS would clip without the guard
    with pytest.raises(SeqtoolError, match="zzz"):
        synth_scene([Event("", 0, 1, "zzz")], tone_library(), "white", SR, 0, rng)


def test_label_from_name():
    assert label_from_name("keysDrop001.wav") == "keys"
    assert label_from_name("clearthroat085.wav") == "clearthroat"
    assert label_from_name("dog_12.flac") == "dog"


def test_clip_library_from_own_folder(tmp_path):
    import soundfile as sf

    for name in ["bark01.wav", "bark02.wav", "meow7.wav"]:
        sf.write(tmp_path / name, np.full(4410, 0.1, dtype=np.float32), 44100)
    lib = load_clip_library(tmp_path, sr=SR)
    assert sorted(lib) == ["bark", "meow"] and len(lib["bark"]) == 2
    assert len(lib["meow"][0]) == 800  # 0.1 s at 8 kHz
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeqtoolError, match="no audio clips"):
        load_clip_library(tmp_path / "empty", sr=SR)


def test_real_clip_library_and_official_timeline():
    needs_data()
    lib = load_clip_library(DATA, sr=16000)
    assert len(lib) == 11 and all(len(v) == 15 for v in lib.values()) and "keys" in lib
    timeline = read_events(DATA / "annotations" / "dev" / "dev_1_ebr_6_nec_3_poly_1.txt")
    x, ev = synth_scene(timeline, lib, "brown", 16000, 20.0, np.random.default_rng(0), duration=120.0)
    assert len(x) == 120 * 16000 and len(ev) == len(timeline)
    # at +20 dB every annotated event stands well above the surrounding background
    inside = np.zeros(len(x), dtype=bool)
    for e in timeline:
        inside[int(e.onset * 16000):int(e.offset * 16000)] = True
    quiet = np.sqrt(np.mean(x[~inside].astype(float) ** 2))
    for e in timeline:
        seg = x[int(e.onset * 16000):int(e.offset * 16000)].astype(float)
        assert 20 * np.log10(np.sqrt(np.mean(seg ** 2)) / quiet) > 10, e


def test_synth_scenes_to_dir(tmp_path):
    import soundfile as sf

    clips = tmp_path / "clips"
    clips.mkdir()
    t = np.arange(SR // 2) / SR
    for name, f in [("low", 300), ("mid", 500), ("high", 700)]:
        sf.write(clips / f"{name}01.wav", 0.5 * np.sin(2 * np.pi * f * t), SR)
    out = tmp_path / "out"
    wavs, gt = synth_scenes_to_dir(out, clips, 3, duration=6.0, ebr_db=0.0, events_per_class=2, max_polyphony=2,
                                   seed=1, sr=SR)
    assert [p.name for p in wavs] == ["scene_000.wav", "scene_001.wav", "scene_002.wav"]
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in wavs] + ["ground_truth.tsv"])
    ev = read_events(gt)
    assert len(ev) == 3 * 3 * 2
    for w in wavs:
        x, sr = read_audio(w)
        assert sr == SR and len(x) == 6 * SR
        mine = [e for e in ev if e.filename == w.name]
        assert max(active_count(mine, e.onset) for e in mine) <= 2
    # same seed, same scenes
    wavs2, _ = synth_scenes_to_dir(tmp_path / "again", clips, 3, duration=6.0, events_per_class=2, seed=1, sr=SR)
    assert wavs2[2].read_bytes() == wavs[2].read_bytes()
    # an official-style timeline file drives the scene instead of a random one
    tl = tmp_path / "timeline.txt"
    tl.write_text("0.5\t1.0\tmid\n2.0\t2.5\thigh\n")
    _, gt3 = synth_scenes_to_dir(tmp_path / "tl", clips, 1, duration=3.0, timelines=[tl], sr=SR)
    assert [(e.onset, e.offset, e.label) for e in read_events(gt3)] == [(0.5, 1.0, "mid"), (2.0, 2.5, "high")]
