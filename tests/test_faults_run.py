"""Fault suite, using models: sample, predict, eval, info, bench, check and synth-scenes given bad
inputs and absurd or non-finite options, and stdout on a full disk or closed.

{charlm} {seq2seq} {sed} {genre} name the session's tiny models, {wav} {scenes} {gt} {clips}
{text} {pairs} {jsonl} its data; other names are files a case writes into tmp_path first.
"""

import os

import numpy as np
import pytest

from faultkit import assert_clean_error, run, run_fault, snapshot, assert_files_kept, write_wav


def case(id, args, code, *needles, files=None, stdin=None, new_ok=()):
    return pytest.param(args, code, needles, files or {}, stdin, new_ok, id=id)


LATIN1 = "caf\xe9 cr\xe8me\tCAF\xc9\n".encode("latin-1") * 20
GARBAGE_WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x01" * 30
NOTES = {"notes.txt": b"my notes\n"}

CASES = [
    # ---- sample
    case("sample-length-negative", ["sample", "{charlm}", "--length", -1], 2, "--length"),
    case("sample-length-word", ["sample", "{charlm}", "--length", "many"], 2, "--length"),
    case("sample-temperature-0", ["sample", "{charlm}", "--temperature", 0], 2, "--temperature"),
    case("sample-temperature-negative", ["sample", "{charlm}", "--temperature", -1], 2, "--temperature"),
    case("sample-temperature-nan", ["sample", "{charlm}", "--temperature", "nan"], 2, "--temperature"),
    case("sample-top-k-negative", ["sample", "{charlm}", "--top-k", -1], 2, "--top-k"),
    case("sample-prime-outside-vocabulary", ["sample", "{charlm}", "--prime", "\u20ac\u20ac"], 1, "vocabulary"),
    case("sample-extra-argument", ["sample", "{charlm}", "more.txt"], 2, "unexpected extra argument"),
    case("sample-device-cuda", ["sample", "{charlm}", "--device", "cuda"], 1, "cuda"),
    case("sample-seed-negative", ["sample", "{charlm}", "--seed", -1], 2, "--seed"),
    # ---- predict, charlm
    case("predict-charlm-missing-input", ["predict", "{charlm}", "gone.txt"], 1, "gone.txt"),
    case("predict-charlm-latin1-input", ["predict", "{charlm}", "l.txt"], 1, "l.txt", "UTF-8",
         files={"l.txt": LATIN1}),
    case("predict-charlm-directory-input", ["predict", "{charlm}", "."], 1, "directory"),
    case("predict-charlm-beam", ["predict", "{charlm}", "{text}", "--beam", 2], 2, "--beam"),
    case("predict-charlm-threshold", ["predict", "{charlm}", "{text}", "--threshold", 0.5], 2, "--threshold"),
    case("predict-charlm-png", ["predict", "{charlm}", "{text}", "--png", "x.png"], 2, "--png"),
    case("predict-device-unknown", ["predict", "{charlm}", "{text}", "--device", "tpu"], 2, "--device"),
    case("predict-seed-negative", ["predict", "{charlm}", "{text}", "--seed", -1], 2, "--seed"),
    # ---- predict, seq2seq
    case("predict-seq2seq-beam-0", ["predict", "{seq2seq}", "-", "--beam", 0], 2, "--beam", stdin="jump"),
    case("predict-seq2seq-length-penalty-negative", ["predict", "{seq2seq}", "-", "--length-penalty", -1],
         2, "--length-penalty", stdin="jump"),
    case("predict-seq2seq-length-penalty-nan", ["predict", "{seq2seq}", "-", "--length-penalty", "nan",
                                                "--beam", 2], 2, "--length-penalty", stdin="jump"),
    case("predict-seq2seq-max-len-0", ["predict", "{seq2seq}", "-", "--max-len", 0], 2, "--max-len",
         stdin="jump"),
    case("predict-seq2seq-attention-png-is-a-file", ["predict", "{seq2seq}", "-", "--attention-png",
                                                     "notes.txt"], 2, "notes.txt", "is a file", stdin="jump", files=NOTES),
    case("predict-seq2seq-latin1-input", ["predict", "{seq2seq}", "l.txt"], 1, "l.txt", files={"l.txt": LATIN1}),
    case("predict-seq2seq-median-ms", ["predict", "{seq2seq}", "-", "--median-ms", 100], 2, "--median-ms",
         stdin="jump"),
    # ---- predict, sed
    case("predict-sed-empty-wav", ["predict", "{sed}", "e.wav"], 1, "e.wav", files={"e.wav": b""}),
    case("predict-sed-text-as-wav", ["predict", "{sed}", "t.wav"], 1, "t.wav", files={"t.wav": b"hello\n" * 50}),
    case("predict-sed-truncated-wav", ["predict", "{sed}", "g.wav"], 1, "g.wav", files={"g.wav": GARBAGE_WAV}),
    case("predict-sed-nan-samples", ["predict", "{sed}", "nan.wav"], 1, "nan.wav", "NaN"),
    case("predict-sed-missing-file", ["predict", "{sed}", "gone.wav"], 1, "gone.wav"),
    case("predict-sed-binary-stdin", ["predict", "{sed}", "-"], 1, "stdin", stdin=bytes(range(256)) * 8),
    case("predict-sed-threshold-2", ["predict", "{sed}", "{wav}", "--threshold", 2], 2, "threshold"),
    case("predict-sed-threshold-nan", ["predict", "{sed}", "{wav}", "--threshold", "nan"], 2, "threshold"),
    case("predict-sed-threshold-unknown-label", ["predict", "{sed}", "{wav}", "--threshold", "bark=0.5"],
         2, "bark"),
    case("predict-sed-median-ms-negative", ["predict", "{sed}", "{wav}", "--median-ms", -5], 2, "--median-ms"),
    case("predict-sed-median-ms-nan", ["predict", "{sed}", "{wav}", "--median-ms", "nan"], 2, "--median-ms"),
    case("predict-sed-median-ms-inf", ["predict", "{sed}", "{wav}", "--median-ms", "inf"], 2, "--median-ms"),
    case("predict-sed-png-stdout", ["predict", "{sed}", "{wav}", "--png", "-"], 2, "--png"),
    case("predict-sed-png-over-text", ["predict", "{sed}", "{wav}", "--png", "notes.txt"], 2, "notes.txt",
         files=NOTES),
    case("predict-sed-png-missing-dir", ["predict", "{sed}", "{wav}", "--png", "no/dir/r.png"], 1, "does not exist"),
    case("predict-sed-beam", ["predict", "{sed}", "{wav}", "--beam", 2], 2, "--beam"),
    case("predict-sed-folder-without-audio", ["predict", "{sed}", "empty"], 1, "empty"),
    # ---- predict, genre
    case("predict-genre-garbage-midi", ["predict", "{genre}", "x.mid"], 1, "x.mid", files={"x.mid": b"MThd junk"}),
    case("predict-genre-empty-jsonl", ["predict", "{genre}", "e.jsonl"], 1, "e.jsonl", files={"e.jsonl": b""}),
    case("predict-genre-audio-for-score-model", ["predict", "{genre}", "{wav}"], 1, "wav"),
    case("predict-genre-missing", ["predict", "{genre}", "gone.mid"], 1, "gone.mid"),
    case("predict-genre-threshold", ["predict", "{genre}", "{jsonl}", "--threshold", 0.5], 2, "--threshold"),
    # ---- eval
    case("eval-charlm-empty-text", ["eval", "{charlm}", "e.txt"], 1, "e.txt", files={"e.txt": b""}),
    case("eval-charlm-two-files", ["eval", "{charlm}", "{text}", "{text}"], 2, "one TEXT"),
    case("eval-charlm-latin1", ["eval", "{charlm}", "l.txt"], 1, "l.txt", files={"l.txt": LATIN1}),
    case("eval-charlm-missing", ["eval", "{charlm}", "gone.txt"], 1, "gone.txt"),
    case("eval-charlm-multi-ref", ["eval", "{charlm}", "{text}", "--multi-ref"], 2, "--multi-ref"),
    case("eval-seq2seq-no-tabs", ["eval", "{seq2seq}", "n.tsv"], 1, "n.tsv", files={"n.tsv": b"jump twice\n" * 5}),
    case("eval-seq2seq-empty", ["eval", "{seq2seq}", "e.tsv"], 1, "e.tsv", files={"e.tsv": b""}),
    case("eval-seq2seq-latin1", ["eval", "{seq2seq}", "l.tsv"], 1, "l.tsv", files={"l.tsv": LATIN1}),
    case("eval-seq2seq-beam-0", ["eval", "{seq2seq}", "{pairs}", "--beam", 0], 2, "--beam"),
    case("eval-sed-reference-names-missing-audio", ["eval", "{sed}", "{scenes}", "r.tsv"], 1, "r.tsv", "gone.wav",
         files={"r.tsv": b"gone.wav\t0.5\t1.0\tbeep\n"}),
    case("eval-sed-reference-unknown-label", ["eval", "{sed}", "{scenes}", "r.tsv"], 1, "bark",
         files={"r.tsv": b"scene_000.wav\t0.5\t1.0\tbark\n"}),
    case("eval-sed-onset-after-offset", ["eval", "{sed}", "{scenes}", "r.tsv"], 1, "r.tsv",
         files={"r.tsv": b"scene_000.wav\t2.0\t1.0\tbeep\n"}),
    case("eval-sed-reference-matches-no-input", ["eval", "{sed}", "{wav}", "r.tsv"], 1, "r.tsv",
         files={"r.tsv": b"other.wav\t0.5\t1.0\tbeep\n"}),
    case("eval-sed-one-argument", ["eval", "{sed}", "{scenes}"], 2, "REFERENCE"),
    case("eval-sed-median-ms-nan", ["eval", "{sed}", "{scenes}", "{gt}", "--median-ms", "nan"], 2, "--median-ms"),
    case("eval-tables-both-empty", ["eval", "p.tsv", "r.tsv"], 1, "empty", files={"p.tsv": b"", "r.tsv": b""}),
    case("eval-tables-both-stdin", ["eval", "-", "-"], 2, "stdin"),
    case("eval-tables-latin1-reference", ["eval", "{gt}", "l.tsv"], 1, "l.tsv",
         files={"l.tsv": b"a.wav\t0\t1\tcaf\xe9\n"}),
    case("eval-genre-unknown-class", ["eval", "{genre}", "u.jsonl"], 1, "jazz",
         files={"u.jsonl": b'{"id": "a", "label": "jazz", "notes": [[0, 1, 60, 0], [1, 1, 62, 0]]}\n'}),
    case("eval-genre-two-data", ["eval", "{genre}", "{jsonl}", "{jsonl}"], 2, "one DATA"),
    # ---- info
    case("info-json-on-text", ["info", "{text}", "--json"], 1, "not a seqtool model"),
    case("info-stdin", ["info", "-"], 1, "-", stdin=b"hello"),
    case("info-two-models", ["info", "{charlm}", "{sed}"], 2, "unexpected extra argument"),
    # ---- bench
    case("bench-hidden-100000", ["bench", "--hidden", 100000], 1, "GiB", "--hidden 100000"),
    case("bench-batch-1e9", ["bench", "--batch", 10 ** 9], 1, "needs", "this machine has"),
    case("bench-seq-len-1e9", ["bench", "--seq-len", 10 ** 9], 1, "needs", "this machine has"),
    case("bench-layers-1e5", ["bench", "--layers", 10 ** 5, "--hidden", 1024], 1, "needs"),
    case("bench-input-size-1e9", ["bench", "--input-size", 10 ** 9], 1, "needs"),
    case("bench-steps-0", ["bench", "--steps", 0], 2, "--steps"),
    case("bench-warmup-negative", ["bench", "--warmup", -1], 2, "--warmup"),
    case("bench-persistent-on-cpu", ["bench", "--persistent", "on"], 2, "--persistent"),
    case("bench-cell-unknown", ["bench", "--cell", "transformer"], 2, "--cell"),
    case("bench-device-cuda", ["bench", "--device", "cuda"], 1, "cuda"),
    case("bench-seed-negative", ["bench", "--seed", -1, "--hidden", 8, "--steps", 1, "--warmup", 0,
                                 "--seq-len", 4, "--batch", 2], 2, "--seed"),
    # ---- check
    case("check-device-cuda", ["check", "--device", "cuda"], 1, "cuda"),
    case("check-extra-argument", ["check", "now"], 2, "unexpected extra argument"),
    # ---- synth-scenes
    case("synth-duration-1e9", ["synth-scenes", "{clips}", "-o", "out", "--duration", 1e9], 1, "needs", "GiB"),
    case("synth-sr-1e9", ["synth-scenes", "{clips}", "-o", "out", "--sr", 10 ** 9], 2, "--sr"),
    case("synth-duration-nan", ["synth-scenes", "{clips}", "-o", "out", "--duration", "nan"], 2, "--duration"),
    case("synth-duration-inf", ["synth-scenes", "{clips}", "-o", "out", "--duration", "inf"], 2, "--duration"),
    case("synth-duration-0", ["synth-scenes", "{clips}", "-o", "out", "--duration", 0], 2, "--duration"),
    case("synth-scenes-beyond-the-disk", ["synth-scenes", "{clips}", "-o", "out", "-n", 10 ** 7,
                                          "--duration", 600], 1, "on disk"),
    case("synth-missing-clips", ["synth-scenes", "noclips", "-o", "out"], 1, "noclips"),
    case("synth-clips-without-audio", ["synth-scenes", "empty", "-o", "out"], 1, "no audio clips"),
    case("synth-clip-not-audio", ["synth-scenes", "badclips", "-o", "out"], 1, "beep000.wav"),
    case("synth-ebr-word", ["synth-scenes", "{clips}", "-o", "out", "--ebr", "loud"], 2, "--ebr"),
    case("synth-ebr-reversed", ["synth-scenes", "{clips}", "-o", "out", "--ebr", "6:-6"], 2, "LOW is above HIGH"),
    case("synth-background-missing", ["synth-scenes", "{clips}", "-o", "out", "--background", "gone.wav"],
         2, "--background"),
    case("synth-timeline-bad-row", ["synth-scenes", "{clips}", "-o", "out", "--timeline", "tl.txt"], 1,
         "tl.txt", files={"tl.txt": b"0.5 beep\n"}),
    case("synth-timeline-latin1", ["synth-scenes", "{clips}", "-o", "out", "--timeline", "tl.txt"], 1,
         "tl.txt", files={"tl.txt": b"0.5\t1.0\tb\xe9ep\n"}),
    case("synth-timeline-unknown-label", ["synth-scenes", "{clips}", "-o", "out", "--timeline", "tl.txt"], 1,
         "bark", files={"tl.txt": b"0.5\t1.0\tbark\n"}),
    case("synth-cannot-fit-events", ["synth-scenes", "{clips}", "-o", "out", "--duration", 1, "--polyphony", 1,
                                     "--events-per-class", 20], 1, "cannot fit"),
    case("synth-labels-unknown", ["synth-scenes", "{clips}", "-o", "out", "--labels", "bark"], 1, "bark"),
    case("synth-output-is-a-file", ["synth-scenes", "{clips}", "-o", "notes.txt"], 2, "is a file",
         files=NOTES),
    case("synth-events-per-class-0", ["synth-scenes", "{clips}", "-o", "out", "--events-per-class", 0], 2,
         "--events-per-class"),
    case("synth-seed-negative", ["synth-scenes", "{clips}", "-o", "out", "--seed", -1], 2, "--seed"),
]


def _prepare(kit, tmp_path, files):
    (tmp_path / "empty").mkdir()
    (tmp_path / "badclips").mkdir()
    (tmp_path / "badclips" / "beep000.wav").write_bytes(b"not audio\n" * 20)
    from seqtool.data.audio import write_wav as _write

    x = np.zeros(1600, np.float32)
    x[100] = np.nan
    _write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)


def _fill(args, kit):
    names = {k: str(getattr(kit, k)) for k in ("charlm", "seq2seq", "sed", "genre", "wav", "scenes", "gt",
                                               "clips", "text", "pairs", "jsonl")}
    return [a.format(**names) if isinstance(a, str) else a for a in args]


@pytest.mark.parametrize("args,code,needles,files,stdin,new_ok", CASES)
def test_command_fault(kit, tmp_path, args, code, needles, files, stdin, new_ok):
    _prepare(kit, tmp_path, files)
    run_fault(_fill(args, kit), tmp_path, code, *needles, watch=[kit.root], stdin=stdin, new_ok=new_ok)


# ----------------------------------------------------------------------------- stdout


STDOUT_WRITERS = {
    "sample": ["sample", "{charlm}", "--length", 3000, "--seed", 1],
    "sample-json": ["sample", "{charlm}", "--length", 300, "--json"],
    "eval-json": ["eval", "{charlm}", "{text}", "--json"],
    "eval-sed": ["eval", "{sed}", "{scenes}", "{gt}"],
    "predict-charlm": ["predict", "{charlm}", "{text}"],
    "predict-genre": ["predict", "{genre}", "{jsonl}"],
    "info": ["info", "{seq2seq}"],
    "bench-json": ["bench", "--hidden", 8, "--batch", 2, "--seq-len", 4, "--steps", 1, "--warmup", 0, "--json"],
}


@pytest.mark.parametrize("name", sorted(STDOUT_WRITERS))
def test_stdout_on_a_full_disk(kit, tmp_path, name):
    with open("/dev/full", "wb") as full:
        run_fault(_fill(STDOUT_WRITERS[name], kit), tmp_path, 1, "stdout", "No space left",
                  watch=[kit.root], stdout=full)


@pytest.mark.parametrize("name", ["sample", "info", "predict-charlm"])
def test_stdout_closed(kit, tmp_path, name):
    import subprocess

    from faultkit import ENV, SEQTOOL, Result

    args = _fill(STDOUT_WRITERS[name], kit)
    p = subprocess.run(SEQTOOL + [str(a) for a in args], cwd=tmp_path, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, timeout=240,
                       preexec_fn=lambda: os.close(1))
    r = Result(p.returncode, b"", p.stderr.decode(), args)
    assert_clean_error(r, 1, "stdout")


# ----------------------------------------------------------------------------- outcomes to check


def test_eval_tables_with_an_offset_of_1e9_seconds(kit, tmp_path):
    """sed_metrics counted a row per 1 s segment: 82 GiB for an offset of 1e9 s."""
    (tmp_path / "p.tsv").write_text("a.wav\t0\t1000000000\tbeep\n")
    (tmp_path / "r.tsv").write_text("a.wav\t0\t1000000000\tbeep\na.wav\t5\t6\tbuzz\n")
    r = run(["eval", "p.tsv", "r.tsv", "--json"], tmp_path)
    assert r.rc == 0, str(r)
    import json

    m = json.loads(r.stdout)
    seg = m["segment_based"]
    # 1e9 segments of beep found, the one buzz segment missed
    assert seg["recall"] == pytest.approx(1e9 / (1e9 + 1)) and seg["precision"] == 1.0


def test_predict_reports_each_bad_input_and_goes_on(kit, tmp_path):
    (tmp_path / "a.txt").write_text("to be or not\n")
    (tmp_path / "bad.txt").write_bytes(LATIN1)
    (tmp_path / "b.txt").write_text("that is the question\n")
    r = run(["predict", str(kit.charlm), "a.txt", "bad.txt", "gone.txt", "b.txt"], tmp_path)
    assert r.rc == 1, str(r)
    assert len(r.stdout.decode().splitlines()) == 2  # a.txt and b.txt
    errors = [ln for ln in r.err_lines if ln.startswith("seqtool: error:")]
    assert any("bad.txt" in e for e in errors) and any("gone.txt" in e for e in errors), r.stderr
    assert "Traceback" not in r.stderr


def test_predict_strict_stops_at_the_first_bad_input(kit, tmp_path):
    (tmp_path / "a.txt").write_text("to be or not\n")
    (tmp_path / "b.txt").write_text("that is the question\n")
    r = run_fault(["predict", str(kit.charlm), "a.txt", "gone.txt", "b.txt", "--strict"], tmp_path, 1,
                  "gone.txt", watch=[kit.root])
    assert len(r.stdout.decode().splitlines()) == 1


def test_sample_ends_with_a_newline(kit, tmp_path):
    r = run(["sample", str(kit.charlm), "--length", 50, "--seed", 3], tmp_path)
    assert r.rc == 0, str(r)
    assert r.stdout.endswith(b"\n")


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_help_describes_every_task(tmp_path, command):
    r = run([command, "--help"], tmp_path)
    assert r.rc == 0
    text = r.stdout.decode()
    for task in ("charlm:", "seq2seq:", "sed:", "genre:"):
        assert task in text, f"{task} missing from seqtool {command} --help"
