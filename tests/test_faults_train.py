"""Fault suite, training: bad data, absurd and non-finite options, bad outputs, for every task.

Each case runs ``seqtool train TASK`` in a child process on real files in tmp_path (copies of
the session's small data sets, then spoiled), and checks the exit code, the one-line message, no
traceback, and that every file there (and in the session folder) is byte-identical afterwards,
with no model or temporary file left behind.
"""

import shutil

import pytest

from faultkit import run, run_fault

SMALL = {
    "charlm": ["--steps", 2, "--hidden", 8, "--embed", 4, "--layers", 1, "--batch", 4, "--seq-len", 16],
    "seq2seq": ["--steps", 2, "--hidden", 8, "--embed", 4, "--batch", 8],
    "genre": ["--steps", 2, "--hidden", 8, "--layers", 1, "--batch", 4],
    "sed": ["--steps", 2, "--hidden", 8, "--layers", 1, "--seq-len", 32, "--batch", 4,
            "--no-tune-decoding"],
}
DATA = {"charlm": ["t.txt"], "seq2seq": ["p.tsv"], "genre": ["s.jsonl"], "sed": ["scenes", "scenes/gt.tsv"]}


def case(id, task, code, *needles, extra=(), data=None, files=None, stdin=None,
         small=True):
    """One training fault: `files` (name -> bytes, or None to delete) spoil the copied data."""
    # The small sizes first: a later option wins, so a case's own value is the one used.
    args = ["train", task, *(DATA[task] if data is None else data), "-o", "m.model",
            *(SMALL[task] if small else []), *extra]
    return pytest.param(task, args, code, needles, files or {}, stdin, id=f"{task}-{id}")


LATIN1 = "caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 40
BINARY = bytes(range(256)) * 40
GARBAGE_WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x01" * 30

CASES = [
    # ---- charlm: the text
    case("empty-text", "charlm", 1, "t.txt", files={"t.txt": b""}),
    case("binary-text", "charlm", 1, "t.txt", "binary", files={"t.txt": BINARY}),
    case("latin1-text", "charlm", 1, "t.txt", "offset", files={"t.txt": LATIN1}),
    case("one-char-text", "charlm", 1, "too short", files={"t.txt": b"a"}),
    case("missing-text", "charlm", 1, "nothere.txt", data=["nothere.txt"]),
    case("directory-as-text", "charlm", 2, "directory", data=["."]),
    case("empty-stdin", "charlm", 1, "stdin", data=["-"], stdin=b""),
    case("non-utf8-stdin", "charlm", 1, "stdin", data=["-"], stdin=LATIN1),
    case("text-twice-one-missing", "charlm", 1, "gone.txt", data=["t.txt", "gone.txt"]),
    # ---- charlm: the output
    case("output-dir-missing", "charlm", 1, "does not exist", extra=["-o", "no/such/dir/m.model"]),
    case("output-is-a-directory", "charlm", 2, "directory", extra=["-o", "."]),
    case("output-over-the-input", "charlm", 2, "t.txt", extra=["-o", "t.txt"]),
    case("output-over-a-text-file", "charlm", 2, "notes.txt", extra=["-o", "notes.txt"],
         files={"notes.txt": b"my notes\n"}),
    # ---- charlm: sizes and numbers
    case("hidden-100000", "charlm", 1, "GiB", "hidden", extra=["--hidden", 100000]),
    case("embed-1e9", "charlm", 1, "GiB", extra=["--embed", 10 ** 9]),
    case("layers-1e6", "charlm", 1, "GiB", extra=["--layers", 10 ** 6, "--hidden", 512]),
    case("hidden-0", "charlm", 2, "--hidden", extra=["--hidden", 0]),
    case("hidden-negative", "charlm", 2, "--hidden", extra=["--hidden", -8]),
    case("hidden-not-a-number", "charlm", 2, "--hidden", extra=["--hidden", "lots"]),
    case("layers-0", "charlm", 2, "--layers", extra=["--layers", 0]),
    case("embed-0", "charlm", 2, "--embed", extra=["--embed", 0]),
    case("lr-0", "charlm", 2, "--lr", extra=["--lr", 0]),
    case("lr-negative", "charlm", 2, "--lr", extra=["--lr", -0.1]),
    case("lr-inf", "charlm", 2, "--lr", extra=["--lr", "inf"]),
    case("lr-nan", "charlm", 2, "--lr", extra=["--lr", "nan"]),
    case("clip-norm-nan", "charlm", 2, "--clip-norm", extra=["--clip-norm", "nan"]),
    case("clip-norm-negative", "charlm", 2, "--clip-norm", extra=["--clip-norm", -1]),
    case("dropout-1", "charlm", 2, "--dropout", extra=["--dropout", 1]),
    case("dropout-nan", "charlm", 2, "--dropout", extra=["--dropout", "nan"]),
    case("val-frac-1", "charlm", 2, "--val-frac", extra=["--val-frac", 1]),
    case("val-frac-nan", "charlm", 2, "--val-frac", extra=["--val-frac", "nan"]),
    case("batch-0", "charlm", 2, "--batch", extra=["--batch", 0]),
    case("seq-len-0", "charlm", 2, "--seq-len", extra=["--seq-len", 0]),
    case("epochs-0", "charlm", 2, "--epochs", extra=["--epochs", 0]),
    case("steps-negative", "charlm", 2, "--steps", extra=["--steps", -1], small=False),
    case("checkpoint-every-0", "charlm", 2, "--checkpoint-every", extra=["--checkpoint-every", 0]),
    case("patience-0", "charlm", 2, "--patience", extra=["--patience", 0]),
    case("time-budget-word", "charlm", 2, "duration", extra=["--time-budget", "soon"]),
    case("time-budget-inf", "charlm", 2, "duration", extra=["--time-budget", "inf"]),
    case("time-budget-nan", "charlm", 2, "duration", extra=["--time-budget", "nan"]),
    case("time-budget-negative", "charlm", 2, "duration", extra=["--time-budget", "-5"]),
    case("seed-negative", "charlm", 2, "--seed", extra=["--seed", -1]),
    case("seed-word", "charlm", 2, "--seed", extra=["--seed", "abc"]),
    case("cell-unknown", "charlm", 2, "--cell", extra=["--cell", "transformer"]),
    case("optimizer-unknown", "charlm", 2, "--optimizer", extra=["--optimizer", "lbfgs"]),
    case("unit-unknown", "charlm", 2, "--unit", extra=["--unit", "syllable"]),
    case("device-cuda-without-gpu", "charlm", 1, "cuda", extra=["--device", "cuda"]),
    case("device-unknown", "charlm", 2, "--device", extra=["--device", "tpu"]),
    case("bidirectional-lm", "charlm", 2, "bidirectional", extra=["--bidirectional"]),
    case("patience-without-validation", "charlm", 2, "--patience",
         extra=["--patience", 2, "--val-frac", 0]),
    # ---- charlm: --resume
    case("resume-missing", "charlm", 2, "--resume", extra=["--resume", "gone.model"]),
    case("resume-from-text", "charlm", 1, "not a seqtool model", extra=["--resume", "t.txt"]),
    case("resume-other-task", "charlm", 1, "seq2seq", extra=["--resume", "other.model"]),
    case("resume-different-hidden", "charlm", 2, "--hidden",
         extra=["--resume", "lm.model", "--hidden", 16], small=False),
    # ---- seq2seq
    case("empty-tsv", "seq2seq", 1, "p.tsv", files={"p.tsv": b""}),
    case("no-tabs", "seq2seq", 1, "p.tsv", files={"p.tsv": b"jump twice JUMP JUMP\n" * 20}),
    case("latin1-tsv", "seq2seq", 1, "p.tsv", "line 1", files={"p.tsv": b"caf\xe9\tCAF\xc9\n" * 20}),
    case("binary-tsv", "seq2seq", 1, "p.tsv", files={"p.tsv": BINARY}),
    case("strict-bad-line", "seq2seq", 1, "line 3", extra=["--strict"],
         files={"p.tsv": b"a b\tA B\nc d\tC D\nno tab here\ne f\tE F\n"}),
    case("only-empty-sides", "seq2seq", 1, "p.tsv", files={"p.tsv": b"\tA\nb\t\n \t \n"}),
    case("seq-len-given", "seq2seq", 2, "--seq-len", extra=["--seq-len", 10]),
    case("attention-unknown", "seq2seq", 2, "--attention", extra=["--attention", "bahdanau2"]),
    case("teacher-forcing-2", "seq2seq", 2, "--teacher-forcing", extra=["--teacher-forcing", 2]),
    case("hidden-100000", "seq2seq", 1, "GiB", extra=["--hidden", 100000]),
    case("missing-tsv", "seq2seq", 1, "gone.tsv", data=["gone.tsv"]),
    case("output-over-the-input", "seq2seq", 2, "p.tsv", extra=["-o", "p.tsv"]),
    case("seed-negative", "seq2seq", 2, "--seed", extra=["--seed", -1]),
    # ---- genre
    case("empty-jsonl", "genre", 1, "s.jsonl", files={"s.jsonl": b""}),
    case("latin1-jsonl", "genre", 1, "s.jsonl", files={"s.jsonl": LATIN1}),
    case("all-records-malformed", "genre", 1, "s.jsonl", files={"s.jsonl": b"{not json\n[1, 2]\n"}),
    case("one-class-only", "genre", 1, "at least 2", files={"s.jsonl": None}),
    case("empty-folder", "genre", 1, "empty", data=["emptydir"]),
    case("folder-one-class", "genre", 1, "oneclass", data=["oneclass"]),
    case("list-of-missing-files", "genre", 1, "list.txt", data=["list.txt"],
         files={"list.txt": b"gone1.mid\tpop\ngone2.mid\trock\n"}),
    case("garbage-midi-files", "genre", 1, "midi", data=["badmidi"]),
    case("label-regex-invalid", "genre", 2, "--label-regex", data=["list.txt"],
         extra=["--label-regex", "("], files={"list.txt": b"a.mid\n"}),
    case("audio-options-on-scores", "genre", 2, "audio", extra=["--sr", 8000]),
    case("transpose-30", "genre", 2, "--transpose", extra=["--transpose", 30]),
    case("pool-unknown", "genre", 2, "--pool", extra=["--pool", "max"]),
    case("voices-unknown", "genre", 2, "--voices", extra=["--voices", "bass"]),
    case("hidden-100000", "genre", 1, "GiB", extra=["--hidden", 100000]),
    # ---- sed
    case("annotation-names-missing-file", "sed", 1, "gt.tsv", "nothere.wav",
         files={"scenes/gt.tsv": b"nothere.wav\t0.5\t1.0\tbeep\n"}),
    case("onset-after-offset", "sed", 1, "gt.tsv", files={"scenes/gt.tsv": b"scene_000.wav\t2.0\t1.0\tbeep\n"}),
    case("empty-annotations", "sed", 1, "gt.tsv", files={"scenes/gt.tsv": b""}),
    case("latin1-annotations", "sed", 1, "gt.tsv", files={"scenes/gt.tsv": LATIN1}),
    case("binary-annotations", "sed", 1, "gt.tsv", files={"scenes/gt.tsv": BINARY}),
    case("non-numeric-onset", "sed", 1, "gt.tsv", files={"scenes/gt.tsv": b"scene_000.wav\tsoon\t1.0\tbeep\n"}),
    case("empty-wav", "sed", 1, "scene_000.wav", files={"scenes/scene_000.wav": b""}),
    case("truncated-wav", "sed", 1, "scene_000.wav", files={"scenes/scene_000.wav": GARBAGE_WAV}),
    case("text-named-wav", "sed", 1, "scene_000.wav", files={"scenes/scene_000.wav": b"hello\n" * 100}),
    case("audio-dir-missing", "sed", 1, "nowhere", data=["nowhere", "scenes/gt.tsv"]),
    case("win-ms-tiny", "sed", 2, "--win-ms", extra=["--win-ms", 0.01]),
    case("win-ms-nan", "sed", 2, "--win-ms", extra=["--win-ms", "nan"]),
    case("hop-ms-inf", "sed", 2, "--hop-ms", extra=["--hop-ms", "inf"]),
    case("fmin-above-fmax", "sed", 2, "--fmin", extra=["--fmin", 9000, "--fmax", 100]),
    case("fmax-above-nyquist", "sed", 2, "--fmax", extra=["--fmax", 20000]),
    case("hop-longer-than-every-file", "sed", 2, "--hop-ms", extra=["--hop-ms", 100000]),
    case("sr-999", "sed", 2, "--sr", extra=["--sr", 999]),
    case("n-mels-0", "sed", 2, "--n-mels", extra=["--n-mels", 0]),
    case("hidden-100000", "sed", 1, "GiB", extra=["--hidden", 100000]),
]


def _prepare(kit, tmp_path, task, files):
    shutil.copy(kit.text, tmp_path / "t.txt")
    shutil.copy(kit.pairs, tmp_path / "p.tsv")
    shutil.copy(kit.charlm, tmp_path / "lm.model")
    shutil.copy(kit.seq2seq, tmp_path / "other.model")
    if task == "genre":
        lines = (tmp_path / "s.jsonl")
        lines.write_bytes(kit.jsonl.read_bytes())
        (tmp_path / "emptydir").mkdir()
        (tmp_path / "oneclass" / "pop").mkdir(parents=True)
        (tmp_path / "badmidi" / "pop").mkdir(parents=True)
        (tmp_path / "badmidi" / "rock").mkdir(parents=True)
        for cls in ("pop", "rock"):
            (tmp_path / "badmidi" / cls / "x.mid").write_bytes(b"MThd garbage")
        (tmp_path / "oneclass" / "pop" / "a.mid").write_bytes(b"MThd garbage")
        if "s.jsonl" in files and files["s.jsonl"] is None:  # one class only
            files = {**files, "s.jsonl": b"\n".join(
                ln for ln in kit.jsonl.read_bytes().splitlines() if b'"label": "steps"' in ln)}
    if task == "sed":
        shutil.copytree(kit.scenes, tmp_path / "scenes")
        shutil.move(tmp_path / "scenes" / "ground_truth.tsv", tmp_path / "scenes" / "gt.tsv")
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)


@pytest.mark.parametrize("task,args,code,needles,files,stdin", CASES)
def test_training_fault(kit, tmp_path, task, args, code, needles, files, stdin):
    _prepare(kit, tmp_path, task, files)
    run_fault(args, tmp_path, code, *needles, watch=[kit.root], stdin=stdin)


# ----------------------------------------------------------------------------- accepted with a word


def test_seq2seq_three_column_tsv_warns_naming_the_line(kit, tmp_path):
    rows = kit.pairs.read_text().splitlines()
    rows[4] += "\tCC-BY 2.0 (France) Attribution: tatoeba.org"
    (tmp_path / "p.tsv").write_text("\n".join(rows) + "\n")
    r = run(["train", "seq2seq", "p.tsv", "-o", "m.model", *SMALL["seq2seq"]], tmp_path)
    assert r.rc == 0, str(r)
    warnings = [ln for ln in r.err_lines if ln.startswith("seqtool: warning:")]
    assert any("line 5" in w and "column" in w for w in warnings), r.stderr
    assert (tmp_path / "m.model").is_file()


@pytest.mark.parametrize("strict", [False, True])
def test_genre_malformed_jsonl_record(kit, tmp_path, strict):
    good = kit.jsonl.read_bytes()
    (tmp_path / "s.jsonl").write_bytes(b'{"id": "x", "label": "steps", "notes": [[0, 1\n' + good)
    args = ["train", "genre", "s.jsonl", "-o", "m.model", *SMALL["genre"]] + (["--strict"] if strict else [])
    if strict:
        run_fault(args, tmp_path, 1, "s.jsonl:1", watch=[kit.root])
        return
    r = run(args, tmp_path)
    assert r.rc == 0, str(r)
    assert any(ln.startswith("seqtool: warning:") and "s.jsonl:1" in ln for ln in r.err_lines), r.stderr
    assert (tmp_path / "m.model").is_file()


def test_epochs_and_steps_together_say_which_applies(kit, tmp_path):
    shutil.copy(kit.text, tmp_path / "t.txt")
    args = ["train", "charlm", "t.txt", "-o", "m.model", *SMALL["charlm"], "--epochs", 5]
    r = run(args, tmp_path)
    assert r.rc == 0, str(r)
    assert any("--steps" in ln and "--epochs" in ln for ln in r.err_lines), r.stderr


def test_training_messages_are_not_python_dicts(kit, tmp_path):
    shutil.copy(kit.text, tmp_path / "t.txt")
    r = run(["train", "charlm", "t.txt", "-o", "m.model", *SMALL["charlm"]], tmp_path)
    assert r.rc == 0, str(r)
    assert not any("{'" in ln for ln in r.err_lines), r.stderr


def test_force_replaces_a_file_that_is_not_a_model_and_nothing_else(kit, tmp_path):
    shutil.copy(kit.text, tmp_path / "t.txt")
    (tmp_path / "notes.txt").write_text("my notes\n")
    r = run(["train", "charlm", "t.txt", "-o", "notes.txt", "--force", *SMALL["charlm"]], tmp_path)
    assert r.rc == 0, str(r)
    from seqtool.io.modelfile import read_meta

    assert read_meta(tmp_path / "notes.txt")["task"] == "charlm"  # replaced, as asked
    # --force never makes an input an output
    run_fault(["train", "charlm", "t.txt", "-o", "t.txt", "--force", *SMALL["charlm"]], tmp_path, 2,
              "also an input", watch=[kit.root])
