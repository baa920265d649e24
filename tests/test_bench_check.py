"""seqtool bench / seqtool check / seqtool.device: CLI contract with CliRunner, tiny shapes."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.diagnostics import bench as benchlib
from seqtool import device as devicelib
from seqtool.cli.main import cli
from seqtool.errors import SeqtoolError

TINY = ["--hidden", "8", "--batch", "3", "--seq-len", "5", "--input-size", "4", "--steps", "2",
        "--warmup", "1"]


def _run(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def _no_gpu(monkeypatch):
    """Make cupy unimportable so require('cuda') fails whatever this machine has."""
    monkeypatch.setitem(sys.modules, "cupy", None)


# ----------------------------------------------------------------------------- bench


def test_bench_help():
    r = _run("bench", "--help")
    assert r.exit_code == 0
    assert "2*T*N*G*H*(D_l + H)" in r.stdout


@pytest.mark.parametrize("extra", [[], ["--cell", "gru", "--gru-form", "classic"],
                                   ["--cell", "rnn", "--nonlinearity", "relu", "--bidirectional",
                                    "--layers", "2"]])
def test_bench_json_keys_and_values(extra):
    r = _run("bench", *TINY, *extra, "--json")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert 0 < rec["step_s"] < 60
    assert rec["tokens_per_s"] == pytest.approx(3 * 5 / rec["step_s"])
    cfg = benchlib.BenchConfig(**{k: rec[k] for k in (
        "cell", "hidden", "batch", "seq_len", "input_size", "layers", "bidirectional")})
    assert rec["flops_per_step"] == benchlib.step_flops(cfg)
    assert rec["gflops"] == pytest.approx(rec["flops_per_step"] / rec["step_s"] / 1e9)
    assert "torch_step_s" not in rec and "ratio" not in rec


def test_step_flops_formula():
    # 2-layer bidirectional LSTM: layer 0 sees D, layer 1 sees 2H; backward = 2 x forward.
    cfg = benchlib.BenchConfig(cell="lstm", hidden=128, batch=16, seq_len=500, input_size=64,
                               layers=2, bidirectional=True)
    fwd = 2 * (2 * 500 * 16 * 4 * 128 * (64 + 128)) + 2 * (2 * 500 * 16 * 4 * 128 * (256 + 128))
    assert benchlib.step_flops(cfg) == 3 * fwd
    assert benchlib.step_flops(benchlib.BenchConfig(cell="rnn", hidden=1, batch=1, seq_len=1,
                                                    input_size=1)) == 3 * 2 * 1 * 2


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bench_step_updates_the_weights(cell):
    cfg = benchlib.BenchConfig(cell=cell, hidden=8, batch=3, seq_len=5, input_size=4, steps=2,
                               warmup=0, lr=0.1)
    model = benchlib.build_model(cfg)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rec = benchlib.run(cfg, model=model)
    assert rec["step_s"] > 0
    after = model.state_dict()
    assert set(after) == set(before)
    for name in before:
        assert after[name].dtype == np.float32
        assert np.isfinite(after[name]).all()
        assert not np.array_equal(after[name], before[name]), name
    assert all(p.grad is None for p in model.parameters())  # zero_grad after each step


def test_bench_compare_torch_gives_a_ratio():
    pytest.importorskip("torch")
    r = _run("bench", *TINY, "--compare", "torch", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["torch_step_s"] > 0
    assert rec["ratio"] == pytest.approx(rec["torch_step_s"] / rec["step_s"])
    r = _run("bench", *TINY, "--cell", "rnn", "--compare", "torch")
    assert r.exit_code == 0, r.output
    assert "torch" in r.stdout and "ratio" in r.stdout


def test_compare_torch_starts_from_the_same_weights_and_step():
    torch = pytest.importorskip("torch")
    cfg = benchlib.BenchConfig(cell="gru", hidden=6, batch=2, seq_len=4, input_size=3, lr=0.1)
    ours, model = benchlib.seqtool_step(cfg)
    theirs, tmodel = benchlib.torch_step(cfg, 1, model.state_dict())
    ours()
    theirs()
    got = model.state_dict()
    for name, p in tmodel.state_dict().items():
        np.testing.assert_allclose(got[name], p.numpy(), rtol=1e-4, atol=1e-5)
    del torch


def test_bench_matmul_peak():
    r = _run("bench", *TINY, "--matmul-peak", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["matmul_gflops"] > 0
    assert rec["fraction_of_peak"] == pytest.approx(rec["gflops"] / rec["matmul_gflops"])
    r = _run("bench", *TINY, "--matmul-peak")
    assert "matmul" in r.stdout and "GFLOP/s" in r.stdout


@pytest.mark.parametrize("args", [["--hidden", "0"], ["--batch", "-1"], ["--seq-len", "0"],
                                  ["--input-size", "-5"], ["--layers", "0"], ["--steps", "0"],
                                  ["--warmup", "-1"], ["--cell", "transformer"],
                                  ["--nonlinearity", "sigmoid"], ["--compare", "jax"]])
def test_bench_usage_errors_exit_2(args):
    r = _run("bench", *args)
    assert r.exit_code == 2, r.output


@pytest.mark.parametrize("args", [[], ["--device", "cuda", "--cell", "gru"]])
def test_bench_persistent_is_for_cuda_lstms(monkeypatch, args):
    monkeypatch.setattr(devicelib, "require", lambda device: None)  # as if a GPU were found
    monkeypatch.setattr(devicelib, "_active", "cpu")  # restored after the test
    r = _run("bench", *TINY, "--persistent", "on", *args)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines()[-1].endswith("use it with --device cuda --cell lstm")


def test_bench_classic_gru_cannot_compare_with_torch():
    r = _run("bench", *TINY, "--cell", "gru", "--gru-form", "classic", "--compare", "torch")
    assert r.exit_code == 2
    assert "reset-after" in r.stderr


def test_bench_compare_without_torch_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    r = _run("bench", *TINY, "--compare", "torch")
    assert r.exit_code == 1
    assert r.stderr.strip() == "seqtool: error: PyTorch is not installed: pip install torch"
    assert r.stdout == ""


# ----------------------------------------------------------------------------- device


def test_require_cpu_returns():
    assert devicelib.require("cpu") is None


def test_require_cuda_without_gpu_raises(monkeypatch):
    _no_gpu(monkeypatch)
    with pytest.raises(SeqtoolError, match=r"^no CUDA GPU found; use --device cpu$"):
        devicelib.require("cuda")


@pytest.mark.parametrize("command", ["bench", "check", "train", "sample", "predict", "eval"])
def test_device_cuda_without_gpu_exits_1(monkeypatch, tmp_path, command):
    _no_gpu(monkeypatch)
    text = tmp_path / "t.txt"
    text.write_text("some text to train on\n" * 20)
    model = tmp_path / "m.st"
    args = {"train": ["charlm", text, "-o", model], "sample": [model], "predict": [model, text],
            "eval": [model, text]}.get(command, [])
    if command in ("sample", "predict", "eval"):
        assert _run("train", "charlm", text, "-o", model, "--steps", "2", "--hidden", "8",
                    "--layers", "1", "-q").exit_code == 0
    r = _run(command, *args, "--device", "cuda")
    assert r.exit_code == 1
    assert r.stderr.strip() == "seqtool: error: no CUDA GPU found; use --device cpu"


def _other_task_data(tmp_path, task):
    """Minimal training data for seq2seq, genre and sed (their --device cuda runs are in
    test_cuda_training.py)."""
    if task == "seq2seq":
        pairs = tmp_path / "p.tsv"
        pairs.write_text("a b\tc d\n" * 8)
        return [pairs]
    if task == "genre":
        scores = tmp_path / "g.jsonl"
        scores.write_text("".join(
            f'{{"id": "{i}", "label": "{"ab"[i % 2]}", "notes": [[0, 1, {60 + i}, 0], [1, 1, 62, 0], [2, 1, 64, 0]]}}\n'
            for i in range(6)))
        return [scores]
    audio = tmp_path / "audio"
    audio.mkdir()
    ann = tmp_path / "ann.tsv"
    ann.write_text("x.wav\t0.0\t1.0\tbeep\n")
    return [audio, ann]


@pytest.mark.parametrize("task", ["seq2seq", "genre", "sed"])
def test_other_training_tasks_give_the_no_gpu_error(monkeypatch, tmp_path, task):
    _no_gpu(monkeypatch)
    r = _run("train", task, *_other_task_data(tmp_path, task), "-o", tmp_path / "m.st",
             "--device", "cuda")
    assert r.exit_code == 1
    assert r.stderr.strip() == "seqtool: error: no CUDA GPU found; use --device cpu"
    assert not (tmp_path / "m.st").exists()


# ----------------------------------------------------------------------------- check


def test_check_passes_and_prints_all_rows():
    r = _run("check")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["variant", "direction", "lengths"]
    assert len(lines) == 21
    variants = {line.split()[0] for line in lines[1:]}
    assert variants == {"lstm", "gru", "gru-classic", "rnn-tanh", "rnn-relu"}
    assert all(line.split()[-1] == "ok" for line in lines[1:])
    assert "20 self-checks passed" in r.stderr


def test_check_json_lines():
    r = _run("check", "--json", "-q")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 20
    assert {(x["variant"], x["direction"], x["lengths"]) for x in recs}.__len__() == 20
    assert all(x["ok"] and x["forward_err"] < 1e-10 and x["grad_err"] < 1e-5 for x in recs)
    assert r.stderr == ""


def test_check_exits_1_when_a_variant_fails(monkeypatch):
    from seqtool.diagnostics import selfcheck

    real = selfcheck.run_all

    def broken(device="cpu"):
        rows = real(device)
        rows[3] = selfcheck.CheckRow("lstm", True, True, 0.5, 0.2, False)
        return rows

    monkeypatch.setattr(selfcheck, "run_all", broken)
    r = _run("check")
    assert r.exit_code == 1
    assert "FAIL" in r.stdout and len(r.stdout.strip().splitlines()) == 21
    assert "1 of 20 self-checks failed: lstm/reverse/ragged" in r.stderr
    r = _run("check", "--json")
    assert r.exit_code == 1
    assert sum(not json.loads(line)["ok"] for line in r.stdout.splitlines()) == 1
