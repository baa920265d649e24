"""seq2seq from Python through seqtool.tasks (no Click): train, load, predict, evaluate; the results
equal the CLI's on the same model file and BLEU computed here with sacrebleu."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool import tasks
from seqtool.cli.main import cli
from seqtool.errors import UsageError
from seqtool.tasks.base import TaskOptions

TINY = {"hidden": 32, "embed": 16, "batch": 16, "lr": 0.01, "dropout": 0.0, "seed": 0}


def _pairs(n, seed):
    r = random.Random(seed)
    sources = [" ".join(r.choice("abcdef") for _ in range(r.randint(2, 5))) for _ in range(n)]
    return [f"{s}\t{' '.join(reversed(s.split()))}" for s in sources]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    (d / "train.tsv").write_text("".join(line + "\n" for line in _pairs(300, 0)), encoding="utf-8")
    path = d / "rev.model"
    summary = tasks.train("seq2seq", str(d / "train.tsv"), str(path), steps=60, **TINY)
    assert summary["steps"] == 60 and summary["reason"] == "steps"
    return d, str(path)


def test_predict_equals_the_cli_on_the_same_model(model):
    d, path = model
    (d / "in.txt").write_text("a b c\n\nd e f a\nf\n", encoding="utf-8")
    records = list(tasks.predict(path, [str(d / "in.txt")], beam=3))
    r = CliRunner().invoke(cli, ["predict", path, str(d / "in.txt"), "--beam", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert [rec.data for rec in records] == [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec.text for rec in records] == [rec.data["translation"] for rec in records]
    assert records[1].data == {"input": str(d / "in.txt"), "line": 2, "source": "",
                               "translation": "", "score": None}
    assert all(rec.data["score"] < 0 for rec in records if rec.data["source"])  # log-probabilities


def test_evaluate_scores_the_predictions_with_sacrebleu(model):
    sacrebleu = pytest.importorskip("sacrebleu")
    d, path = model
    test = _pairs(40, 1)
    (d / "test.tsv").write_text("".join(line + "\n" for line in test), encoding="utf-8")
    (d / "src.txt").write_text("".join(line.split("\t")[0] + "\n" for line in test), encoding="utf-8")
    hyps = [rec.text for rec in tasks.predict(path, [str(d / "src.txt")])]
    refs = [line.split("\t")[1] for line in test]
    report = tasks.load(path).evaluate((str(d / "test.tsv"),), TaskOptions(), None)
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert report.data["bleu"] == round(bleu, 2) and report.data["pairs"] == 40
    assert report.data["exact"] == round(float(np.mean([h == t for h, t in zip(hyps, refs)])), 4)
    assert report.text.splitlines()[0].startswith(f"BLEU {bleu:.2f}  exact match")
    assert sum(row["pairs"] for row in report.data["by_source_length"]) == 40


def test_options_are_checked_like_on_the_command_line(model):
    d, path = model
    with pytest.raises(UsageError, match="--threshold does not apply to seq2seq"):
        tasks.predict(path, ["-"], threshold=("0.5",))
    with pytest.raises(UsageError, match="--hidden 64 differs from the checkpoint's 32"):
        tasks.prepare("seq2seq", str(d / "train.tsv"), path, resume=path, steps=61, hidden=64)
    job = tasks.prepare("seq2seq", str(d / "train.tsv"), str(d / "more.model"), resume=path, steps=61)
    assert job.task.model.hidden == 32 and job.settings.lr == 0.01  # the checkpoint's, not defaults
    assert job.task.meta()["data_options"] == {"batch": 16, "val_frac": 0.05, "min_count": 1,
                                               "teacher_forcing": 1.0, "reverse": False}


def test_weights_keep_the_model_file_names_and_order():
    """The optimizer state in a model file is stored by parameter index: the attention layer's
    weights keep the names and places they had when they were the model's own."""
    from seqtool.tasks.seq2seq import Seq2Seq

    m = Seq2Seq(7, 6, embed=3, hidden=4, cell="gru", attention="additive", rng=np.random.default_rng(0))
    gru = [f"{w}_l0" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(m.state_dict()) == ["attn_v", "src_embed.weight", "tgt_embed.weight",
                                    *(f"encoder.{w}" for w in gru), *(f"decoder.{w}" for w in gru),
                                    "attn_key.weight", "attn_key.bias", "attn_query.weight",
                                    "attn_out.weight", "out.weight", "out.bias"]
    assert [p.shape for p in m.parameters()] == [a.shape for a in m.state_dict().values()]
    other = Seq2Seq(7, 6, embed=3, hidden=4, cell="gru", attention="additive", rng=np.random.default_rng(1))
    other.load_state_dict(m.state_dict())
    for a, b in zip(m.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
