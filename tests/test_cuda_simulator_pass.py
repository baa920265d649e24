"""Runs the CUDA kernel suite under the Numba CUDA simulator, in a child process.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, and this process has already
imported numba for the CPU kernels, so the simulator pass needs a process of its own.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITES = [str(Path(__file__).with_name(n)) for n in ("test_cuda_kernels.py", "test_cuda_training.py")]


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already the simulator pass")
def test_cuda_kernels_pass_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
