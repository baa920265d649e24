"""CUDA twins of the CPU kernels (imported as seqtool.kernels.cuda).

Same module names, function names, arguments and returned layouts as seqtool.kernels:
lstm.lstm_forward/lstm_backward, gru.gru_forward/gru_backward, rnn.rnn_forward/rnn_backward.
The GEMMs go through the inputs' array module (CuPy -> cuBLAS), the per-step gate arithmetic
through @cuda.jit kernels (common.py); persistent.py runs a small-H LSTM forward, and its
backward recurrence, in one launch each.
Importing needs neither CuPy nor a GPU: numba.cuda is loaded and the kernels compiled on the
first call, which raises SeqtoolError("no CUDA GPU found; use --device cpu") without a device.
The NUMBA_ENABLE_CUDASIM=1 simulator counts as a device and takes NumPy arrays (tests).
"""
from seqtool.kernels.cuda import common, gru, lstm, persistent, rnn  # noqa: F401


def num_threads():
    """`nthreads` for the kernels' signatures; the CUDA kernels ignore it."""
    return 1
