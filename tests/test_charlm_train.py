"""charlm: text reading, the model contract, exact resume, and ``seqtool train charlm``."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.cli.main import cli
from seqtool.data.text import build_vocab, encode, load_corpus, read_text_files, split_validation
from seqtool.errors import SeqtoolError
from seqtool.io.modelfile import load_checkpoint
from seqtool.io.modelfile import read_meta
from seqtool.tasks.charlm import CharLM, load
from seqtool.tasks.charlm.model import decode, encode_text
from seqtool.tasks.charlm.training import CharLMTask
from seqtool.training.trainer import Trainer, TrainSettings

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "tiny-shakespeare.txt")
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40  # ~2.5 KB
SMALL = ["--hidden", "16", "--layers", "1", "--embed", "8", "--batch", "4", "--seq-len", "16",
         "--seed", "0"]


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(p)


# ---------------------------------------------------------------- data


def test_vocab_encode_split_roundtrip():
    tokens = build_vocab("hello world", "char")
    assert tokens == sorted(set("hello world"))
    ids = encode("hello world", tokens, "char")
    assert ids.dtype == np.int32 and "".join(tokens[i] for i in ids) == "hello world"
    train, val = split_validation(np.arange(100), 0.1)
    assert list(val) == list(range(90, 100)) and len(train) == 90  # the LAST tenth


def test_several_files_concatenate_and_stdin(tmp_path, monkeypatch):
    import io
    import sys

    a, b = _write(tmp_path, "a.txt", "ab"), _write(tmp_path, "b.txt", "cd")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("ef".encode())))
    assert read_text_files([a, "-", b]) == "abefcd"


def test_units_byte_and_word(tmp_path):
    p = _write(tmp_path, "t.txt", b"\xff\x00abc")
    assert list(load_corpus([p], "byte", 0.0).train) == [255, 0, 97, 98, 99]
    c = load_corpus([_write(tmp_path, "w.txt", "the cat, the dog.\n")], "word", 0.0)
    assert decode(c.train, {"unit": "word", "tokens": c.tokens}) == "the cat, the dog.\n"


@pytest.mark.parametrize("data, unit, msg", [
    (b"", "char", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "char", "binary"),
    (b"caf\xe9 au lait\n", "char", "--unit byte"),
    (bytes(range(1, 9)) * 100, "char", "binary"),
])
def test_bad_text_is_a_one_line_error(tmp_path, data, unit, msg):
    with pytest.raises(SeqtoolError, match=msg) as e:
        read_text_files([_write(tmp_path, "x", data)], unit)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- model contract


def test_charlm_contract_names_and_shapes():
    m = CharLM(11, 5, 7, 2, cell="gru", rng=np.random.default_rng(0))
    names = dict((k, v.shape) for k, v in m.named_parameters())
    assert names["embed.weight"] == (11, 5) and names["head.weight"] == (11, 7)
    assert names["head.bias"] == (11,) and "rnn.weight_ih_l0" in names and "rnn.weight_hh_l1" in names
    logits, h = m(np.zeros((3, 2), np.int64))
    assert logits.shape == (3, 2, 11) and h.shape == (2, 2, 7)


def _task(seed, text=TEXT, dropout=0.3):
    corpus = load_corpus_from_text(text)
    rng = np.random.default_rng(seed)
    model = CharLM(len(corpus.tokens), 8, 16, 2, "lstm", dropout, rng=rng)
    return CharLMTask(model, corpus, batch=4, seq_len=16, sample_chars=0), rng


def load_corpus_from_text(text):
    from seqtool.data.text import Corpus

    tokens = build_vocab(text, "char")
    ids = encode(text, tokens, "char")
    train, val = split_validation(ids, 0.1)
    return Corpus("char", tokens, train, val, ids)


def test_resume_continues_exactly(tmp_path):
    """N steps straight == N/2 steps, checkpoint, fresh process state, resume N/2 (with dropout,
    carried LSTM state and a mid-epoch stop)."""
    s = dict(lr=3e-3, val_every=7)
    straight, rng = _task(0)
    Trainer(straight, tmp_path / "a.st", TrainSettings(steps=40, **s), rng=rng).run()
    assert straight.chunks < 40  # crosses an epoch boundary
    half, rng = _task(0)
    Trainer(half, tmp_path / "b.st", TrainSettings(steps=20, **s), rng=rng).run()
    resumed, rng = _task(123)  # other init and RNG: all must come from the checkpoint
    Trainer(resumed, tmp_path / "b.st", TrainSettings(steps=40, **s), rng=rng,
            resume=tmp_path / "b.st").run()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert load_checkpoint(tmp_path / "b.st").training_state["step"] == 40


def test_load_charlm_and_encode(tmp_path):
    task, rng = _task(0, dropout=0.0)
    Trainer(task, tmp_path / "m.st", TrainSettings(steps=3, val_every=100), rng=rng).run()
    model, meta = load(tmp_path / "m.st").model, read_meta(tmp_path / "m.st")
    assert meta["task"] == "charlm" and set(meta["config"]) == {
        "cell", "hidden", "layers", "embed", "dropout", "reset_after", "nonlinearity", "unit"}
    ids = encode_text("hear me", meta["vocab"])
    assert decode(ids, meta["vocab"]) == "hear me"
    for k, v in task.model.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v)
    with pytest.raises(SeqtoolError):
        encode_text("\u20ac", meta["vocab"])


@pytest.mark.parametrize("val_frac", [0.1, 0.4])
def test_validation_costs_at_most_a_twentieth_of_the_training(tmp_path, val_frac):
    from seqtool.tasks import prepare

    text = _write(tmp_path, "t.txt", "".join(chr(97 + i % 26) for i in range(40_000)))
    job = prepare("charlm", [text], str(tmp_path / "m.st"), hidden=16, layers=1, embed=8, batch=4,
                  seq_len=16, val_frac=val_frac, steps=10)
    task, every = job.task, job.settings.val_every
    # a validation scores each validation token once, forward only: about a third of a step's
    # work per token
    validation_in_steps = len(task.corpus.val) / (3 * task.batch * task.seq_len)
    assert every >= min(500, 20 * validation_in_steps)
    assert every >= task.chunks // 3  # and still no more than ~3 a pass over the training text
    assert every <= 500  # the cap: even a large validation text is scored now and then


# ---------------------------------------------------------------- CLI


def test_help_is_fast_to_reach():
    r = CliRunner().invoke(cli, ["train", "charlm", "--help"])
    assert r.exit_code == 0 and "--time-budget" in r.output and "--unit" in r.output


def test_cli_train_charlm_json(tmp_path):
    out = str(tmp_path / "m.st")
    r = CliRunner().invoke(cli, ["train", "charlm", SAMPLE, "-o", out, "--steps", "6",
                                 "--checkpoint-every", "3", "--json", *SMALL])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    events = [x["event"] for x in records]
    assert events.count("checkpoint") == 2 and events[-1] == "done" and "validation" in events
    val = [x for x in records if x["event"] == "validation"][-1]
    assert 0 < val["val_loss"] < 6 and val["step"] == 6
    meta = read_meta(out)
    assert meta["history"]["steps"] == 6 and meta["vocab"]["unit"] == "char"


def test_cli_resume_uses_checkpoint_settings(tmp_path):
    out = str(tmp_path / "m.st")
    text = _write(tmp_path, "t.txt", TEXT)
    r = CliRunner().invoke(cli, ["train", "charlm", text, "-o", out, "--steps", "3", "-q", *SMALL])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["train", "charlm", text, "-o", out, "--steps", "5", "-q",
                                 "--resume", out])
    assert r.exit_code == 0, r.output
    assert read_meta(out)["history"]["steps"] == 5
    r = CliRunner().invoke(cli, ["train", "charlm", text, "-o", out, "--steps", "6", "-q",
                                 "--resume", out, "--hidden", "32"])
    assert r.exit_code == 2 and "differs" in r.stderr


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x02binary\x00" * 50, b"caf\xe9\n" * 100])
def test_cli_bad_input_exit_1_and_output_untouched(tmp_path, data):
    out = tmp_path / "m.st"
    out.write_bytes(b"previous model")  # not a model: --force lets the run get to the data
    r = CliRunner().invoke(cli, ["train", "charlm", _write(tmp_path, "bad.txt", data), "-o",
                                 str(out), "--steps", "2", "--force", *SMALL])
    assert r.exit_code == 1
    assert r.stderr.startswith("seqtool: error:") and r.stderr.count("\n") == 1
    assert out.read_bytes() == b"previous model"


def test_cli_missing_output_dir_fails_before_training(tmp_path):
    r = CliRunner().invoke(cli, ["train", "charlm", SAMPLE, "-o", str(tmp_path / "no" / "m.st"),
                                 "--steps", "2", *SMALL])
    assert r.exit_code == 1 and "does not exist" in r.stderr and r.stderr.count("\n") == 1


def test_cli_ctrl_c_exits_130_with_checkpoint(tmp_path, monkeypatch):
    from seqtool.tasks.charlm import training as charlm_mod

    calls = {"n": 0}
    real = charlm_mod.CharLMTask.loss

    def loss(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(charlm_mod.CharLMTask, "loss", loss)
    out = tmp_path / "m.st"
    r = CliRunner().invoke(cli, ["train", "charlm", SAMPLE, "-o", str(out), "--steps", "50", *SMALL])
    assert r.exit_code == 130
    assert load_checkpoint(out).training_state["step"] == 3


def test_sigkill_never_leaves_a_corrupt_model(tmp_path):
    """Kill -9 a run that checkpoints every step: whatever is at MODEL loads and checks out."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.st"
    proc = subprocess.Popen([sys.executable, "-m", "seqtool.cli.main", "train", "charlm", SAMPLE,
                             "-o", str(out), "--steps", "100000", "--checkpoint-every", "1", "-q",
                             *SMALL], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # let it be in the middle of later writes
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert out.exists()
    ck = load_checkpoint(out)
    assert ck.training_state["step"] >= 1


@pytest.mark.parametrize("extra,hidden,dropout", [([], 128, 0.0), (["--time-budget", "20m"], 256, 0.25),
                                                  (["--time-budget", "1h", "--hidden", "40"], 40, 0.25),
                                                  (["--time-budget", "19m"], 128, 0.0)])
def test_long_time_budget_defaults_to_a_wider_network(tmp_path, extra, hidden, dropout):
    out = str(tmp_path / "m.st")
    text = _write(tmp_path, "t.txt", TEXT)
    r = CliRunner().invoke(cli, ["train", "charlm", text, "-o", out, "--steps", "1", "-q",
                                 "--layers", "1", *extra])
    assert r.exit_code == 0, r.output
    config = read_meta(out)["config"]
    assert (config["hidden"], config["dropout"]) == (hidden, dropout)
