"""GPU sampling (kernels/cuda/sample.py) under the CUDA simulator, against the CPU sampler.

Run by tests/test_cuda_simulator_pass.py (NUMBA_ENABLE_CUDASIM=1 must be set before numba is
imported); skipped in the main pass. Tiny models: the simulator runs every thread in Python.
"""
import os

import numpy as np
import pytest

from seqtool import device
from seqtool.kernels.cuda import sample as cuda_sample
from seqtool.tasks.charlm import load as load_charlm
from seqtool.tasks.charlm.sampler import _device_tokens, _device_weights, generate, prime

from test_sampling import CONFIGS, make_charlm, run_kernel

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                                reason="simulator pass: NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sample.py")

TOKENS = list("abcdefg hij\n")


@pytest.fixture(autouse=True)
def few_threads(monkeypatch):
    monkeypatch.setattr(cuda_sample, "THREADS", 4)  # fewer threads than units and tokens
    monkeypatch.setattr(cuda_sample, "VIRTUAL_BLOCKS", 3)  # rows dealt to 3 blocks


def _model(tmp_path, cell, reset_after, nonlin, layers=2):
    path = make_charlm(tmp_path / "m.st", cell=cell, layers=layers, hidden=6, embed=4, tokens=TOKENS,
                       reset_after=reset_after, nonlinearity=nonlin)
    return load_charlm(path)


def _on_gpu(model, prime_text, n, uniforms, **sampling):
    h, c = prime(model, prime_text)
    out = np.empty(n, np.int64)
    _device_tokens(model, _device_weights(model), h, c, sampling.get("temperature", 1.0),
                   sampling.get("top_k", 0), sampling.get("argmax", False), uniforms, out)
    return out.tolist(), (h, c)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell,reset_after,nonlin", CONFIGS)
@pytest.mark.parametrize("sampling", [{"argmax": True}, {"temperature": 0.8}, {"temperature": 1.3, "top_k": 3}],
                         ids=["argmax", "temperature", "top-k"])
def test_gpu_sampler_gives_the_cpu_samplers_tokens_and_state(tmp_path, cell, reset_after, nonlin, layers, sampling):
    model = _model(tmp_path, cell, reset_after, nonlin, layers)
    uniforms = np.random.default_rng(3).random(25)
    got, (h, c) = _on_gpu(model, "ab c", 25, uniforms, **sampling)
    want, (h_cpu, c_cpu) = run_kernel(model, "ab c", 25, uniforms=uniforms, **sampling)
    assert got == want
    if not sampling.get("argmax"):  # (argmax may settle on one token: the state still moves)
        assert len(set(got)) > 1  # a real draw, not one token repeated
    np.testing.assert_allclose(h, h_cpu, atol=2e-5)
    if cell == "lstm":
        np.testing.assert_allclose(c, c_cpu, atol=2e-5)


def test_top_k_one_is_argmax(tmp_path):
    model = _model(tmp_path, "lstm", True, "tanh")
    uniforms = np.random.default_rng(4).random(20)
    assert _on_gpu(model, "a", 20, uniforms, top_k=1)[0] == _on_gpu(model, "a", 20, uniforms, argmax=True)[0]


def test_sample_on_cuda_is_one_launch_per_chunk_and_matches_cpu(tmp_path, monkeypatch):
    from numba.cuda.simulator import kernel as sim_kernel

    model = _model(tmp_path, "gru", False, "tanh")
    on_cpu = generate(model, 90, temperature=0.9, prime_text="ab", seed=7, chunk=40)
    count = [0]
    real = sim_kernel.FakeCUDAKernel.__call__

    def counted(self, *args):
        if not self._device and not sim_kernel._kernel_context:
            count[0] += 1
        return real(self, *args)

    monkeypatch.setattr(sim_kernel.FakeCUDAKernel, "__call__", counted)
    device.use("cuda")
    try:
        prime_launches = count[0]  # priming runs the recurrent layer kernels
        on_gpu = generate(model, 90, temperature=0.9, prime_text="ab", seed=7, chunk=40)
    finally:
        device.use("cpu")
    assert on_gpu == on_cpu
    # 90 tokens in chunks of 40: 3 sampler launches, plus the prime's one-layer-pass launches (2)
    assert count[0] - prime_launches == 3 + 2


@pytest.mark.parametrize("cell,reset_after,nonlin", [("lstm", True, "tanh"), ("gru", False, "tanh")])
@pytest.mark.parametrize("blocks,staged,path", [(1, True, "auto"), (5, False, "auto"), (7, True, "auto"),
                                                (3, True, "block")])
def test_every_layout_gives_the_same_tokens(tmp_path, monkeypatch, cell, reset_after, nonlin, blocks, staged,
                                            path):
    # rows dealt to 1-7 blocks (unevenly), weights staged in shared memory or read from global
    # memory, and the one-block layout: all give the CPU sampler's tokens
    from seqtool.kernels.cuda import persistent, settings

    monkeypatch.setattr(cuda_sample, "VIRTUAL_BLOCKS", blocks)
    if not staged:
        monkeypatch.setattr(persistent, "SMEM_BYTES", 0)
    assert cuda_sample.fits(2, 6, len(TOKENS), 4, blocks, blocks) == staged
    model = _model(tmp_path, cell, reset_after, nonlin)
    uniforms = np.random.default_rng(5).random(15)
    with settings.using(settings.Recurrence(path)):
        got, (h, c) = _on_gpu(model, "ba", 15, uniforms, temperature=0.9, top_k=4)
    want, (h_cpu, _) = run_kernel(model, "ba", 15, uniforms=uniforms, temperature=0.9, top_k=4)
    assert got == want
    np.testing.assert_allclose(h, h_cpu, atol=2e-5)
