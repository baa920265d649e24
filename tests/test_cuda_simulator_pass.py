"""Runs the CUDA suites under the Numba CUDA simulator, in child processes.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, and this process has already
imported numba for the CPU kernels, so the simulator passes need processes of their own:
  1. the kernel, sampler and --device cuda suites, with the simulator's NumPy arrays;
  2. the --device cuda suite again with device arrays from tests/fake_cupy (a strict stand-in
     for CuPy, SEQTOOL_FAKE_CUPY=1): host and device arrays meeting anywhere raise, as on a GPU.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
KERNELS, SAMPLE, TRAINING = (str(HERE / n) for n in ("test_cuda_kernels.py", "test_cuda_sample.py",
                                                     "test_cuda_training.py"))


def _child(suites, **env):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", **env)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suites],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
    return proc.stdout


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already the simulator pass")
def test_cuda_kernels_pass_under_the_simulator():
    _child([KERNELS, SAMPLE, TRAINING])


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already the simulator pass")
def test_cuda_training_keeps_device_arrays_apart_from_host_arrays():
    path = os.pathsep.join(filter(None, [str(HERE / "fake_cupy"), os.environ.get("PYTHONPATH")]))
    out = _child([TRAINING], SEQTOOL_FAKE_CUPY="1", PYTHONPATH=path)
    assert "skipped" not in out  # every --device cuda test ran on device arrays
