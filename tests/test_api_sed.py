"""Sound event detection from Python through seqtool.tasks: train, load, predict, evaluate, and
score an event table; no Click except to check that the CLI prints the same records."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool import tasks
from seqtool.data.audio import write_wav
from seqtool.cli.main import cli
from seqtool.data.events import Event
from seqtool.errors import UsageError
from seqtool.metrics.sed import event_based, segment_based

SR = 16000
SECONDS = 3.0
LABELS = ["beep", "hiss"]


def _scene(rng, events):
    """A quiet noise floor with a 1 kHz beep or a 4-6 kHz hiss at each (onset, offset, label)."""
    t = np.arange(int(SECONDS * SR)) / SR
    x = 0.01 * rng.standard_normal(len(t))
    for onset, offset, label in events:
        on = (t >= onset) & (t < offset)
        if label == "beep":
            x[on] += 0.4 * np.sin(2 * np.pi * 1000 * t[on])
        else:
            x[on] += 0.2 * np.sin(2 * np.pi * rng.uniform(4000, 6000, (8, 1)) * t[on]).sum(0) / 8
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    lines = []
    for k in range(5):
        a = round(float(rng.uniform(0.1, 1.0)), 2)
        b = round(float(rng.uniform(1.5, 2.2)), 2)
        events = [(a, a + 0.6, "beep"), (b, b + 0.7, "hiss")]
        write_wav(d / f"s{k}.wav", _scene(rng, events), SR)
        lines += [f"s{k}.wav\t{on:g}\t{off:g}\t{label}" for on, off, label in events]
    (d / "ref.tsv").write_text("filename\tonset\toffset\tevent_label\n" + "\n".join(lines) + "\n")
    return d, d / "ref.tsv"


@pytest.fixture(scope="module")
def model(data, tmp_path_factory):
    d, ref = data
    path = tmp_path_factory.mktemp("model") / "sed.model"
    job = tasks.prepare("sed", [d, ref], path, seed=3, steps=6, hidden=8, layers=1, seq_len=64, batch=4,
                        val_frac=0.2, lr=0.01, tune_decoding=False)
    assert job.task.labels == LABELS and len(job.task.train) == 4 and len(job.task.val) == 1
    assert job.run()["steps"] == 6
    return path


def test_predict_records_are_the_cli_lines(model, data):
    d, _ = data
    wavs = [d / "s0.wav", d / "s1.wav"]
    records = list(tasks.predict(model, wavs, threshold=("0.2",), median_ms=60.0))
    assert records, "a threshold of 0.2 on a fresh detector finds events"
    cli_text = CliRunner().invoke(cli, ["predict", str(model), *map(str, wavs), "--threshold", "0.2",
                                        "--median-ms", "60"])
    assert cli_text.exit_code == 0, cli_text.output
    assert [r.text for r in records] == cli_text.stdout.splitlines()
    cli_json = CliRunner().invoke(cli, ["predict", str(model), *map(str, wavs), "--threshold", "0.2",
                                        "--median-ms", "60", "--json"])
    assert [r.data for r in records] == [json.loads(line) for line in cli_json.stdout.splitlines()]
    for r in records:
        assert r.data["filename"] in map(str, wavs) and r.data["event_label"] in LABELS
        assert 0 <= r.data["onset"] < r.data["offset"] <= SECONDS


def test_evaluate_scores_the_predicted_events(model, data):
    d, ref_path = data
    wavs = sorted(d.glob("*.wav"))
    predictor = tasks.load(model)
    est = [Event(d.joinpath(r.data["filename"]).name, r.data["onset"], r.data["offset"], r.data["event_label"])
           for r in predictor.predict(tuple(wavs), tasks.TaskOptions(threshold=("0.2",)), None)]
    report = predictor.evaluate((d, ref_path), tasks.TaskOptions(threshold=("0.2",)), None)
    # independently: the reference read by hand, every recording SECONDS long
    ref = []
    for line in ref_path.read_text().splitlines()[1:]:
        name, on, off, label = line.split("\t")
        ref.append(Event(name, float(on), float(off), label))
    durations = {w.name: SECONDS for w in wavs}
    seg = segment_based(ref, est, LABELS, 1.0, durations)
    evt = event_based(ref, est, LABELS, 0.2, 0.2)
    assert report.data["files"] == 5 and report.data["task"] == "sed"
    for key in ("f1", "error_rate", "n_ref", "n_sys", "substitutions", "deletions", "insertions"):
        assert report.data["segment_based"][key] == pytest.approx(seg[key], nan_ok=True), key
        assert report.data["event_based"][key] == pytest.approx(evt[key], nan_ok=True), key
    assert report.data["event_based"]["n_ref"] == 10 == len(ref)
    assert report.text.splitlines()[0].startswith("segment-based (1 s segments)")

    # the same events as a table, scored without a model: event scores agree exactly
    table = d / "pred.tsv"
    table.write_text("".join(f"{e.filename}\t{e.onset}\t{e.offset}\t{e.label}\n" for e in est))
    scored = tasks.evaluate(table, [ref_path])
    assert scored.data["event_based"] == report.data["event_based"]


def test_options_of_other_tasks_are_rejected(model, data):
    d, ref = data
    with pytest.raises(UsageError, match="AUDIO_DIR ANNOTATIONS"):
        tasks.prepare("sed", [ref], d / "m.model")
    with pytest.raises(UsageError, match="--beam does not apply to sed"):
        tasks.predict(model, [d / "s0.wav"], beam=3)
    with pytest.raises(UsageError, match="--roll does not apply to sed"):
        tasks.evaluate(model, [d, ref], roll=True)
