"""The CUDA install works with the NumPy it resolves, and setup failures are one line.

numba-cuda loads its NumPy typing registries (numba/cuda/np/arrayobj.py and friends) at the
first kernel compile, so a NumPy release that removes a name numba-cuda overloads breaks every
GPU run while CPU-only tests stay green (NumPy 2.5 and np.row_stack). These tests import those
registries, in a fresh process, through seqtool's import path, with the NumPy installed here,
and with the next removal simulated. CPU only: no GPU needed.
"""
import subprocess
import sys
import textwrap

import pytest

from seqtool import device as devicelib
from seqtool.errors import SeqtoolError
from seqtool.kernels.cuda import toolchain

pytest.importorskip("numba_cuda", reason="numba-cuda (pip install -e .[cuda]) not installed")


def _python(code: str, **env):
    import os

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"} | env
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env=env)


# NumPy 2.5 as it ships: no row_stack attribute, none in __all__ (SciPy star-imports NumPy).
_WITHOUT_ROW_STACK = """
    import numpy as np
    if hasattr(np, "row_stack"):
        del np.row_stack
    np.__all__ = [n for n in np.__all__ if n != "row_stack"]
"""

_REGISTRIES = """
    from seqtool.kernels.cuda import toolchain
    cuda = toolchain.import_numba_cuda()
    import numba.cuda.np.arrayobj, numba.cuda.np.arraymath, numba.cuda.np.npyimpl  # noqa
    import os
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # the real target (the simulator has none)
        import numba.cuda.target
        numba.cuda.target.CUDATypingContext().refresh()  # every registered typing template
    print("ok")
"""


@pytest.mark.parametrize("sim", ["0", "1"])
def test_numba_cuda_typing_registries_import_with_installed_numpy(sim):
    r = _python(_REGISTRIES, NUMBA_ENABLE_CUDASIM=sim)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_numpy_without_row_stack_still_works():
    # NumPy >= 2.5 as it is: no row_stack. seqtool's import path puts the alias back.
    r = _python(textwrap.dedent(_WITHOUT_ROW_STACK) + textwrap.dedent(_REGISTRIES)
                + "assert np.row_stack is np.vstack\n")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_the_alias_is_still_needed():
    # Without seqtool's fix, this numba-cuda fails on a NumPy without row_stack. When it stops
    # failing, numba-cuda no longer needs the alias: delete toolchain._restore_row_stack.
    r = _python(textwrap.dedent(_WITHOUT_ROW_STACK) + "import numba.cuda.np.arrayobj\n")
    if r.returncode == 0:
        pytest.skip("this numba-cuda imports without np.row_stack: the alias in kernels/cuda/toolchain.py can go")
    assert "row_stack" in r.stderr


def test_existing_row_stack_is_left_alone(monkeypatch):
    import numpy as np

    own = object()
    monkeypatch.setattr(np, "row_stack", own, raising=False)
    toolchain._restore_row_stack()
    assert np.row_stack is own


def test_a_kernel_compiles_on_a_numpy_without_row_stack():
    r = _python(textwrap.dedent(_WITHOUT_ROW_STACK) + textwrap.dedent("""
        from seqtool.kernels.cuda import toolchain
        cuda = toolchain.import_numba_cuda()
        import numba
        def twice(a):
            a[0] = a[0] * 2  # typing loads every registry, arrayobj.py included
        try:
            ptx, _ = cuda.compile_ptx(twice, (numba.typeof(np.zeros(1, np.float32)),), cc=(9, 0))
        except Exception as err:
            if 'NVVM' in type(err).__name__ or 'Nvvm' in type(err).__name__ or 'nvvm' in str(err).lower():
                print('no-nvvm')
                raise SystemExit(0)
            raise
        print('entry' if '.entry' in ptx else 'no entry')
    """))
    if "no-nvvm" in r.stdout:
        pytest.skip("NVVM not installed here (pip install -e .[cuda-compile])")
    assert r.returncode == 0 and r.stdout.strip() == "entry", r.stderr[-3000:]


def test_missing_numba_cuda_is_one_line_naming_the_fix(monkeypatch):
    import numba

    monkeypatch.setattr(toolchain, "_restore_row_stack", lambda: None)
    monkeypatch.setitem(sys.modules, "numba.cuda", None)
    monkeypatch.delattr(numba, "cuda", raising=False)  # imported already by earlier tests
    with pytest.raises(SeqtoolError, match=r"numba.cuda cannot be imported.*pip install 'seqtool\[cuda\]'") as err:
        toolchain.import_numba_cuda()
    assert "\n" not in str(err.value)


def test_missing_cupy_is_one_line_naming_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(SeqtoolError, match=r"^CuPy cannot be imported .*cupy-cuda12x") as err:
        toolchain.import_cupy()
    assert "\n" not in str(err.value)


def test_require_names_missing_nvvm(monkeypatch):
    # a GPU numba can see and CuPy, but no NVVM: the error says so instead of a traceback at
    # the first compile
    from types import SimpleNamespace

    from numba.cuda.cudadrv import error, nvvm

    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)  # as on a GPU: the check runs
    fake_cuda = SimpleNamespace(is_available=lambda: True)
    fake_cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 1)))
    monkeypatch.setattr(devicelib, "simulator", lambda: False)
    monkeypatch.setattr(toolchain, "import_numba_cuda", lambda: fake_cuda)
    monkeypatch.setattr(toolchain, "import_cupy", lambda: fake_cupy)

    def no_nvvm():
        raise error.NvvmSupportError("libNVVM cannot be found")

    monkeypatch.setattr(nvvm, "NVVM", no_nvvm)
    with pytest.raises(SeqtoolError, match=r"^the CUDA compiler library NVVM cannot be loaded "
                                           r"\(libNVVM cannot be found\); pip install"):
        devicelib.require("cuda")
    monkeypatch.setattr(nvvm, "NVVM", lambda: None)
    devicelib.require("cuda")  # everything there: no error


def test_setup_errors_met_at_launch_become_one_line():
    from numba.cuda.cudadrv import error

    err = toolchain.toolchain_error(error.CudaSupportError("Error at driver init: no driver\nmore"))
    assert isinstance(err, SeqtoolError)
    assert str(err).startswith("CUDA setup failed (CudaSupportError: Error at driver init: no driver)")
    assert toolchain.toolchain_error(ValueError("a bug")) is None  # not hidden
