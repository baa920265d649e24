"""charlm through the Python API (seqtool.tasks), no Click: train, load, predict, evaluate, resume."""

import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool import tasks
from seqtool.cli.main import cli
from seqtool.errors import UsageError
from seqtool.io.modelfile import read_meta
from seqtool.tasks.charlm.sampler import generate

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "tiny-shakespeare.txt")
SMALL = dict(hidden=16, layers=1, embed=8, batch=4, seq_len=16, seed=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("api") / "lm.model")
    summary = tasks.train("charlm", SAMPLE, path, steps=4, **SMALL)
    assert summary["steps"] == 4 and summary["path"] == path
    return path


def _nll_by_hand(lm, text: str) -> float:
    """Mean -log p(next char) from the network's own forward pass and a float64 log-softmax."""
    ids = np.array([lm.index[ch] for ch in text])
    logits, _ = lm.model(ids[:-1, None])  # (T, 1, V)
    z = np.asarray(logits.data[:, 0], np.float64)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(ids) - 1), ids[1:]].mean())


def test_train_stores_what_the_options_said(model):
    meta = read_meta(model)
    assert meta["task"] == "charlm" and meta["history"]["steps"] == 4
    assert (meta["config"]["hidden"], meta["config"]["layers"], meta["config"]["embed"]) == (16, 1, 8)
    assert meta["data_options"]["batch"] == 4 and meta["data_options"]["seq_len"] == 16


def test_predict_and_evaluate_agree_with_the_network_and_the_cli(model, tmp_path):
    lines = ["To be, or not to be\n", "that is the question\n"]
    text_file = tmp_path / "t.txt"
    text_file.write_text("".join(lines))
    records = list(tasks.predict(model, text_file))
    lm = tasks.load(model)
    for record, line in zip(records, lines):
        assert record.data["loss"] == pytest.approx(_nll_by_hand(lm, line), rel=1e-5)
        assert record.text == f"{record.data['loss']:.6f}"
    cli_out = CliRunner().invoke(cli, ["predict", model, str(text_file), "--json"]).stdout
    assert [json.loads(x) for x in cli_out.splitlines()] == [r.data for r in records]
    report = tasks.evaluate(model, [str(text_file)])
    assert report.data["loss"] == pytest.approx(_nll_by_hand(lm, "".join(lines)), rel=1e-5)
    assert report.data["bpc"] == pytest.approx(report.data["loss"] / math.log(2))
    assert report.text == CliRunner().invoke(cli, ["eval", model, str(text_file)]).stdout.rstrip("\n")


def test_sampling_from_the_loaded_model_repeats_with_a_seed(model):
    lm = tasks.load(model)
    a, b = generate(lm, 40, seed=5), generate(lm, 40, seed=5)
    assert a == b and len(a) == 40 and set(a) <= set(lm.tokens)


def test_resume_continues_and_options_are_checked(model, tmp_path):
    copy = tmp_path / "lm.model"
    copy.write_bytes(open(model, "rb").read())
    tasks.train("charlm", SAMPLE, str(copy), steps=6, resume=str(copy), seed=3)
    assert read_meta(copy)["history"]["steps"] == 6
    with pytest.raises(UsageError, match="--hidden 32 differs"):
        tasks.prepare("charlm", SAMPLE, str(copy), steps=8, resume=str(copy), hidden=32)
    with pytest.raises(UsageError, match="does not apply to charlm"):
        list(tasks.predict(model, [SAMPLE], beam=3))
