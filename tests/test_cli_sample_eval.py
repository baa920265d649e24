"""seqtool sample / eval / predict on charlm model files built from random weights."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.cli.main import cli
from seqtool.io.modelfile import save_model
from seqtool.tasks.charlm import load as load_charlm
from seqtool.tasks.charlm.sampler import generate, text_loss
from test_sampling import make_charlm


def _run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_charlm(tmp_path_factory.mktemp("m") / "lm.st", "lstm")


def test_help():
    for cmd in ("sample", "eval", "predict"):
        r = _run(cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.stdout


def _with_newline(text):
    """What sample prints: the text, its last line ended with a newline."""
    return text if text.endswith("\n") else text + "\n"


def test_sample_stdout_holds_only_the_text(model):
    r = _run("sample", model, "--length", 200, "--seed", 3, "--prime", "ab")
    assert r.exit_code == 0, r.output
    lm = load_charlm(model)
    assert r.stdout == _with_newline(generate(lm, 200, seed=3, prime_text="ab"))
    assert "generated" in r.stderr  # messages go to stderr
    q = _run("sample", model, "--length", 200, "--seed", 3, "--prime", "ab", "--quiet", "--stream")
    assert q.stdout == r.stdout and q.stderr == ""  # streaming gives the same text
    assert _run("sample", model, "--length", 200, "--seed", 4, "-q").stdout != r.stdout[2:]


def test_sample_options(model):
    a = _run("sample", model, "--length", 50, "--argmax", "-q")
    b = _run("sample", model, "--length", 50, "--argmax", "-q", "--seed", 9)
    assert a.exit_code == 0 and a.stdout == b.stdout and len(a.stdout.rstrip("\n")) in (49, 50)
    assert a.stdout.endswith("\n")
    k = _run("sample", model, "--length", 50, "--top-k", 1, "--seed", 1, "-q")
    assert k.stdout == a.stdout  # top-1 sampling is argmax
    full = _run("sample", model, "--length", 300, "--seed", 2, "-q").stdout
    stop = full[100:102]
    s = _run("sample", model, "--length", 300, "--seed", 2, "-q", "--stop-at", stop)
    assert s.stdout == _with_newline(full[:full.find(stop) + 2])
    j = _run("sample", model, "--length", 40, "--seed", 2, "--json")
    rec = json.loads(j.stdout)
    assert rec["text"] == full[:40]


def test_sample_errors(model, tmp_path):
    r = _run("sample", model, "--prime", "aQb")
    assert r.exit_code == 1 and "'Q'" in r.stderr and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert _run("sample", model, "--temperature", 0).exit_code == 2
    other = tmp_path / "g.st"
    save_model(other, {"w": np.zeros(2, np.float32)}, {"task": "genre", "config": {}})
    r = _run("sample", other)
    assert r.exit_code == 1 and "genre" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    trunc = tmp_path / "t.st"
    trunc.write_bytes(open(model, "rb").read()[:-100])
    r = _run("sample", trunc)
    assert r.exit_code == 1 and "truncated" in r.stderr


def test_eval_text_and_json(model, tmp_path):
    text = "abc def\nghij klm.\n" * 5
    f = tmp_path / "t.txt"
    f.write_text(text)
    loss, n = text_loss(load_charlm(model), text)
    r = _run("eval", model, f)
    assert r.exit_code == 0, r.output
    assert f"{loss:.6f} nats/char" in r.stdout and f"{loss / math.log(2):.6f} bits/char" in r.stdout
    j = _run("eval", model, "-", "--json", input=text)
    rec = json.loads(j.stdout)
    assert rec["loss"] == pytest.approx(loss) and rec["bpc"] == pytest.approx(loss / math.log(2))
    assert rec["tokens"] == n == len(text) - 1


def test_eval_errors(model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abc XYZ")
    r = _run("eval", model, f)
    assert r.exit_code == 1 and "'X'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert _run("eval", tmp_path / "missing.st", f).exit_code == 1


def test_predict_one_loss_per_line(model, tmp_path):
    lines = ["abc def\n", "a\n", "hello\n", "klm"]
    r = _run("predict", model, "-", input="".join(lines))
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    lm = load_charlm(model)
    assert len(out) == 4
    for got, line in zip(out, lines):
        assert float(got) == pytest.approx(text_loss(lm, line)[0], abs=2e-6)
    f = tmp_path / "in.txt"
    f.write_text("".join(lines))
    j = _run("predict", model, f, "--json")
    recs = [json.loads(x) for x in j.stdout.splitlines()]
    assert [x["line"] for x in recs] == [1, 2, 3, 4]


def test_sample_into_closed_pipe_is_quiet(model):
    p = subprocess.run(
        f"{sys.executable} -m seqtool.cli.main sample {model} --length 100000 | head -c 10",
        shell=True, capture_output=True, timeout=120)
    assert len(p.stdout) == 10
    assert b"Error" not in p.stderr and b"Traceback" not in p.stderr


def test_task_options_rejected_for_charlm(model, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abc")
    for cmd in ("eval", "predict"):
        r = _run(cmd, model, f, "--beam", "3")
        assert r.exit_code == 2 and "--beam does not apply to charlm" in r.stderr
