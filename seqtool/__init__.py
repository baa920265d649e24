"""seqtool: recurrent networks on sequences with fused Numba kernels."""

__version__ = "0.1.0"

from seqtool._blas_env import choose_openblas_coretype

choose_openblas_coretype()  # before anything imports NumPy (see _blas_env.py)

from seqtool.errors import SeqtoolError, UsageError  # noqa: F401
from seqtool.core.autograd import Function, Tensor, is_grad_enabled, no_grad, tensor  # noqa: F401
