"""Class folders, kind detection, stratified splits and tolerant loading."""

from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from seqtool.data.dataset_folders import (
    AUDIO_EXTS,
    MIDI_EXTS,
    detect_kind,
    load_items,
    scan_class_folders,
    stratified_split,
)
from seqtool.data.scores import Note, read_midi
from seqtool.errors import SeqtoolError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "music21-styles"


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tiny_midi(path, pitch=60):
    path.parent.mkdir(parents=True, exist_ok=True)
    mid = mido.MidiFile(ticks_per_beat=96)
    mid.tracks.append(mido.MidiTrack([mido.Message("note_on", note=pitch, velocity=80, time=0),
                                      mido.Message("note_off", note=pitch, velocity=0, time=96)]))
    mid.save(str(path))
    return path


def test_scan_class_folders(tmp_path):
    touch(tmp_path / "b" / "z.mid")
    touch(tmp_path / "a" / "x.mid")
    touch(tmp_path / "a" / "deeper" / "y.MIDI")      # nested files belong to the top folder; case-blind
    touch(tmp_path / "a" / ".hidden.mid")            # hidden files are not data
    touch(tmp_path / ".git" / "k.mid")               # nor hidden folders
    touch(tmp_path / "c" / "readme.txt")             # no matching file: not a label
    touch(tmp_path / "loose.mid")                    # no class folder: ignored
    items, labels = scan_class_folders(tmp_path, MIDI_EXTS)
    assert labels == ["a", "b"]
    assert [(p.relative_to(tmp_path).as_posix(), lab) for p, lab in items] == [
        ("a/x.mid", "a"), ("a/deeper/y.MIDI", "a"), ("b/z.mid", "b")]
    assert scan_class_folders(tmp_path, (".txt",)) == ([(tmp_path / "c" / "readme.txt", "c")], ["c"])


def test_scan_class_folders_errors(tmp_path):
    with pytest.raises(SeqtoolError, match="no class subfolders"):
        scan_class_folders(tmp_path, AUDIO_EXTS)
    with pytest.raises(SeqtoolError, match="nothere"):
        scan_class_folders(tmp_path / "nothere", AUDIO_EXTS)


def test_detect_kind(tmp_path):
    assert detect_kind(touch(tmp_path / "s.jsonl")) == "jsonl"
    assert detect_kind(touch(tmp_path / "s.MID")) == "midi"
    assert detect_kind(touch(tmp_path / "s.flac")) == "audio"
    with pytest.raises(SeqtoolError, match=r"s\.txt: unknown input kind"):
        detect_kind(touch(tmp_path / "s.txt"))
    touch(tmp_path / "m" / "x" / "a.midi")
    assert detect_kind(tmp_path / "m") == "midi"
    touch(tmp_path / "w" / "x" / "a.wav")
    touch(tmp_path / "w" / "y" / "b.ogg")
    assert detect_kind(tmp_path / "w") == "audio"
    touch(tmp_path / "w" / "y" / "c.mid")
    with pytest.raises(SeqtoolError, match="both MIDI and audio"):
        detect_kind(tmp_path / "w")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeqtoolError, match="no MIDI"):
        detect_kind(tmp_path / "empty")
    with pytest.raises(SeqtoolError, match="no such file"):
        detect_kind(tmp_path / "gone")


def test_stratified_split_per_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] + ["d"] * 2
    train, val = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert train.dtype == val.dtype == np.int64
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert not set(train.tolist()) & set(val.tolist())
    assert Counter(labels[i] for i in val) == {"a": 2, "b": 1, "d": 1}  # c (one item) stays in training
    assert Counter(labels[i] for i in train) == {"a": 8, "b": 4, "c": 1, "d": 1}
    again = stratified_split(labels, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(val, again[1])
    picks = {tuple(stratified_split(labels, 0.2, np.random.default_rng(s))[1]) for s in range(10)}
    assert len(picks) > 1  # the choice within a class is random
    tr, va = stratified_split(labels, 0.0, 1)
    assert va.size == 0 and tr.size == len(labels)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            stratified_split(labels, bad, 0)


def test_load_items_skips_and_strict(tmp_path):
    good1 = tiny_midi(tmp_path / "a" / "1.mid", 60)
    bad = touch(tmp_path / "a" / "2.mid", b"garbage")
    good2 = tiny_midi(tmp_path / "b" / "3.mid", 64)
    items = [(good1, "a"), (bad, "a"), (good2, "b")]
    ok, failed = load_items(items, read_midi, strict=False)
    assert [(p, lab, notes) for p, lab, notes in ok] == [
        (good1, "a", [Note(60, 0.0, 1.0, 0)]), (good2, "b", [Note(64, 0.0, 1.0, 0)])]
    assert len(failed) == 1 and failed[0][0] == bad and str(bad) in failed[0][1]
    with pytest.raises(SeqtoolError, match=str(bad)):
        load_items(items, read_midi, strict=True)


def test_load_items_decoder_errors_and_bugs(tmp_path):
    def loader(path):
        if path.name == "v":
            raise ValueError("bad header")          # what a third-party decoder might raise
        if path.name == "bug":
            raise TypeError("programming error")    # a bug must not be hidden as a bad file
        return path.name

    p = tmp_path
    ok, failed = load_items([(p / "x", 0), (p / "v", 1)], loader, strict=False)
    assert ok == [(p / "x", 0, "x")] and failed == [(p / "v", f"{p / 'v'}: bad header")]
    with pytest.raises(SeqtoolError) as err:
        load_items([(p / "v", 1)], loader, strict=True)
    assert str(err.value) == f"{p / 'v'}: bad header"
    with pytest.raises(TypeError):
        load_items([(p / "bug", 1)], loader, strict=False)


@pytest.mark.skipif(not (DATA / "midi").is_dir(), reason="music21-styles data not present")
def test_music21_styles_folders():
    assert detect_kind(DATA / "midi") == "midi"
    assert detect_kind(DATA / "audio") == "audio"
    assert detect_kind(DATA / "scores.jsonl") == "jsonl"
    labels_expected = ["baroque_chorale", "folk", "renaissance_polyphony"]
    for sub, exts in (("midi", MIDI_EXTS), ("audio", AUDIO_EXTS)):
        items, labels = scan_class_folders(DATA / sub, exts)
        assert labels == labels_expected
        assert Counter(lab for _, lab in items) == {lab: 170 for lab in labels_expected}
    items, _ = scan_class_folders(DATA / "midi", MIDI_EXTS)
    train, val = stratified_split([lab for _, lab in items], 0.2, np.random.default_rng(1))
    assert Counter(items[i][1] for i in val) == {lab: 34 for lab in labels_expected}
