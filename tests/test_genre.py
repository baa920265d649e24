"""genre: pooling with padding masked (gradchecks, padding invariance), chunk-averaged prediction
against a naive loop, metrics by hand, data lists, and train/predict/eval end to end on MIDI,
JSONL and audio made here."""

import json
import os

import mido
import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.core.autograd import Tensor, no_grad
from seqtool.cli.main import cli
from seqtool.data.scores import chunks
from seqtool.errors import SeqtoolError
from seqtool.diagnostics.gradcheck import gradcheck
from seqtool.tasks.genre.inputs import read_list
from seqtool.tasks.genre.metrics import metrics
from seqtool.tasks.genre.model import GenreNet, chunk_probabilities, pad_batch
from seqtool.tasks.genre.predictor import load_genre

FSDD = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fsdd", "recordings")
TINY = ["--hidden", "16", "--layers", "1", "--batch", "8", "--lr", "0.02", "--dropout", "0", "--seed", "0",
        "-q"]


# ------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("pool", ["last", "mean", "attention"])
@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False)])
def test_pooling_gradcheck_ragged(pool, cell, bidirectional):
    rng = np.random.default_rng(3)
    model = GenreNet(3, 4, hidden=3, layers=2, cell=cell, bidirectional=bidirectional, proj=2,
                     pool=pool, attention=3, rng=rng).to_dtype(np.float64)
    x = rng.standard_normal((5, 3, 3))
    lengths = np.array([5, 2, 3])
    params = list(model.parameters())

    def fn(x, *_):
        return model(x, lengths)

    ok, err, details = gradcheck(fn, [x] + params)
    assert ok, (err, [d for d in details if not d["ok"]])


@pytest.mark.parametrize("pool", ["last", "mean", "attention"])
def test_padding_does_not_change_the_output(pool):
    rng = np.random.default_rng(0)
    model = GenreNet(4, 3, hidden=5, layers=2, bidirectional=True, pool=pool, rng=rng).eval()
    seqs = [rng.standard_normal((n, 4)).astype(np.float32) for n in (7, 2, 4)]
    x, lengths = pad_batch(seqs)
    x[:, 1, :][2:] = 1e3  # garbage in the padding must not leak into the result
    x[:, 2, :][4:] = -1e3
    with no_grad():
        batched = model(x, lengths).data
        alone = [model(s[:, None, :], np.array([len(s)])).data[0] for s in seqs]
    np.testing.assert_allclose(batched, np.stack(alone), rtol=1e-4, atol=1e-5)


def test_attention_weights_are_zero_on_padding_and_sum_to_one():
    rng = np.random.default_rng(1)
    model = GenreNet(2, 2, hidden=4, layers=1, pool="attention", rng=rng).eval()
    x = rng.standard_normal((6, 3, 2)).astype(np.float32)
    lengths = np.array([6, 1, 4])
    with no_grad():
        _, w = model.encode(Tensor(x), lengths)
    assert w.shape == (6, 3)
    pad = np.arange(6)[:, None] >= lengths[None, :]
    assert np.all(w[pad] == 0)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-5)
    assert w[0, 1] == pytest.approx(1.0)


def test_chunk_probabilities_match_a_naive_loop():
    rng = np.random.default_rng(2)
    model = GenreNet(3, 3, hidden=6, layers=1, bidirectional=True, pool="mean", rng=rng).eval()
    pieces = [rng.standard_normal((n, 3)).astype(np.float32) for n in (5, 23, 10, 41)]
    L = 10
    got = chunk_probabilities(model, pieces, L, batch_steps=25)  # forces several small batches
    for f, p in zip(pieces, got):
        probs = []
        for c in chunks(f, L, L // 2):
            with no_grad():
                z = model(c[:, None, :], np.array([len(c)])).data[0].astype(np.float64)
            probs.append(np.exp(z - z.max()) / np.exp(z - z.max()).sum())
        np.testing.assert_allclose(p, np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)
    # chunks cover the whole piece: a change at the very end moves the prediction
    changed = [f.copy() for f in pieces]
    changed[3][-1] += 5.0
    assert not np.allclose(chunk_probabilities(model, changed, L)[3], got[3])


# ------------------------------------------------------------------------------------ metrics


def test_metrics_by_hand():
    labels = ["a", "b", "c"]
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = metrics(y_true, y_pred, labels)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P 2/2 R 2/3; b: P 1/2 R 1/2; c: P 1/2 R 1/1
    assert m["per_class"]["a"]["precision"] == pytest.approx(1.0)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert m["per_class"]["b"]["support"] == 2
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


# ------------------------------------------------------------------------------------ data


def test_read_list_labels_and_errors(tmp_path):
    d = tmp_path / "jazz"
    d.mkdir()
    lst = tmp_path / "files.txt"
    lst.write_text("# comment\njazz/a.mid\n\n/x/blues/7_b.mid\tfolk\n/x/y/3_tom_1.wav\n")
    rows = read_list(str(lst), label_regex=None)
    assert [r[1] for r in rows] == ["jazz", "folk", "y"]
    assert rows[0][0] == os.path.join(str(tmp_path), "jazz/a.mid")  # relative to the list file
    with pytest.raises(SeqtoolError, match=r"files.txt line 2: .*does not match"):
        read_list(str(lst), label_regex=r"^(\d+)_")  # a.mid has no digit
    lst.write_text("/x/blues/7_b.mid\tfolk\n/x/y/3_tom_1.wav\n")
    assert [r[1] for r in read_list(str(lst), label_regex=r"^(\d+)_")] == ["folk", "3"]
    lst.write_text("a\tb\tc\n")
    with pytest.raises(SeqtoolError, match="line 1: expected PATH or PATH<TAB>LABEL"):
        read_list(str(lst))


# ------------------------------------------------------------------------------------ end to end


def _write_midi(path, pitches, durations, tpb=96):
    mid = mido.MidiFile(ticks_per_beat=tpb)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    for p, d in zip(pitches, durations):
        tr.append(mido.Message("note_on", note=int(p), velocity=80, time=0))
        tr.append(mido.Message("note_off", note=int(p), velocity=0, time=int(d * tpb)))
    mid.save(str(path))


def _melody(kind, rng):
    n = int(rng.integers(20, 70))
    if kind == "steps":  # stepwise, even short notes
        steps = rng.choice([-2, -1, 1, 2], n)
        durs = np.full(n, 0.5)
    else:  # leaps with long/short alternation
        steps = rng.choice([-9, -7, 7, 9, 12, -12], n)
        durs = np.where(np.arange(n) % 2 == 0, 1.5, 0.5)
    pitches = np.clip(64 + np.cumsum(steps), 40, 90)
    return pitches, durs


@pytest.fixture(scope="module")
def midi_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("midi")
    rng = np.random.default_rng(0)
    for kind in ("steps", "leaps"):
        (root / kind).mkdir()
        for i in range(24):
            _write_midi(root / kind / f"{kind}{i:02d}.mid", *_melody(kind, rng))
    return root


def test_train_predict_eval_midi_folder(midi_set, tmp_path):
    runner = CliRunner()
    model = str(tmp_path / "g.model")
    r = runner.invoke(cli, ["train", "genre", str(midi_set), "-o", model, "--steps", "40",
                            "--exclude", "*1?.mid", "--seq-len", "32", "--pool", "mean", *TINY])
    assert r.exit_code == 0, r.stderr + r.stdout
    clf = load_genre(model)
    assert clf.labels == ["leaps", "steps"] and clf.spec.kind == "score" and clf.seq_len == 32
    assert clf.meta["data"]["train_pieces"] + clf.meta["data"]["val_pieces"] == 2 * 14  # 10-19 excluded

    held = sorted(str(p) for p in midi_set.rglob("*1?.mid"))
    lst = tmp_path / "held.txt"
    lst.write_text("\n".join(held) + "\n")
    r = runner.invoke(cli, ["eval", model, str(lst)])
    assert r.exit_code == 0, r.stderr
    assert "confusion matrix" in r.stdout
    r = runner.invoke(cli, ["eval", model, str(lst), "--json"])
    m = json.loads(r.stdout)
    assert m["n"] == 20 and m["accuracy"] >= 0.9, m
    assert np.sum(m["confusion"]) == 20

    r = runner.invoke(cli, ["predict", model, held[0], held[-1]])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.strip().split("\n")
    assert len(lines) == 2
    cols = lines[0].split("\t")
    assert cols[0] == held[0] and cols[1] in clf.labels and len(cols) == 4
    probs = np.array(cols[2:], float)
    assert probs.sum() == pytest.approx(1.0, abs=2e-4) and cols[1] == clf.labels[int(np.argmax(probs))]
    assert "P(leaps), P(steps)" in r.stderr
    # '-' reads paths from stdin; --json gives the same probabilities
    r2 = runner.invoke(cli, ["predict", model, "-", "--json"], input=held[0] + "\n")
    obj = json.loads(r2.stdout)
    assert obj["input"] == held[0] and obj["label"] == cols[1]
    assert [obj["probabilities"][k] for k in clf.labels] == pytest.approx(probs, abs=1e-4)
    # seq2seq/sed options are usage errors here
    r = runner.invoke(cli, ["predict", model, held[0], "--beam", "3"])
    assert r.exit_code == 2 and "--beam does not apply to genre" in r.stderr


def test_bad_files_are_listed_and_skipped_unless_strict(midi_set, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(midi_set, root)
    (root / "steps" / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    runner = CliRunner()
    model = str(tmp_path / "g.model")
    r = runner.invoke(cli, ["train", "genre", str(root), "-o", model, "--steps", "2", *TINY])
    assert r.exit_code == 0, r.stderr
    assert "broken.mid" in r.stderr and "skipped 1 of 49" in r.stderr
    r = runner.invoke(cli, ["train", "genre", str(root), "-o", model, "--steps", "2", "--strict", *TINY])
    assert r.exit_code == 1 and "broken.mid" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().split("\n")) == 1
    r = runner.invoke(cli, ["predict", model, str(root / "steps" / "broken.mid")])
    assert r.exit_code == 1 and "broken.mid" in r.stderr
    r = runner.invoke(cli, ["eval", model, str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "nothing: no such file or folder" in r.stderr


def test_jsonl_training_and_resume_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    lines = []
    for i in range(30):
        kind = ("steps", "leaps")[i % 2]
        pitches, durs = _melody(kind, rng)
        onsets = np.concatenate([[0], np.cumsum(durs)[:-1]])
        notes = [[float(o), float(d), int(p), 0] for o, d, p in zip(onsets, durs, pitches)]
        lines.append(json.dumps({"id": f"s{i}", "label": kind, "n_parts": 1, "notes": notes}))
    data = tmp_path / "scores.jsonl"
    data.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    full, part = str(tmp_path / "full.model"), str(tmp_path / "part.model")
    args = ["--seq-len", "24", "--val-frac", "0.2", *TINY]
    r = runner.invoke(cli, ["train", "genre", str(data), "-o", full, "--steps", "8", *args])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["train", "genre", str(data), "-o", part, "--steps", "5", *args])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(cli, ["train", "genre", str(data), "-o", part, "--steps", "8", "--resume", part, "-q"])
    assert r.exit_code == 0, r.stderr
    a, b = load_genre(full).model.state_dict(), load_genre(part).model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # predicting from a JSONL prints the score ids
    r = runner.invoke(cli, ["predict", full, str(data)])
    assert r.exit_code == 0 and [ln.split("\t")[0] for ln in r.stdout.splitlines()][:2] == ["s0", "s1"]


def test_audio_folder_end_to_end(tmp_path):
    from seqtool.data.audio import write_wav

    rng = np.random.default_rng(0)
    sr = 8000
    for label, f0 in (("low", 300.0), ("high", 1800.0)):
        (tmp_path / "a" / label).mkdir(parents=True)
        for i in range(12):
            t = np.arange(int(sr * rng.uniform(0.2, 0.5))) / sr
            x = 0.3 * np.sin(2 * np.pi * f0 * rng.uniform(0.9, 1.1) * t) + 0.02 * rng.standard_normal(len(t))
            write_wav(str(tmp_path / "a" / label / f"{i}.wav"), x.astype(np.float32), sr)
    runner = CliRunner()
    model = str(tmp_path / "a.model")
    r = runner.invoke(cli, ["train", "genre", str(tmp_path / "a"), "-o", model, "--sr", "8000",
                            "--n-mels", "16", "--hop-ms", "20", "--steps", "25", "--pool", "last", *TINY])
    assert r.exit_code == 0, r.stderr
    clf = load_genre(model)
    assert clf.spec.kind == "audio" and clf.spec.features["n_mels"] == 16
    r = runner.invoke(cli, ["eval", model, str(tmp_path / "a"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["accuracy"] >= 0.9
    # a MIDI file given to an audio model is a one-line error
    mid = tmp_path / "x.mid"
    _write_midi(mid, [60, 62], [1, 1])
    r = runner.invoke(cli, ["predict", model, str(mid)])
    assert r.exit_code == 1 and "x.mid" in r.stderr and "audio" in r.stderr


def test_fsdd_list_with_label_regex(tmp_path):
    if not os.path.isdir(FSDD):
        pytest.skip("../shared/data/fsdd is not here")
    files = sorted(os.path.join(FSDD, f) for f in os.listdir(FSDD) if f.endswith(".wav"))
    train = [f for f in files if f.split("_")[-1] in ("5.wav", "6.wav") and "_jackson_" in f]
    runner = CliRunner()
    model = str(tmp_path / "d.model")
    r = runner.invoke(cli, ["train", "genre", "-", "-o", model, "--label-regex", r"^(\d+)_", "--sr", "8000",
                            "--n-mels", "20", "--steps", "2", "--val-frac", "0", *TINY],
                      input="\n".join(train) + "\n")
    assert r.exit_code == 0, r.stderr
    clf = load_genre(model)
    assert clf.labels == [str(d) for d in range(10)] and clf.spec.label_regex == r"^(\d+)_"
    # eval reads an unlabelled list with the model's regex
    r = runner.invoke(cli, ["eval", model, "-", "--json"], input="\n".join(train[:4]) + "\n")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 4


def test_train_genre_help_and_usage_errors(midi_set, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "genre", "--help"])
    assert r.exit_code == 0 and "--pool" in r.stdout and "--label-regex" in r.stdout
    r = runner.invoke(cli, ["train", "genre", str(midi_set), "-o", str(tmp_path / "m"), "--sr", "8000",
                            "--steps", "1", "-q"])
    assert r.exit_code == 2 and "audio data only" in r.stderr
    r = runner.invoke(cli, ["train", "genre", str(midi_set / "steps"), "-o", str(tmp_path / "m"),
                            "--steps", "1", "-q"])
    assert r.exit_code == 1  # a folder of files, not of class folders


def test_transpose_shifts_only_the_pitch_of_real_steps():
    from seqtool.data.audio import Normalizer
    from seqtool.tasks.genre.inputs import InputSpec, Piece
    from seqtool.tasks.genre.task import GenreTask

    rng = np.random.default_rng(4)
    raw = [rng.standard_normal((n, 22)).astype(np.float32) for n in (9, 3, 6, 12)]
    norm = Normalizer().fit(raw)
    pieces = [Piece(str(i), "ab"[i % 2], norm(f)) for i, f in enumerate(raw)]
    model = GenreNet(22, 2, hidden=4, layers=1, rng=rng)
    plain = GenreTask(model, pieces, [], ["a", "b"], InputSpec("score"), norm, batch=4, seq_len=8)
    moved = GenreTask(model, pieces, [], ["a", "b"], InputSpec("score"), norm, batch=4, seq_len=8, transpose=3)
    plain._plan, moved._plan = plain._make_plan(7), moved._make_plan(7)
    x0, len0, y0 = plain._batch(0)
    x1, len1, y1 = moved._batch(0)
    assert (len0 == len1).all() and (y0 == y1).all()
    np.testing.assert_array_equal(x0[:, :, 1:], x1[:, :, 1:])
    semis = (x1[:, :, 0] - x0[:, :, 0]) * 12 * norm.std[0]  # (T, N) semitones
    for n, L in enumerate(len1):
        assert np.allclose(semis[:L, n], round(float(semis[0, n])), atol=1e-3)  # one shift per crop
        assert abs(semis[0, n]) <= 3 + 1e-3
        assert (x1[L:, n] == 0).all()  # padding stays zero
    assert np.abs(semis).max() > 0.5
    with pytest.raises(Exception, match="scores only"):
        GenreTask(model, pieces, [], ["a", "b"], InputSpec("audio", features={"n_mels": 22}), norm, 4, 8, transpose=2)
