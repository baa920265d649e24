"""--device cuda end to end: a training run, its checkpoint, and `seqtool check`.

Meant for the CUDA simulator pass (tests/test_cuda_simulator_pass.py runs this file with
NUMBA_ENABLE_CUDASIM=1) and for a real GPU; skipped on a CPU-only run. Under the simulator
arrays stay NumPy but every recurrent layer runs the CUDA kernels.
"""
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


def _train(tmp_path, dev, steps=3):
    from seqtool.data.text import load_corpus
    from seqtool.tasks.charlm import CharLMTask, build_charlm
    from seqtool.train import Trainer, TrainSettings

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
    from seqtool.sampling import load_charlm, text_loss

    loss, n = text_loss(load_charlm(str(out)), "abcab dab\n")
    assert n == 9 and np.isfinite(loss)


def test_check_variant_on_cuda_crosses_devices_with_gradients():
    from seqtool import selfcheck

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
    from seqtool.bench import BenchConfig, run
    from seqtool.kernels import cuda as kernels_cuda

    calls = []
    real = kernels_cuda.gru.gru_forward
    monkeypatch.setattr(kernels_cuda.gru, "gru_forward", lambda *a: calls.append(1) or real(*a))
    device.use("cuda")
    cfg = BenchConfig(cell="gru", hidden=3, batch=2, seq_len=3, input_size=2, steps=2, warmup=1)
    rec = run(cfg, device="cuda")
    assert rec["device"] == "cuda" and len(calls) == 3
    assert rec["step_s"] > 0 and rec["gflops"] == pytest.approx(rec["flops_per_step"] / rec["step_s"] / 1e9)
