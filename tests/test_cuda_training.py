"""--device cuda end to end: a training run, its checkpoint, and `seqtool check`.

Meant for the CUDA simulator passes (tests/test_cuda_simulator_pass.py runs this file with
NUMBA_ENABLE_CUDASIM=1) and for a real GPU; skipped on a CPU-only run. Under the simulator
arrays stay NumPy but every recurrent layer runs the CUDA kernels; the second pass adds
device arrays from a strict stand-in for CuPy (see `device_arrays` below).
"""
import os

import numpy as np
import pytest

from seqtool import device

def _cuda_usable() -> bool:
    try:
        device.require("cuda")
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _cuda_usable(), reason="no CUDA GPU and not the simulator")

TEXT = "abcabd cab dab bad cad\n" * 12


@pytest.fixture(autouse=True)
def back_to_cpu():
    yield
    device.use("cpu")


@pytest.fixture(autouse=True)
def device_arrays(monkeypatch):
    """With SEQTOOL_FAKE_CUPY=1 (and tests/fake_cupy on the path: a strict stand-in for CuPy) the
    "cuda" arrays are device arrays, as on a GPU, instead of the simulator's NumPy ones: every
    place where a host array meets a device one raises. test_cuda_simulator_pass.py runs this
    file both ways."""
    if os.environ.get("SEQTOOL_FAKE_CUPY") == "1":
        import cupy

        assert cupy.HOST_MIX  # the stand-in, not a real CuPy
        monkeypatch.setattr(device, "simulator", lambda: False)


def _train(tmp_path, dev, steps=3):
    from seqtool.data.text import load_corpus
    from seqtool.tasks.charlm.model import build_charlm
    from seqtool.tasks.charlm.training import CharLMTask
    from seqtool.training.trainer import Trainer, TrainSettings

    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    corpus = load_corpus([str(path)], "char", 0.2)
    rng = np.random.default_rng(0)
    cfg = {"cell": "lstm", "hidden": 5, "layers": 2, "embed": 3, "dropout": 0.0, "unit": "char",
           "reset_after": True, "nonlinearity": "tanh"}
    model = build_charlm(cfg, len(corpus.tokens), rng)
    task = CharLMTask(model, corpus, batch=2, seq_len=4, sample_chars=0)
    out = tmp_path / f"{dev}.st"
    trainer = Trainer(task, out, TrainSettings(lr=0.01, steps=steps, val_every=2), rng=rng, device=dev)
    summary = trainer.run()
    device.use("cpu")
    return summary, {k: device.put(v, "cpu") for k, v in model.state_dict().items()}, out


def test_training_on_cuda_matches_cpu(tmp_path, monkeypatch):
    from seqtool.kernels import cuda as kernels_cuda

    calls = {"forward": 0, "backward": 0}

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    cpu_summary, cpu_weights, _ = _train(tmp_path, "cpu")
    assert calls == {"forward": 0, "backward": 0}
    monkeypatch.setattr(kernels_cuda.lstm, "lstm_forward", counting("forward", kernels_cuda.lstm.lstm_forward))
    monkeypatch.setattr(kernels_cuda.lstm, "lstm_backward", counting("backward", kernels_cuda.lstm.lstm_backward))
    gpu_summary, gpu_weights, out = _train(tmp_path, "cuda")
    assert calls["backward"] == 3 * 2 and calls["forward"] > 3 * 2  # 2 layers; validation too
    assert gpu_summary["steps"] == cpu_summary["steps"] == 3
    assert gpu_summary["best_val_loss"] == pytest.approx(cpu_summary["best_val_loss"], rel=1e-4)
    for k, w in cpu_weights.items():
        np.testing.assert_allclose(gpu_weights[k], w, rtol=1e-4, atol=1e-6, err_msg=k)
    # the file is device-neutral: it loads as plain NumPy and scores text on the CPU
    from seqtool.tasks.charlm import load as load_charlm
    from seqtool.tasks.charlm.sampler import text_loss

    loss, n = text_loss(load_charlm(str(out)), "abcab dab\n")
    assert n == 9 and np.isfinite(loss)


def test_check_variant_on_cuda_crosses_devices_with_gradients():
    from seqtool.diagnostics import selfcheck

    device.use("cuda")
    forward_err, grad_err, ok = selfcheck.run_variant("rnn", {"relu": False}, True, True, device="cuda")
    assert ok and forward_err < 1e-12 and grad_err < 1e-6


def test_sample_eval_predict_on_cuda_match_cpu(tmp_path):
    from click.testing import CliRunner

    from seqtool.cli.main import cli

    _, _, model = _train(tmp_path, "cpu")
    runner = CliRunner()

    def run(*args, input=None):
        r = runner.invoke(cli, [str(a) for a in args], input=input)
        device.use("cpu")
        assert r.exit_code == 0, r.output
        return r.stdout

    for args in (["sample", model, "--length", "40", "--argmax", "--prime", "ab"],
                 ["eval", model, "-"], ["predict", model, "-"]):
        on_cpu = run(*args, input=TEXT[:60])
        on_gpu = run(*args, "--device", "cuda", input=TEXT[:60])
        if args[0] == "sample":
            assert on_gpu == on_cpu and len(on_cpu) >= 40
        else:
            a = [float(w) for w in on_cpu.split() if w[0].isdigit()]
            b = [float(w) for w in on_gpu.split() if w[0].isdigit()]
            assert len(a) == len(b) > 0
            np.testing.assert_allclose(b, a, rtol=1e-4)


def test_bench_runs_the_cuda_kernels(monkeypatch):
    from seqtool.diagnostics.bench import BenchConfig, run
    from seqtool.kernels import cuda as kernels_cuda

    calls = []
    real = kernels_cuda.gru.gru_forward
    monkeypatch.setattr(kernels_cuda.gru, "gru_forward", lambda *a: calls.append(1) or real(*a))
    device.use("cuda")
    cfg = BenchConfig(cell="gru", hidden=3, batch=2, seq_len=3, input_size=2, steps=2, warmup=1)
    rec = run(cfg, device="cuda")
    assert rec["device"] == "cuda" and len(calls) == 3
    assert rec["step_s"] > 0 and rec["gflops"] == pytest.approx(rec["flops_per_step"] / rec["step_s"] / 1e9)


# ---------------------------------------------------------------- the other tasks on --device cuda


def _task_data(tmp_path, task):
    """(train args, eval/predict data args) for a tiny run of `task`."""
    if task == "seq2seq":
        pairs = tmp_path / "p.tsv"
        pairs.write_text("".join(f"{a} {b}\t{b} {a}\n" for a, b in
                                 [("x", "y"), ("y", "z"), ("z", "x"), ("x", "x"), ("y", "y"), ("z", "y")] * 2))
        return ([pairs, "--embed", 3, "--attention", "general", "--bidirectional", "--batch", 4],
                [pairs])
    if task == "genre":
        scores = tmp_path / "g.jsonl"
        scores.write_text("".join(
            f'{{"id": "{i}", "label": "{"ab"[i % 2]}", "notes": '
            f'[[0, 1, {60 + i}, 0], [1, 1, {62 + 3 * (i % 2)}, 0], [2, 2, 64, 0], [4, 1, 60, 0]]}}\n'
            for i in range(8)))
        return [scores, "--batch", 4, "--seq-len", 4], [scores]
    from seqtool.data.audio import write_wav

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for k in range(3):  # 0.5, 0.7 and 0.9 s: windows of different lengths
        t = np.arange(8000 + 3200 * k) / 16000
        tone = np.where(t > 0.1 * (k + 1), np.sin(2 * np.pi * 1000 * t), 0.0)
        write_wav(audio / f"r{k}.wav", (0.3 * tone).astype(np.float32), 16000)
        rows.append(f"r{k}.wav\t{0.1 * (k + 1):.1f}\t0.5\tbeep\n")
    ann = tmp_path / "ann.tsv"
    ann.write_text("".join(rows))
    return ([audio, ann, "--n-mels", 8, "--seq-len", 8, "--batch", 2, "--no-tune-decoding"],
            [audio, ann])


OTHER_TASKS = [
    ("seq2seq", []),
    ("seq2seq", ["--cell", "gru", "--attention", "additive", "--input-feeding", "--teacher-forcing", 0.5]),
    ("genre", []),  # attention pooling
    ("genre", ["--pool", "last", "--cell", "gru"]),
    ("genre", ["--pool", "mean"]),
    ("sed", []),
    ("sed", ["--cell", "rnn", "--augment"]),
    ("sed", ["--seq-len", 64]),  # recordings shorter than a window: padded and masked
]


@pytest.mark.parametrize("task,options", OTHER_TASKS, ids=lambda v: " ".join(map(str, v)) if isinstance(v, list) else v)
def test_other_tasks_train_predict_and_eval_on_cuda_like_on_cpu(tmp_path, monkeypatch, task, options):
    """`train TASK --device cuda` runs its recurrent layers on the CUDA kernels and ends with the
    weights the CPU run reaches; predict and eval on either device print the same numbers."""
    from click.testing import CliRunner

    from seqtool.io import modelfile
    from seqtool.cli.main import cli
    from seqtool.kernels import cuda as kernels_cuda

    calls = []
    for cell in ("lstm", "gru", "rnn"):
        module = getattr(kernels_cuda, cell)
        for name in (f"{cell}_forward", f"{cell}_backward"):
            monkeypatch.setattr(module, name, lambda *a, real=getattr(module, name): calls.append(1) or real(*a))
    train_args, data_args = _task_data(tmp_path, task)
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(cli, [str(a) for a in args])
        device.use("cpu")
        assert r.exit_code == 0, r.output
        return r.stdout

    weights = {}
    for dev in ("cpu", "cuda"):
        model = tmp_path / f"{dev}.st"
        run("train", task, *train_args, *options, "-o", model, "--hidden", 4, "--layers", 1, "--steps", 2,
            "--val-frac", 0.34, "--seed", 5, "--device", dev, "-q")
        assert bool(calls) == (dev == "cuda")
        weights[dev] = {k: v for k, v in modelfile.load_model(model)[0].items()
                        if not k.startswith(modelfile.OPTIM_PREFIX)}
    assert weights["cpu"].keys() == weights["cuda"].keys()
    for k, w in weights["cpu"].items():
        np.testing.assert_allclose(weights["cuda"][k], w, rtol=1e-4, atol=1e-6, err_msg=k)

    model = tmp_path / "cpu.st"
    calls.clear()
    predict_inputs = {"seq2seq": ["-"], "genre": data_args, "sed": [data_args[0] / "r0.wav"]}[task]
    stdin = "x y\nz x\n" if task == "seq2seq" else None
    commands = [("predict", predict_inputs), ("eval", data_args)]
    if task == "seq2seq":
        commands.append(("predict", predict_inputs + ["--beam", 2]))
    for command, args in commands:
        on_cpu = runner.invoke(cli, [command, str(model), *map(str, args)], input=stdin)
        assert not calls
        on_gpu = runner.invoke(cli, [command, str(model), *map(str, args), "--device", "cuda"], input=stdin)
        device.use("cpu")
        assert on_cpu.exit_code == on_gpu.exit_code == 0, on_cpu.output + on_gpu.output
        assert calls, f"{command} --device cuda did not run the CUDA kernels"
        calls.clear()
        _assert_same_output(on_gpu.stdout, on_cpu.stdout)


def _assert_same_output(got: str, expected: str) -> None:
    """The same words and the same numbers up to the last printed digits (the simulator gives
    identical text; a GPU's cuBLAS and expf may move a rounded digit)."""
    def number(word):
        try:
            value = float(word.rstrip("%,;)").lstrip("("))
        except ValueError:
            return None
        return value if np.isfinite(value) else None  # nan, inf: compared as words

    got_words, expected_words = got.split(), expected.split()
    assert len(got_words) == len(expected_words), (got, expected)
    for g, e in zip(got_words, expected_words):
        if number(e) is None or number(g) is None:
            assert g == e, (got, expected)
        else:
            assert abs(number(g) - number(e)) <= 1e-3 * max(1.0, abs(number(e))), (g, e)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_bench_persistent_option_picks_the_lstm_kernels(monkeypatch, mode):
    import json

    from click.testing import CliRunner

    from seqtool.cli.main import cli
    from seqtool.kernels.cuda import persistent

    calls = []
    real = persistent.run
    monkeypatch.setattr(persistent, "run", lambda *a: calls.append(1) or real(*a))
    r = CliRunner().invoke(cli, ["bench", "--device", "cuda", "--hidden", "3", "--batch", "2", "--seq-len", "3",
                                 "--input-size", "2", "--steps", "1", "--warmup", "0", "--persistent", mode,
                                 "--json", "-q"])
    device.use("cpu")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["persistent"] == mode
    assert bool(calls) == (mode == "on")
