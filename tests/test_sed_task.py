"""seqtool train sed / predict / eval and synth-scenes, on scenes mixed from synthetic tone clips.

Three classes a small model tells apart within seconds of training: a 1 kHz beep, a 200 Hz
buzz (harmonic-rich) and a 4-6 kHz hiss. Scenes are 8 s long so every run stays short.
"""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.data.audio import FeatureConfig, write_wav
from seqtool.cli.main import cli
from seqtool.data.events import Event, parse_events, read_events
from seqtool.errors import UsageError
from seqtool.metrics.sed import event_based, segment_based
from tones import LABELS, SR, tone_clip

TINY = ["--hidden", 16, "--layers", 2, "--seq-len", 64, "--batch", 8, "--seed", 3, "-q"]


def _run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for label in LABELS:
        for k, seconds in enumerate((0.4, 0.7, 1.0)):
            write_wav(d / f"{label}{k:03d}.wav", tone_clip(label, seconds, rng), SR)
    return d


def _synth(clips, out, n, seed, *extra):
    r = _run("synth-scenes", clips, "-o", out, "-n", n, "--duration", 8, "--events-per-class", 2,
             "--polyphony", 2, "--ebr", 6, "--seed", seed, "-q", *extra)
    assert r.exit_code == 0, r.output
    return out / "ground_truth.tsv"


@pytest.fixture(scope="module")
def scenes(clips, tmp_path_factory):
    base = tmp_path_factory.mktemp("scenes")
    return (base / "train", _synth(clips, base / "train", 12, 1)), (base / "test", _synth(clips, base / "test", 3, 2))


@pytest.fixture(scope="module")
def model(scenes, tmp_path_factory):
    (train_dir, train_tsv), _ = scenes
    path = tmp_path_factory.mktemp("model") / "sed.model"
    r = _run("train", "sed", train_dir, train_tsv, "-o", path, "--steps", 80, "--lr", 0.01,
             "--val-frac", 0.2, "--dropout", 0, *TINY)
    assert r.exit_code == 0, r.output
    return path


# ----------------------------------------------------------------------------- synth-scenes


def test_synth_scenes_random_timelines(clips, tmp_path):
    gt = _synth(clips, tmp_path / "s", 2, 5, "--polyphony", 1)
    wavs = sorted((tmp_path / "s").glob("*.wav"))
    assert [w.name for w in wavs] == ["scene_000.wav", "scene_001.wav"]
    assert gt.read_text().splitlines()[0] == "filename\tonset\toffset\tevent_label"
    events = read_events(gt)
    for w in wavs:
        mine = sorted((e for e in events if e.filename == w.name), key=lambda e: e.onset)
        assert sorted(e.label for e in mine) == sorted(LABELS * 2)  # --events-per-class 2
        assert all(a.offset <= b.onset for a, b in zip(mine, mine[1:]))  # polyphony 1: no overlap
        assert all(0 <= e.onset < e.offset <= 8.0 for e in mine)
    # the same seed writes the same scenes
    gt2 = _synth(clips, tmp_path / "again", 2, 5, "--polyphony", 1)
    assert gt2.read_text() == gt.read_text()
    assert (tmp_path / "again" / "scene_000.wav").read_bytes() == wavs[0].read_bytes()


def test_synth_scenes_follow_a_timeline(clips, tmp_path):
    tl = tmp_path / "timeline.txt"
    tl.write_text("0.50\t1.20\tbeep\n1.00\t2.00\tbuzz\n5.00\t5.40\thiss\n")
    r = _run("synth-scenes", clips, "-o", tmp_path / "t", "--timeline", tl, "--duration", 6, "--seed", 1,
             "--ebr", "6", "--background", "white", "-q")
    assert r.exit_code == 0, r.output
    got = read_events(tmp_path / "t" / "ground_truth.tsv")
    assert [(e.onset, e.offset, e.label) for e in got] == [(0.5, 1.2, "beep"), (1.0, 2.0, "buzz"), (5.0, 5.4, "hiss")]
    from seqtool.data.audio import read_audio

    x, sr = read_audio(tmp_path / "t" / "scene_000.wav")
    assert sr == SR and len(x) == 6 * SR
    # at +6 dB the event alone is twice the background's RMS: sqrt(1 + 4) times louder with it
    quiet = np.sqrt(np.mean(x[int(2.5 * SR):int(4.5 * SR)] ** 2))
    assert np.sqrt(np.mean(x[int(5.05 * SR):int(5.35 * SR)] ** 2)) / quiet == pytest.approx(np.sqrt(5), rel=0.15)


def test_ebr_option_takes_a_number_or_a_range():
    from seqtool.cli.synth import EBR

    assert EBR().convert("-6", None, None) == -6.0
    assert EBR().convert("-6:6", None, None) == (-6.0, 6.0)
    import click

    for bad in ("6:-6", "loud", "1:2:3"):
        with pytest.raises(click.BadParameter):
            EBR().convert(bad, None, None)


def test_synth_scenes_errors(clips, tmp_path):
    r = _run("synth-scenes", clips, "-o", tmp_path / "x", "--ebr", "loud")
    assert r.exit_code == 2 and "--ebr" in r.stderr
    r = _run("synth-scenes", tmp_path / "nowhere", "-o", tmp_path / "x")
    assert r.exit_code == 1 and "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "tl.txt"
    bad.write_text("0.5\t1.0\tbeep\n2.0\t1.5\tbuzz\n")
    r = _run("synth-scenes", clips, "-o", tmp_path / "x", "--timeline", bad)
    assert r.exit_code == 1 and f"{bad}:2" in r.stderr and "after offset" in r.stderr
    bad.write_text("0.5\t1.0\tmeow\n")
    r = _run("synth-scenes", clips, "-o", tmp_path / "x", "--timeline", bad)
    assert r.exit_code == 1 and "meow" in r.stderr
    r = _run("synth-scenes", clips, "-o", tmp_path / "x", "--background", "nosuchfile.wav")
    assert r.exit_code == 2 and "nosuchfile.wav" in r.stderr


# ----------------------------------------------------------------------------- library pieces


def test_window_starts_cover_the_recording():
    from seqtool.tasks.sed import window_starts

    assert window_starts(50, 64) == [0]
    for n in (64, 65, 100, 257, 1000):
        starts = window_starts(n, 64)
        assert starts[0] == 0 and starts[-1] == n - 64
        assert all(0 < b - a <= 32 for a, b in zip(starts, starts[1:]))


def test_frame_logits_blends_windows_like_a_naive_loop():
    from seqtool.tasks.sed import SEDModel, frame_logits

    rng = np.random.default_rng(0)
    model = SEDModel(5, 3, hidden=6, layers=2, rng=rng).eval()
    feats = rng.standard_normal((150, 5)).astype(np.float32)
    got = frame_logits(model, feats, 40)
    # naive: every window alone, each frame a triangular-weighted mean over the windows holding it
    num, den = np.zeros((150, 3)), np.zeros(150)
    for s in list(range(0, 111, 20)) + [110]:
        y = model(feats[s:s + 40][:, None, :]).data[:, 0]
        w = np.minimum(np.arange(1, 41), np.arange(40, 0, -1))
        num[s:s + 40] += y * w[:, None]
        den[s:s + 40] += w
    np.testing.assert_allclose(got, num / den[:, None], rtol=1e-4, atol=1e-5)
    short = feats[:30]
    np.testing.assert_allclose(frame_logits(model, short, 40), model(short[:, None, :]).data[:, 0], atol=1e-6)


def test_parse_thresholds():
    from seqtool.tasks.sed import parse_thresholds

    np.testing.assert_array_equal(parse_thresholds((), LABELS, 0.5), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(parse_thresholds(("0.3", "hiss=0.7"), LABELS, 0.5), [0.3, 0.3, 0.7])
    np.testing.assert_array_equal(parse_thresholds(("hiss=0.7", "0.3"), LABELS, 0.5), [0.3, 0.3, 0.3])
    with pytest.raises(UsageError, match="unknown label 'meow'"):
        parse_thresholds(("meow=0.2",), LABELS, 0.5)
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        parse_thresholds(("1.5",), LABELS, 0.5)
    with pytest.raises(UsageError, match="LABEL=P"):
        parse_thresholds(("beep=high",), LABELS, 0.5)


def test_detect_median_filter_and_clipping():
    from seqtool.tasks.sed import detect, median_frames

    assert median_frames(100, 0.02) == 5 and median_frames(80, 0.02) == 5 and median_frames(0, 0.02) == 1
    probs = np.zeros((50, 2))
    probs[10:30, 0] = 0.9
    probs[20, 0] = 0.1  # a one-frame gap the median filter closes
    probs[40, 1] = 0.9  # a one-frame blip it removes
    probs[45:, 1] = 0.8  # runs to the end: the offset is clipped to the duration
    ev = detect(probs, ["a", "b"], 0.02, 0.99, 0.5, 60, "f.wav")
    assert ev == [Event("f.wav", 0.19, 0.59, "a"), Event("f.wav", 0.89, 0.99, "b")]
    raw = detect(probs, ["a", "b"], 0.02, 0.99, [0.5, 0.95], 0, "f.wav")
    assert [(e.onset, e.offset) for e in raw] == [(0.19, 0.39), (0.41, 0.59)]


# ----------------------------------------------------------------------------- train / predict / eval


def test_model_file_holds_features_labels_and_normaliser(model):
    from seqtool.io.modelfile import read_meta
    from seqtool.tasks.sed import load_sed

    meta = read_meta(model)
    assert meta["task"] == "sed" and meta["labels"] == LABELS
    assert meta["config"] == {"cell": "lstm", "hidden": 16, "layers": 2, "bidirectional": True,
                              "dropout": 0.0, "window": 64}
    assert FeatureConfig.from_dict(meta["features"]) == FeatureConfig()
    det = load_sed(model)
    assert len(det.normalizer.mean) == 64 and np.all(det.normalizer.std > 0)
    assert meta["history"]["steps"] == 80 and meta["data"]["val_recordings"] == 2
    info = _run("info", model)
    assert info.exit_code == 0 and "sed" in info.output


def test_trained_detector_finds_the_tones(model, scenes):
    """Held-out scenes: the detector must beat what it would score by chance by a wide margin."""
    _, (test_dir, test_tsv) = scenes
    r = _run("eval", model, test_dir, test_tsv, "--json", "-q")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["files"] == 3
    assert rec["segment_based"]["f1"] > 0.6 and rec["segment_based"]["error_rate"] < 0.7
    assert set(rec["class_wise"]) == set(LABELS)
    text = _run("eval", model, test_dir, test_tsv, "-q")
    assert text.exit_code == 0 and text.stdout.startswith("segment-based (1 s segments)")
    assert f"{100 * rec['segment_based']['f1']:6.2f}%" in text.stdout


def test_predict_then_score_the_table_equals_eval_with_the_model(model, scenes, tmp_path):
    _, (test_dir, test_tsv) = scenes
    wavs = sorted(test_dir.glob("*.wav"))
    r = _run("predict", model, *wavs, "--median-ms", 60, "--threshold", 0.4)
    assert r.exit_code == 0, r.output
    pred = parse_events(r.stdout.splitlines(), "stdout")
    assert pred and {e.filename for e in pred} <= {str(w) for w in wavs}
    assert all(0 <= e.onset < e.offset <= 8.0 for e in pred)
    (tmp_path / "pred.tsv").write_text(r.stdout)
    table = _run("eval", tmp_path / "pred.tsv", test_tsv, "--json")
    assert table.exit_code == 0, table.output
    with_model = _run("eval", model, *wavs, test_tsv, "--median-ms", 60, "--threshold", 0.4, "--json", "-q")
    assert with_model.exit_code == 0, with_model.output
    a, b = json.loads(table.stdout), json.loads(with_model.stdout)
    # the table lasts to its last event, the audio to its end: event scores agree exactly
    assert a["event_based"] == b["event_based"]
    ref = read_events(test_tsv)
    est = [Event(Path(e.filename).name, e.onset, e.offset, e.label) for e in pred]
    direct = segment_based(ref, est, LABELS, 1.0)
    assert a["segment_based"]["f1"] == pytest.approx(direct["f1"])
    assert a["event_based"]["f1"] == pytest.approx(event_based(ref, est, LABELS)["f1"])
    # from stdin, with JSON records
    j = _run("predict", model, "-", "--json", "--median-ms", 60, "--threshold", 0.4, input=wavs[0].read_bytes())
    assert j.exit_code == 0, j.output
    recs = [json.loads(line) for line in j.stdout.splitlines()]
    mine = [e for e in pred if e.filename == str(wavs[0])]
    assert [(x["onset"], x["offset"], x["event_label"]) for x in recs] == \
        [(round(e.onset, 6), round(e.offset, 6), e.label) for e in mine]


def test_thresholds_change_the_output(model, scenes):
    _, (test_dir, _) = scenes
    wav = sorted(test_dir.glob("*.wav"))[0]
    none = _run("predict", model, wav, "--threshold", 1)
    assert none.exit_code == 0 and none.stdout == ""
    only_hiss = _run("predict", model, wav, "--threshold", 1, "--threshold", "hiss=0.5")
    assert only_hiss.exit_code == 0
    labels = {line.split("\t")[3] for line in only_hiss.stdout.splitlines()}
    assert labels <= {"hiss"}


def test_roll_and_png(model, scenes, tmp_path):
    _, (test_dir, _) = scenes
    wavs = sorted(test_dir.glob("*.wav"))[:2]
    png = tmp_path / "roll.png"
    r = _run("predict", model, *wavs, "--roll", "--png", png)
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stderr.splitlines() if "|" in line]
    assert [row.split("|")[0].strip() for row in rows] == LABELS * 2
    assert all(set(row.split("|")[1]) <= set(" ▁▂▃▄▅▆▇█") for row in rows)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    frames = FeatureConfig().n_frames(8 * SR)
    assert width == frames and height == 2 * 3 * 12 + 4
    assert zlib.crc32(data[12:29]) & 0xFFFFFFFF == struct.unpack(">I", data[29:33])[0]


def test_predict_and_eval_reject_other_tasks_options(model, scenes):
    _, (test_dir, test_tsv) = scenes
    r = _run("predict", model, "--beam", 3)
    assert r.exit_code == 2 and "--beam does not apply to sed" in r.stderr
    r = _run("eval", model, test_dir, test_tsv, "--roll")
    assert r.exit_code == 2 and "--roll does not apply to sed" in r.stderr
    r = _run("predict", model, "--png", "-", input=b"")
    assert r.exit_code == 2 and "--png" in r.stderr
    r = _run("predict", model, "--threshold", "meow=0.3", input=b"")
    assert r.exit_code == 2 and "meow" in r.stderr


def test_resume_continues_exactly(scenes, tmp_path):
    from seqtool.io.modelfile import load_model

    (train_dir, train_tsv), _ = scenes
    args = (train_dir, train_tsv, *TINY, "--val-frac", 0.2, "--checkpoint-every", 3)
    whole = _run("train", "sed", *args, "-o", tmp_path / "whole.model", "--steps", 6)
    assert whole.exit_code == 0, whole.output
    part = _run("train", "sed", *args, "-o", tmp_path / "part.model", "--steps", 3)
    assert part.exit_code == 0, part.output
    rest = _run("train", "sed", train_dir, train_tsv, "-q", "-o", tmp_path / "part.model", "--steps", 6,
                "--resume", tmp_path / "part.model")  # no --seed: the checkpoint keeps the split's
    assert rest.exit_code == 0, rest.output
    a, _ = load_model(tmp_path / "whole.model")
    b, _ = load_model(tmp_path / "part.model")
    for k in a:
        if not k.startswith("optim/"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_feature_options_are_stored_and_used(scenes, tmp_path):
    (train_dir, train_tsv), _ = scenes
    path = tmp_path / "m.model"
    r = _run("train", "sed", train_dir, "-", "-o", path, "--steps", 2, "--n-mels", 24, "--hop-ms", 10,
             "--win-ms", 25, "--sr", 8000, "--fmin", 50, *TINY, input=train_tsv.read_text())  # annotations on stdin
    assert r.exit_code == 0, r.output
    from seqtool.io.modelfile import read_meta

    f = read_meta(path)["features"]
    assert (f["sr"], f["n_mels"], f["hop_ms"], f["win_ms"], f["fmin"]) == (8000, 24, 10, 25, 50)
    p = _run("predict", path, sorted(train_dir.glob("*.wav"))[0], "--png", tmp_path / "r.png")
    assert p.exit_code == 0, p.output
    width = struct.unpack(">I", (tmp_path / "r.png").read_bytes()[16:20])[0]
    assert width == 1 + 8 * 8000 // 80  # 10 ms frames at 8 kHz


# ----------------------------------------------------------------------------- bad input


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert str(n) in lines[0], lines[0]


@pytest.fixture
def bad_dir(scenes, tmp_path):
    (train_dir, train_tsv), _ = scenes
    d = tmp_path / "audio"
    d.mkdir()
    good = sorted(train_dir.glob("*.wav"))[:2]
    for w in good:
        (d / w.name).write_bytes(w.read_bytes())
    return d, [w.name for w in good]


def test_train_bad_audio_and_annotations(bad_dir, tmp_path):
    d, names = bad_dir
    tsv = tmp_path / "ann.tsv"

    def train():
        return _run("train", "sed", d, tsv, "-o", tmp_path / "m.model", "--steps", 1, *TINY)

    tsv.write_text(f"{names[0]}\t0.5\t1.0\tbeep\n{names[1]}\t1.0\t2.0\tbuzz\nmissing.wav\t1\t2\tbeep\n")
    _one_line_error(train(), f"{tsv}:3", "missing.wav", "not found")
    tsv.write_text(f"{names[0]}\t0.5\t1.0\tbeep\n{names[1]}\t2.0\t1.0\tbuzz\n")
    _one_line_error(train(), f"{tsv}:2", "after offset")
    (d / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    tsv.write_text(f"{names[0]}\t0.5\t1.0\tbeep\ncorrupt.wav\t0.1\t0.2\tbuzz\n")
    _one_line_error(train(), "corrupt.wav")
    full = (d / names[1]).read_bytes()
    (d / "cut.wav").write_bytes(full[: len(full) // 2])
    tsv.write_text(f"{names[0]}\t0.5\t1.0\tbeep\ncut.wav\t0.1\t0.2\tbuzz\n")
    _one_line_error(train(), "cut.wav", "truncated")
    (d / "empty.wav").write_bytes(b"")
    tsv.write_text(f"{names[0]}\t0.5\t1.0\tbeep\nempty.wav\t0.1\t0.2\tbuzz\n")
    _one_line_error(train(), "empty.wav", "empty")
    write_wav(d / "nosamples.wav", np.zeros(0, np.float32), SR)
    tsv.write_text(f"{names[0]}\t0.5\t1.0\tbeep\nnosamples.wav\t0.1\t0.2\tbuzz\n")
    _one_line_error(train(), "nosamples.wav", "no samples")


def test_eval_bad_reference_and_audio(model, bad_dir, tmp_path):
    d, names = bad_dir
    ref = tmp_path / "ref.tsv"
    ref.write_text(f"filename\tonset\toffset\tevent_label\n{names[0]}\t0.5\t1.0\tbeep\n{names[1]}\t1\t2\tmeow\n")
    _one_line_error(_run("eval", model, d, ref, "-q"), f"{ref}:3", "unknown event label 'meow'")
    ref.write_text(f"{names[0]}\t0.5\t1.0\tbeep\nnothere.wav\t1\t2\tbuzz\n")
    _one_line_error(_run("eval", model, d, ref, "-q"), f"{ref}:2", "nothere.wav")
    (d / "cut.wav").write_bytes((d / names[0]).read_bytes()[:1000])
    _one_line_error(_run("predict", model, d / "cut.wav"), "cut.wav", "truncated")
    _one_line_error(_run("predict", model, "-", input=b"not audio at all"), "<stdin>")
    pred = tmp_path / "pred.tsv"
    pred.write_text(f"{names[0]}\t0.5\tsoon\tbeep\n")
    _one_line_error(_run("eval", pred, ref), f"{pred}:1", "offset")
    r = _run("eval", model, ref)
    assert r.exit_code == 2 and "REFERENCE" in r.stderr


def test_score_tables_from_stdin_and_by_hand(tmp_path):
    ref = tmp_path / "ref.tsv"
    ref.write_text("a.wav\t0.0\t1.0\tdog\na.wav\t2.0\t3.0\tcat\n")
    pred = "a.wav\t0.1\t1.1\tdog\na.wav\t2.05\t2.5\tdog\n"
    r = _run("eval", "-", ref, "--json", input=pred)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    # segments: [0,1) dog hit, [1,2) dog inserted, [2,3) cat vs dog: a substitution
    seg = rec["segment_based"]
    assert (seg["n_ref"], seg["n_sys"], seg["n_tp"], seg["substitutions"], seg["insertions"]) == (2, 3, 1, 1, 1)
    assert seg["error_rate"] == pytest.approx(1.0)
    # events: dog matched; the 2.05-2.5 dog misses cat's offset collar (max(0.2, 0.2 s)), so it is
    # an insertion and cat a deletion
    evt = rec["event_based"]
    assert (evt["n_tp"], evt["substitutions"], evt["deletions"], evt["insertions"]) == (1, 0, 1, 1)
    assert rec["event_based_onset_only"]["substitutions"] == 1


def test_short_recordings_are_padded_and_masked():
    """Windows longer than a recording: padded frames must not count in the loss."""
    from seqtool.data.audio import Normalizer
    from seqtool.tasks.sed import Recording, SEDModel, SEDTask

    rng = np.random.default_rng(1)
    recs = []
    for n in (30, 50):
        roll = (rng.random((n, 2)) < 0.3).astype(np.float32)
        recs.append(Recording(f"r{n}.wav", rng.standard_normal((n, 4)).astype(np.float32), roll, n * 0.02, []))
    model = SEDModel(4, 2, hidden=5, layers=1, dropout=0.0, rng=rng)
    task = SEDTask(model, recs, [], ["a", "b"], FeatureConfig(), Normalizer(np.zeros(4), np.ones(4)),
                   batch=2, seq_len=64)
    batch = next(task.train_batches(np.random.default_rng(0)))
    x, y, lengths, mask = batch
    assert sorted(lengths.tolist()) == [30, 50] and x.shape[0] == 50 and mask is not None
    loss = float(task.loss(batch).data)
    per_frame = []
    for rec in recs:
        z = model(rec.features[:, None, :]).data[:, 0].astype(np.float64)  # each alone, unpadded
        per_frame.append(np.maximum(z, 0) - z * rec.roll + np.log1p(np.exp(-np.abs(z))))
    assert loss == pytest.approx(np.concatenate(per_frame).mean(), rel=1e-5)
    assert task.evaluate() is None  # no validation recordings


def test_decoding_tuned_on_validation_has_the_lowest_error_rates(model, scenes):
    """The model's stored threshold/median give the lowest mean of segment and event ER of the grid."""
    from seqtool.data.audio import Normalizer
    from seqtool.io.modelfile import read_meta
    from seqtool.tasks.sed import (TUNE_MEDIAN_MS, TUNE_THRESHOLDS, SEDTask, frame_logits, load_recordings,
                                   load_sed)
    from seqtool.tasks.sed import probabilities as sigmoid

    _, (test_dir, test_tsv) = scenes
    det = load_sed(model)
    decode = read_meta(model)["decode"]
    assert decode["threshold"] in TUNE_THRESHOLDS + (0.5,) and decode["median_ms"] in TUNE_MEDIAN_MS + (100.0,)
    recs, _ = load_recordings(test_dir, test_tsv, det.features, det.labels)
    for r in recs:
        r.features = det.normalizer(r.features)
    task = SEDTask(det.model, recs, recs, det.labels, det.features, Normalizer(det.normalizer.mean,
                   det.normalizer.std), 8, det.window, 0.5, 100.0, tune_decoding=True)
    result = task.evaluate()
    probs = [sigmoid(frame_logits(det.model, r.features, det.window)) for r in recs]
    grid = [(t, m) for t in TUNE_THRESHOLDS for m in TUNE_MEDIAN_MS] + [(0.5, 100.0)]
    scores = {(t, m): task.decoded_scores(probs, t, m) for t, m in grid}
    mean_er = {k: 0.5 * (seg["error_rate"] + evt["error_rate"]) for k, (seg, evt) in scores.items()}
    chosen = (result["threshold"], result["median_ms"])
    assert mean_er[chosen] == pytest.approx(min(mean_er.values()), abs=1e-9)
    assert result["segment_er"] == pytest.approx(scores[chosen][0]["error_rate"], abs=1e-4)
    assert result["event_er"] == pytest.approx(scores[chosen][1]["error_rate"], abs=1e-4)
    assert task.meta()["decode"] == {"threshold": result["threshold"], "median_ms": result["median_ms"]}


def test_eval_of_predictions_matches_sed_eval(model, scenes, tmp_path):
    """The numbers `seqtool eval PRED REF` prints are sed_eval's for the same two lists."""
    from test_sed_metrics import _as_dicts, _sed_eval

    sed_eval = _sed_eval()
    _, (test_dir, test_tsv) = scenes
    r = _run("predict", model, test_dir)
    assert r.exit_code == 0, r.output
    # the tone detector is near perfect: spoil its output so there are errors of every kind
    lines = []
    for k, line in enumerate(r.stdout.splitlines()):
        name, on, off, label = line.split("\t")
        if k % 5 == 1:
            continue  # deletion
        if k % 5 == 2:
            label = LABELS[(LABELS.index(label) + 1) % 3]  # substitution
        if k % 5 == 3:
            on, off = f"{float(on) + 0.3:.3f}", f"{float(off) + 0.3:.3f}"  # outside the collar
        lines.append("\t".join((name, on, off, label)))
    lines.append(f"{name}\t7.0\t7.5\tbeep")  # insertion
    (tmp_path / "pred.tsv").write_text("\n".join(lines) + "\n")
    got = json.loads(_run("eval", tmp_path / "pred.tsv", test_tsv, "--json").stdout)
    ref = read_events(test_tsv)
    est = [Event(Path(e.filename).name, e.onset, e.offset, e.label) for e in read_events(tmp_path / "pred.tsv")]
    seg = sed_eval.sound_event.SegmentBasedMetrics(LABELS, time_resolution=1.0)
    evt = sed_eval.sound_event.EventBasedMetrics(LABELS, t_collar=0.2, percentage_of_length=0.2)
    for f in sorted({e.filename for e in ref + est}):
        seg.evaluate(_as_dicts([e for e in ref if e.filename == f]), _as_dicts([e for e in est if e.filename == f]))
        evt.evaluate(_as_dicts([e for e in ref if e.filename == f]), _as_dicts([e for e in est if e.filename == f]))
    assert got["event_based"]["error_rate"] > 0.1  # not a trivial perfect match
    for ours, theirs in ((got["segment_based"], seg), (got["event_based"], evt)):
        assert ours["f1"] == pytest.approx(theirs.overall_f_measure()["f_measure"], abs=1e-12)
        assert ours["error_rate"] == pytest.approx(theirs.overall_error_rate()["error_rate"], abs=1e-12)


def test_augmentation_is_a_gain_and_a_blank_band_repeatable_per_epoch():
    from seqtool.data.audio import Normalizer
    from seqtool.tasks.sed import AUG_GAIN_DB, AUG_MAX_BANDS, Recording, SEDModel, SEDTask

    rng = np.random.default_rng(2)
    recs = [Recording("r.wav", rng.standard_normal((300, 16)).astype(np.float32),
                      np.zeros((300, 2), np.float32), 6.0, [])]
    std = np.linspace(5, 15, 16).astype(np.float32)

    def first_batch(augment):
        task = SEDTask(SEDModel(16, 2, 4, 1, rng=np.random.default_rng(0)), recs, [], ["a", "b"], FeatureConfig(),
                       Normalizer(np.zeros(16), std), batch=4, seq_len=64, augment=augment)
        return next(task.train_batches(np.random.default_rng(7)))[0]

    plain, aug = first_batch(False), first_batch(True)
    np.testing.assert_array_equal(aug, first_batch(True))  # same epoch seed, same augmentation
    for j in range(plain.shape[1]):
        diff = aug[:, j] - plain[:, j]  # (T, D)
        blank = np.all(aug[:, j] == 0, axis=0)
        assert blank.sum() <= AUG_MAX_BANDS and np.all(np.diff(np.flatnonzero(blank)) == 1)
        gain_db = diff[:, ~blank] * std[~blank]  # the same dB shift in every kept band and frame
        assert np.ptp(gain_db) < 1e-3 and abs(gain_db[0, 0]) <= AUG_GAIN_DB
