"""genre through the Python API (seqtool.tasks, no Click): train, load, predict and evaluate a
tiny model; the report's metrics are recomputed from the predictions, and the records are the
lines and JSON objects `seqtool predict` prints."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool import tasks
from seqtool.cli.main import cli
from seqtool.errors import UsageError

TINY = dict(hidden=16, layers=1, batch=8, lr=0.02, dropout=0.0, seed=0, seq_len=24)


def _melody(kind, rng):
    n = int(rng.integers(20, 60))
    if kind == "steps":  # stepwise, even notes
        steps, durs = rng.choice([-2, -1, 1, 2], n), np.full(n, 0.5)
    else:  # leaps, long/short alternation
        steps, durs = rng.choice([-9, -7, 7, 9, 12, -12], n), np.where(np.arange(n) % 2 == 0, 1.5, 0.5)
    pitches = np.clip(64 + np.cumsum(steps), 40, 90)
    onsets = np.concatenate([[0], np.cumsum(durs)[:-1]])
    return [[float(o), float(d), int(p), 0] for o, d, p in zip(onsets, durs, pitches)]


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """(JSONL path, {id: label}) of 32 melodies of two kinds."""
    rng = np.random.default_rng(7)
    truth = {f"s{i}": ("steps", "leaps")[i % 2] for i in range(32)}
    path = tmp_path_factory.mktemp("api_genre") / "scores.jsonl"
    path.write_text("".join(json.dumps({"id": sid, "label": lab, "notes": _melody(lab, rng)}) + "\n"
                            for sid, lab in truth.items()))
    return str(path), truth


@pytest.fixture(scope="module")
def model(scores, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("api_genre_model") / "g.model")
    summary = tasks.train("genre", scores[0], out, steps=40, val_frac=0.25, **TINY)
    assert summary["steps"] == 40
    return out


def test_train_load_predict_evaluate(model, scores):
    data, truth = scores
    clf = tasks.load(model)
    assert clf.labels == ["leaps", "steps"] and clf.spec.kind == "score" and clf.seq_len == 24
    assert clf.meta["data_options"] == {"batch": 8, "seq_len": 24, "val_frac": 0.25, "transpose": 5}

    records = list(tasks.predict(model, [data]))
    assert [r.data["input"] for r in records] == list(truth)
    for r in records:
        p = r.data["probabilities"]
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert r.data["label"] == max(p, key=p.get)
        assert r.text.split("\t") == [r.data["input"], r.data["label"]] + [f"{p[k]:.4f}" for k in clf.labels]

    report = tasks.evaluate(model, [data])
    predicted = {r.data["input"]: r.data["label"] for r in records}
    labels = clf.labels
    confusion = [[sum(truth[s] == t and predicted[s] == q for s in truth) for q in labels] for t in labels]
    assert report.data["confusion"] == confusion
    assert report.data["n"] == 32
    assert report.data["accuracy"] == pytest.approx(np.mean([predicted[s] == truth[s] for s in truth]))
    correct = confusion[0][0] + confusion[1][1]
    assert report.text.startswith(f"accuracy {report.data['accuracy']:.4f} ({correct}/32)")


def test_records_are_what_the_command_line_prints(model, scores):
    data, _ = scores
    records = list(tasks.predict(model, [data]))
    runner = CliRunner()
    r = runner.invoke(cli, ["predict", model, data])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [rec.text for rec in records]
    r = runner.invoke(cli, ["predict", model, data, "--json"])
    assert [json.loads(line) for line in r.stdout.splitlines()] == [rec.data for rec in records]
    r = runner.invoke(cli, ["eval", model, data])
    assert r.stdout.rstrip("\n") == tasks.evaluate(model, [data]).text


def test_options_of_other_tasks_are_rejected(model, scores):
    with pytest.raises(UsageError, match="--beam does not apply to genre models"):
        tasks.predict(model, [scores[0]], beam=3)
    with pytest.raises(UsageError, match="one DATA"):
        tasks.evaluate(model, [scores[0], scores[0]])
