"""seq2seq: pairs reader, tokens, attention and cell ops (gradchecks), the model against the
whole-sequence kernels, greedy / beam search against exhaustive search, and the CLI end to end."""

import itertools
import json
import os
import random
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.core.autograd import no_grad
from seqtool.cli.main import cli
from seqtool.data.pairs import read_pairs
from seqtool.errors import SeqtoolError
from seqtool.diagnostics.gradcheck import gradcheck
from seqtool.core.losses import cross_entropy
from seqtool.io.modelfile import load_model
from seqtool.tasks.seq2seq import EOS, PAD, SOS, Seq2Seq, Vocab, detokenize, load_seq2seq, tokenize

SYMBOLS = "a b c d e f".split()
SCAN = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "scan")
TINY = ["--hidden", "32", "--embed", "16", "--batch", "16", "--lr", "0.01", "--dropout", "0",
        "--seed", "0"]


def _reverse_pairs(n, seed):
    r = random.Random(seed)
    lines = []
    for _ in range(n):
        s = [r.choice(SYMBOLS) for _ in range(r.randint(2, 6))]
        lines.append(" ".join(s) + "\t" + " ".join(reversed(s)))
    return lines


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- data and tokens


def test_read_pairs_counts_bad_lines_with_their_numbers(tmp_path):
    p = _write(tmp_path / "p.tsv", ["a b\tB A", "no tab here", "", "x\t ", "\ty", "c\tC\textra column"])
    warnings = []
    pairs = read_pairs(p, warn=warnings.append)
    assert pairs.sources == ["a b", "c"] and pairs.targets == ["B A", "C"]
    assert pairs.line_numbers == [1, 6]
    assert pairs.bad_count == 3 and pairs.bad_lines == [2, 4, 5]  # the blank line 3 is not bad
    assert "3 bad lines" in pairs.bad_message() and "lines 2, 4, 5" in pairs.bad_message()
    # the third column of line 6 is dropped with a word, not silently
    assert pairs.extra_count == 1 and pairs.extra_lines == [6]
    assert warnings == [pairs.extra_message()] and "line 6" in warnings[0]
    assert pairs.notes() == [pairs.bad_message(), pairs.extra_message()]
    rev = read_pairs(p, reverse=True, warn=warnings.append)
    assert rev.sources == ["B A", "C"] and rev.targets == ["a b", "c"]
    with pytest.raises(SeqtoolError, match=r"p\.tsv line 2: no tab"):
        read_pairs(p, strict=True)
    with pytest.raises(SeqtoolError, match="no source<TAB>target pairs"):
        read_pairs(_write(tmp_path / "bad.tsv", ["nothing", "at all"]))
    (tmp_path / "latin1.tsv").write_bytes(b"ok\tfine\ncaf\xe9\tx\n")
    with pytest.raises(SeqtoolError, match=r"latin1\.tsv line 2 is not valid UTF-8"):
        read_pairs(str(tmp_path / "latin1.tsv"))


def test_word_tokens_keep_spacing_and_char_tokens():
    for text in ["Run!", "Va !", "I'm home.", "Tom, come here!", "jump twice"]:
        assert detokenize(tokenize(text, "word"), "word") == text
        assert detokenize(tokenize(text, "char"), "char") == text
    assert tokenize("Run!", "word") == ["Run", "\uffed!"]
    assert tokenize("Va !", "word") == ["Va", "!"]
    assert detokenize(tokenize("a   b\tc", "word"), "word") == "a b c"  # runs of space -> one


def test_vocab_min_count_maps_rare_tokens_to_unk():
    v = Vocab.build([["x", "y", "x"], ["x", "z", "y"]], min_count=2)
    assert v.tokens[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"] and v.tokens[4:] == ["x", "y"]
    assert v.encode(["y", "z", "x"]).tolist() == [5, 1, 4]


# ---------------------------------------------------------------- the model


def _tiny_model(attention, cell, bidirectional=False, layers=1, dtype=np.float64, seed=0,
                input_feeding=True):
    m = Seq2Seq(7, 6, embed=3, hidden=4, layers=layers, cell=cell, dropout=0.0,
                bidirectional=bidirectional, attention=attention, input_feeding=input_feeding,
                rng=np.random.default_rng(seed))
    for p in m.parameters():
        p.data = p.data.astype(dtype)
    return m


def _tiny_batch(rng):
    lengths = np.array([4, 2, 3])
    src = np.full((4, 3), PAD)
    for i, n in enumerate(lengths):
        src[:n, i] = rng.integers(4, 7, n)
    tgt = rng.integers(3, 6, (3, 3))
    tgt_in = np.concatenate([np.full((1, 3), SOS), tgt[:-1]])
    tgt[2, 1] = PAD  # a padded target position is ignored by the loss
    return src, lengths, tgt_in, tgt


@pytest.mark.parametrize("attention,cell,bidirectional,layers,feeding", [
    ("general", "lstm", True, 2, True), ("additive", "gru", False, 1, True),
    ("dot", "rnn", False, 1, True), ("none", "lstm", True, 1, False),
    ("general", "lstm", True, 2, False), ("additive", "gru", False, 1, False)])
def test_model_gradcheck(attention, cell, bidirectional, layers, feeding):
    """Every parameter of the whole model, through encoder kernels, steps and attention."""
    m = _tiny_model(attention, cell, bidirectional, layers, input_feeding=feeding)
    src, lengths, tgt_in, tgt = _tiny_batch(np.random.default_rng(3))
    params = list(m.parameters())
    ok, err, details = gradcheck(
        lambda *ps: cross_entropy(m(src, lengths, tgt_in), tgt, ignore_index=PAD), params,
        rtol=1e-4, atol=1e-6)
    assert ok, (err, [d for d in details if not d.get("ok", True)][:2])


@pytest.mark.parametrize("cell,attention", [("lstm", "none"), ("gru", "none"), ("rnn", "none"),
                                            ("lstm", "general"), ("gru", "additive")])
def test_decoder_steps_match_whole_sequence_kernel(cell, attention):
    """Without input feeding, training runs one whole-sequence kernel call (and attention over
    all steps at once); decoding runs cell steps one at a time."""
    m = _tiny_model(attention, cell, layers=2, input_feeding=False).eval()
    assert not m.input_feed
    src, lengths, tgt_in, _ = _tiny_batch(np.random.default_rng(4))
    with no_grad():
        whole = m(src, lengths, tgt_in).data
        memory, state = m.encode(src, lengths)
        steps = []
        for t in range(len(tgt_in)):
            out, state, _ = m.step(m.tgt_embed(tgt_in[t]), None, state, memory)
            steps.append(m.out(out).data)
    np.testing.assert_allclose(np.stack(steps), whole, rtol=1e-9, atol=1e-10)


def test_teacher_forcing_below_one_feeds_predictions():
    m = _tiny_model("general", "lstm")
    src, lengths, tgt_in, _ = _tiny_batch(np.random.default_rng(5))
    with no_grad():
        forced = m(src, lengths, tgt_in, 1.0).data
        free = m(src, lengths, tgt_in, 0.0, np.random.default_rng(0)).data
        # With ratio 0 every input after <sos> is the previous argmax: rebuild it by hand.
        tokens = np.concatenate([tgt_in[:1], free.argmax(axis=2)[:-1]])
        again = m(src, lengths, tokens, 1.0).data
    np.testing.assert_allclose(free[0], forced[0])
    np.testing.assert_allclose(free, again, rtol=1e-10)
    assert not np.allclose(free, forced)


# ---------------------------------------------------------------- training and decoding (CLI)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A reversal model (a b c -> c b a) trained for 200 steps, and held-out pairs."""
    d = tmp_path_factory.mktemp("s2s")
    lines = _reverse_pairs(600, seed=0)
    lines.insert(2, "a bad line without a tab")
    lines.insert(6, "b c\t")
    data = _write(d / "rev.tsv", lines)
    test = _write(d / "test.tsv", _reverse_pairs(100, seed=1))
    model = str(d / "rev.model")
    r = CliRunner().invoke(cli, ["train", "seq2seq", data, "-o", model, "--steps", "200", *TINY])
    assert r.exit_code == 0, r.output
    assert "skipped 2 bad lines" in r.stderr and "lines 3, 7" in r.stderr
    return {"dir": d, "data": data, "test": test, "model": model}


def _json(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_trained_model_translates_held_out_pairs(trained):
    r = CliRunner().invoke(cli, ["eval", trained["model"], trained["test"], "--json"])
    assert r.exit_code == 0, r.output
    (rec,) = _json(r)
    assert rec["exact"] >= 0.9 and rec["bleu"] >= 85  # untrained: ~0
    assert sum(b["pairs"] for b in rec["by_source_length"]) == 100


def test_eval_bleu_equals_sacrebleu_command(trained, tmp_path):
    pytest.importorskip("sacrebleu")
    pairs = read_pairs(trained["test"])
    src = _write(tmp_path / "src.txt", pairs.sources)
    ref = _write(tmp_path / "ref.txt", pairs.targets)
    r = CliRunner().invoke(cli, ["predict", trained["model"], src])
    assert r.exit_code == 0, r.output
    hyp = tmp_path / "hyp.txt"
    hyp.write_text(r.stdout, encoding="utf-8")
    assert len(r.stdout.splitlines()) == len(pairs)
    cmd = subprocess.run([sys.executable, "-m", "sacrebleu", ref, "-i", str(hyp), "-b", "-w", "4"],
                         capture_output=True, text=True, check=True)
    r = CliRunner().invoke(cli, ["eval", trained["model"], trained["test"], "--json"])
    assert abs(_json(r)[0]["bleu"] - float(cmd.stdout)) < 0.006  # eval rounds to 2 decimals


def test_multi_ref_eval_scores_each_source_once_against_all_its_targets(trained, tmp_path):
    sacrebleu = pytest.importorskip("sacrebleu")
    pairs = read_pairs(trained["test"])
    first = dict(zip(pairs.sources[::-1], pairs.targets[::-1]))  # one target per distinct source
    sources = list(dict.fromkeys(pairs.sources))[:30]
    targets = [first[s] for s in sources]
    # every third source also appears with a wrong second target, and once more with a third
    lines = [f"{s}\t{t}" for s, t in zip(sources, targets)]
    lines += [f"{s}\t{t} a" for s, t in list(zip(sources, targets))[::3]]
    lines += [f"{s}\tb" for s in sources[::6]]
    data = _write(tmp_path / "multi.tsv", lines)
    r = CliRunner().invoke(cli, ["predict", trained["model"], _write(tmp_path / "s.txt", sources)])
    hyps = r.stdout.splitlines()
    refs = {s: [t] for s, t in zip(sources, targets)}
    for s, t in list(zip(sources, targets))[::3]:
        refs[s].append(t + " a")
    for s in sources[::6]:
        refs[s].append("b")
    streams = [[refs[s][k] if k < len(refs[s]) else None for s in sources] for k in range(3)]
    want = sacrebleu.BLEU().corpus_score(hyps, streams).score
    r = CliRunner().invoke(cli, ["eval", trained["model"], data, "--multi-ref", "--json"])
    assert r.exit_code == 0, r.output
    (rec,) = _json(r)
    assert rec["sources"] == 30 and rec["pairs"] == len(lines)
    assert rec["references"] == len(lines)  # no source has the same target twice here
    assert sum(b["sources"] for b in rec["by_source_length"]) == 30
    assert abs(rec["bleu"] - want) < 0.006
    assert rec["exact"] == round(float(np.mean([h in refs[s] for h, s in zip(hyps, sources)])), 4)
    assert "nrefs:var" in rec["signature"]
    # one reference per line: the same hypotheses scored line by line give a lower BLEU
    r = CliRunner().invoke(cli, ["eval", trained["model"], data, "--json"])
    assert _json(r)[0]["bleu"] < rec["bleu"]


def test_batched_greedy_equals_one_at_a_time(trained):
    tr = load_seq2seq(trained["model"])
    sources = [tr.source_ids(s)[1] for s in ["a b", "f e d c b a", "c", "d d e", "b a f e"]]
    batch = tr.greedy(sources)
    for s, b in zip(sources, batch):
        (one,) = tr.greedy([s])
        assert one.ids == b.ids
        assert abs(one.score - b.score) < 1e-4
        np.testing.assert_allclose(one.attention, b.attention, atol=1e-5)
        assert b.attention.shape == (len(b.ids) + 1, len(s))  # one row per token and <eos>


def test_beam_search_is_exhaustive_with_a_wide_beam(trained):
    """With a beam wider than all prefixes, beam search must find the best-scoring output of at
    most 3 tokens; checked against scoring every such output by teacher forcing."""
    tr = load_seq2seq(trained["model"])
    src = tr.source_ids("c a e")[1]
    V = len(tr.tgt)
    seqs = [list(p) + [EOS] for n in range(3) for p in itertools.product(
        [v for v in range(V) if v != EOS], repeat=n)]
    seqs += [list(p) for p in itertools.product([v for v in range(V) if v != EOS], repeat=3)]
    N = len(seqs)
    tgt_in = np.array([[SOS] + s[:-1] for s in [s + [PAD] * (3 - len(s)) for s in seqs]]).T
    with no_grad():
        logits = tr.model(np.repeat(src[:, None], N, axis=1), np.full(N, len(src)), tgt_in).data
    logp = logits - np.log(np.exp(logits - logits.max(2, keepdims=True)).sum(2, keepdims=True)) \
        - logits.max(2, keepdims=True)
    scores = np.array([sum(logp[t, i, tok] for t, tok in enumerate(s)) for i, s in enumerate(seqs)])
    for alpha in (0.0, 1.0):
        norm = scores / np.array([len(s) for s in seqs]) ** alpha
        best = seqs[int(norm.argmax())]
        hyp = tr.beam(src, beam=1000, length_penalty=alpha, max_len=3)
        assert hyp.ids == [t for t in best if t != EOS]
        assert abs(hyp.score - scores[int(norm.argmax())]) < 1e-4
    greedy = tr.greedy([src])[0]
    one = tr.beam(src, beam=1)
    assert one.ids == greedy.ids and abs(one.score - greedy.score) < 1e-4


def test_predict_streams_line_by_line(trained):
    """Each answer arrives before the next line is written (a pipe stays open meanwhile)."""
    proc = subprocess.Popen([sys.executable, "-m", "seqtool.cli.main", "predict", trained["model"], "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    try:
        answers = []
        for line in ["a b c", "d e", "f a"]:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            got = []
            reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()))
            reader.start()
            reader.join(timeout=60)
            assert got, f"no answer to {line!r} while stdin was still open"
            answers.append(got[0].strip())
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert answers == ["c b a", "e d", "a f"]
    finally:
        proc.kill()


def _png_size(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # width, height from IHDR


def test_attention_map_on_stderr_and_png(trained, tmp_path):
    out_dir = tmp_path / "maps"
    r = CliRunner().invoke(cli, ["predict", trained["model"], "-", "--show-attention",
                                 "--attention-png", str(out_dir)], input="a b c\n\nd e\n")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["c b a", "", "e d"]  # an empty line gives an empty line
    lines = r.stderr.splitlines()
    head = lines.index("<stdin> line 1:")
    assert lines[head + 1].split("|")[1].split() == ["a", "b", "c"]
    rows = lines[head + 2:head + 6]
    assert [row.split("|")[0].strip() for row in rows] == ["c", "b", "a", "<eos>"]
    # reversal attends to the mirrored source word: the darkest cell of row 1 is under "c"
    cells = [row.split(" | ", 1)[1] for row in rows]  # each cell 2 wide, one space apart
    assert cells[0][6:8] == "\u2588\u2588" or cells[0][6:8] == "\u2593\u2593"
    assert sorted(os.listdir(out_dir)) == ["attention-000001.png", "attention-000003.png"]
    assert _png_size(out_dir / "attention-000001.png") == (3 * 16, 4 * 16)  # 3 source x 4 rows


def test_errors_and_usage(trained, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "seq2seq", trained["data"], "-o", str(tmp_path / "m"), "--strict",
                            "--steps", "1"])
    assert r.exit_code == 1 and "rev.tsv line 3: no tab" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(cli, ["train", "seq2seq", trained["data"], "-o", str(tmp_path / "m"),
                            "--seq-len", "5", "--steps", "1"])
    assert r.exit_code == 2 and "--seq-len" in r.stderr
    r = runner.invoke(cli, ["predict", trained["model"], "--threshold", "0.5"], input="a\n")
    assert r.exit_code == 2 and "--threshold does not apply to seq2seq" in r.stderr
    r = runner.invoke(cli, ["eval", trained["model"], trained["test"], "--show-attention"])
    assert r.exit_code == 2
    r = runner.invoke(cli, ["train", "seq2seq", "-", "-o", str(tmp_path / "m"), "--steps", "1"],
                      input="just words\nno tabs\n")
    assert r.exit_code == 1 and "<stdin> has no source<TAB>target pairs" in r.stderr


def test_no_attention_model_from_stdin_and_reverse(trained, tmp_path):
    """--reverse swaps the columns, and eval reads the file the same way the model was trained."""
    flipped = [f"{t}\t{s}" for s, t in (line.split("\t") for line in _reverse_pairs(300, seed=2))]
    model = str(tmp_path / "none.model")
    r = CliRunner().invoke(cli, ["train", "seq2seq", "-", "-o", model, "--attention", "none",
                                 "--reverse", "--steps", "30", "--teacher-forcing", "0.5",
                                 *TINY], input="".join(line + "\n" for line in flipped))
    assert r.exit_code == 0, r.output
    meta = load_model(model)[1]
    assert meta["config"]["attention"] == "none" and meta["data_options"]["reverse"] is True
    test = _write(tmp_path / "flipped.tsv", flipped[:50])
    r = CliRunner().invoke(cli, ["eval", model, test, "--json"])
    assert r.exit_code == 0 and _json(r)[0]["pairs"] == 50
    r = CliRunner().invoke(cli, ["predict", model, "-", "--show-attention"], input="a b\n")
    assert r.exit_code == 2 and "no attention" in r.stderr


def test_no_input_feeding_trains_decodes_and_is_kept_for_resume(trained, tmp_path):
    model = str(tmp_path / "fast.model")
    r = CliRunner().invoke(cli, ["train", "seq2seq", trained["data"], "-o", model, "--steps", "150",
                                 "--no-input-feeding", *TINY])
    assert r.exit_code == 0, r.output
    config = load_model(model)[1]["config"]
    assert config["attention"] == "general" and config["input_feeding"] is False
    r = CliRunner().invoke(cli, ["eval", model, trained["test"], "--json"])
    assert r.exit_code == 0 and _json(r)[0]["exact"] >= 0.5  # it learned to reverse (untrained: ~0)
    r = CliRunner().invoke(cli, ["train", "seq2seq", trained["data"], "-o", model, "--resume", model,
                                 "--steps", "151", "--input-feeding", *TINY])
    assert r.exit_code == 2 and "--input-feeding True differs from the checkpoint's False" in r.stderr


def test_files_from_before_input_feeding_was_an_option_keep_it_on(trained, tmp_path):
    from seqtool.io.modelfile import save_model
    from seqtool.tasks.seq2seq import load_seq2seq

    model = str(tmp_path / "old.model")
    r = CliRunner().invoke(cli, ["train", "seq2seq", trained["data"], "-o", model, "--steps", "2",
                                 "--input-feeding", *TINY])
    assert r.exit_code == 0, r.output
    arrays, meta = load_model(model)
    del meta["config"]["input_feeding"]  # as written before the option existed
    save_model(model, arrays, meta)
    assert load_seq2seq(model).model.input_feed is True
    r = CliRunner().invoke(cli, ["train", "seq2seq", trained["data"], "-o", model, "--resume", model,
                                 "--steps", "3", "--input-feeding", *TINY])
    assert r.exit_code == 0, r.output  # the checkpoint's implicit setting, not "differs from None"
    assert load_model(model)[1]["config"]["input_feeding"] is True
    r = CliRunner().invoke(cli, ["train", "seq2seq", trained["data"], "-o", model, "--resume", model,
                                 "--steps", "4", "--no-input-feeding", *TINY])
    assert r.exit_code == 2 and "--input-feeding False differs from the checkpoint's True" in r.stderr


def test_resume_continues_exactly(trained, tmp_path):
    # Stopping at 8 steps and going on to 16 changes a cosine schedule's plan (it anneals to the
    # end of each run); the plateau rule has no plan, so the two halves equal one run.
    args = ["train", "seq2seq", trained["data"], "--teacher-forcing", "0.7", "--attention", "additive",
            "--cell", "gru", "--hidden", "16", "--embed", "8", "--batch", "16", "--dropout", "0.2",
            "--lr-schedule", "plateau", "--seed", "3"]
    full, half = str(tmp_path / "full.model"), str(tmp_path / "half.model")
    runner = CliRunner()
    assert runner.invoke(cli, [*args, "-o", full, "--steps", "16"]).exit_code == 0
    assert runner.invoke(cli, [*args, "-o", half, "--steps", "8"]).exit_code == 0
    r = runner.invoke(cli, ["train", "seq2seq", trained["data"], "-o", half, "--resume", half,
                            "--steps", "16"])
    assert r.exit_code == 0, r.output
    a, b = load_model(full)[0], load_model(half)[0]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_scan_file_converts_to_pairs(tmp_path):
    path = os.path.join(SCAN, "tasks_test_simple.txt")
    if not os.path.exists(path):
        pytest.skip("shared/data/scan is not here")
    import re

    lines = [re.sub(r"^IN: (.*) OUT: (.*)$", r"\1\t\2", line.rstrip("\n"))
             for line in open(path, encoding="utf-8")]
    pairs = read_pairs(_write(tmp_path / "scan.tsv", lines))
    assert len(pairs) == 4182 and pairs.bad_count == 0
    assert {t for s in pairs.targets for t in s.split()} <= {
        "I_WALK", "I_RUN", "I_JUMP", "I_LOOK", "I_TURN_LEFT", "I_TURN_RIGHT"}


def test_help_lists_the_seq2seq_options():
    r = CliRunner().invoke(cli, ["train", "seq2seq", "--help"])
    assert r.exit_code == 0
    for flag in ("--attention", "--teacher-forcing", "--unit", "--min-count", "--reverse", "--strict"):
        assert flag in r.stdout
