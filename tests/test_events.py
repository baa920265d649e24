import io
from pathlib import Path

import numpy as np
import pytest

from seqtool.data.events import (Event, events_to_roll, group_by_file, parse_events, read_events,
                                 roll_to_events, write_events_file, write_events_tsv)
from seqtool.errors import SeqtoolError

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dcase2016-task2-office"
LABELS = ["cough", "door", "speech"]


def test_four_columns_with_header_tabs(tmp_path):
    p = tmp_path / "gt.tsv"
    p.write_text("filename\tonset\toffset\tevent_label\n"
                 "my file.wav\t0.5\t1.25\tcough\n"
                 "\n"
                 "b.wav\t2\t3\tspeech\n")
    assert read_events(p) == [Event("my file.wav", 0.5, 1.25, "cough"), Event("b.wav", 2.0, 3.0, "speech")]


def test_whitespace_without_header():
    ev = parse_events(["a.wav 0.0   1.0 door\n", "a.wav 1.5 1.5 cough"], "x.txt")
    assert ev == [Event("a.wav", 0.0, 1.0, "door"), Event("a.wav", 1.5, 1.5, "cough")]


def test_three_columns_take_the_given_or_derived_file_name(tmp_path):
    p = tmp_path / "dev_1_ebr_0_nec_1_poly_0.txt"
    p.write_text("0.50\t1.04\tclearthroat\n15.53\t16.47\tcough\n")
    assert read_events(p)[0] == Event("dev_1_ebr_0_nec_1_poly_0.wav", 0.5, 1.04, "clearthroat")
    assert read_events(p, filename="mix.wav")[1] == Event("mix.wav", 15.53, 16.47, "cough")
    with pytest.raises(SeqtoolError, match=r"<x>:1: .*file name"):
        parse_events(["0 1 cough"], "<x>")


def test_official_dev_annotations():
    folder = DATA / "annotations" / "dev"
    if not folder.is_dir():
        pytest.skip("dcase2016-task2-office data not present")
    files = sorted(folder.glob("*.txt"))
    assert len(files) == 18
    labels = set()
    for f in files:
        ev = read_events(f)
        assert ev and all(e.filename == f.stem + ".wav" and 0 <= e.onset <= e.offset <= 120 for e in ev)
        labels |= {e.label for e in ev}
    assert len(labels) == 11 and "keys" in labels


@pytest.mark.parametrize("lines,bad_line,message", [
    (["a.wav\t0\t1\tcough", "a.wav\t2\t1\tcough"], 2, "after offset"),
    (["a.wav\t-0.5\t1\tcough"], 1, "negative onset"),
    (["a.wav\t0\tsoon\tcough"], 1, "not a number"),
    (["a.wav\t0\tnan\tcough"], 1, "finite"),
    (["a.wav\t0\t1\tcough", "a.wav\t0\t1"], 2, "columns"),
    (["a.wav\t0\t1\tcough\textra"], 1, "columns"),
    (["filename\tonset\toffset\tevent_label", "", "a.wav\t0\t1\t"], 3, "empty event label"),
])
def test_errors_name_file_and_line(tmp_path, lines, bad_line, message):
    p = tmp_path / "bad.tsv"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(SeqtoolError, match=message) as err:
        read_events(p)
    assert str(err.value).startswith(f"{p}:{bad_line}:")
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(SeqtoolError, match="nowhere.tsv"):
        read_events("nowhere.tsv")


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ev = []
    for i in range(20):
        on = float(rng.uniform(0, 50))
        ev.append(Event(f"f{i % 3}.wav", on, on + float(rng.uniform(0, 3)), LABELS[i % 3]))
    buf = io.StringIO()
    write_events_tsv(ev, buf)
    back = parse_events(buf.getvalue().splitlines(), "buf")
    assert [(e.filename, e.label) for e in back] == [(e.filename, e.label) for e in ev]
    assert np.allclose([e.onset for e in back], [e.onset for e in ev], atol=1e-6)
    p = tmp_path / "out.tsv"
    write_events_file(ev, p, header=True)
    assert p.read_text().startswith("filename\tonset\toffset\tevent_label\n")
    assert len(read_events(p)) == 20
    assert [f.name for f in tmp_path.iterdir()] == ["out.tsv"]


def test_group_by_file_sorts():
    ev = [Event("b", 2, 3, "cough"), Event("a", 5, 6, "door"), Event("b", 0, 1, "door")]
    g = group_by_file(ev)
    assert list(g) == ["a", "b"] and [e.onset for e in g["b"]] == [0, 2]


def test_roll_marks_frames_by_time():
    hop = 0.02
    roll = events_to_roll([Event("f", 0.10, 0.20, "door"), Event("f", 0.505, 0.515, "speech")], LABELS, 40, hop)
    assert roll.dtype == np.float32 and roll.shape == (40, 3)
    # frame t stands for time t*hop: 0.10 <= t*0.02 < 0.20 -> frames 5..9
    assert np.flatnonzero(roll[:, 1]).tolist() == [5, 6, 7, 8, 9]
    # shorter than a hop and between frame times: still marks the nearest frame
    assert np.flatnonzero(roll[:, 2]).tolist() == [26]
    assert roll[:, 0].sum() == 0
    with pytest.raises(SeqtoolError, match="bird"):
        events_to_roll([Event("f", 0, 1, "bird")], LABELS, 10, hop)


def test_roll_events_round_trip():
    rng = np.random.default_rng(3)
    hop, n = 0.02, 500
    roll = np.zeros((n, 3), dtype=np.float32)
    for c in range(3):
        for _ in range(6):
            s = int(rng.integers(0, n - 10))
            roll[s:s + int(rng.integers(1, 40)), c] = 1
    roll[-3:, 0] = 1  # an event running to the end
    roll[:2, 1] = 1  # and one from the start
    ev = roll_to_events(roll, LABELS, hop, filename="x.wav")
    assert all(e.filename == "x.wav" for e in ev)
    assert np.array_equal(events_to_roll(ev, LABELS, n, hop), roll)
    # and events -> roll -> events is exact for events with boundaries half-way between frames
    again = roll_to_events(events_to_roll(ev, LABELS, n, hop), LABELS, hop, filename="x.wav")
    assert again == ev


def test_threshold_per_class_and_median_filter():
    probs = np.zeros((20, 3))
    probs[5:15, 0] = 0.6
    probs[5:15, 1] = 0.6
    probs[9, 0] = 0.1  # one-frame dropout inside the cough
    probs[2, 2] = 0.9  # one-frame blip
    ev = roll_to_events(probs, LABELS, 0.1, threshold=[0.5, 0.7, 0.5])
    assert {e.label for e in ev} == {"cough", "speech"}  # door stays below its own threshold
    assert len([e for e in ev if e.label == "cough"]) == 2
    smooth = roll_to_events(probs, LABELS, 0.1, threshold=0.5, median_frames=3)
    cough = [e for e in smooth if e.label == "cough"]
    assert len(cough) == 1 and cough[0].onset == pytest.approx(0.45) and cough[0].offset == pytest.approx(1.45)
    assert not [e for e in smooth if e.label == "speech"]  # the blip is gone
    with pytest.raises(SeqtoolError):
        roll_to_events(probs, LABELS, 0.1, threshold=[0.5, 0.5])
    with pytest.raises(SeqtoolError):
        roll_to_events(probs, LABELS, 0.1, median_frames=0)
