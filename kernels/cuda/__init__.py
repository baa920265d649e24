"""CUDA twins of the CPU kernels (imported as seqtool.kernels.cuda).

Same module names, function names, arguments and returned layouts as seqtool.kernels:
lstm.lstm_forward/lstm_backward, gru.gru_forward/gru_backward, rnn.rnn_forward/rnn_backward.
The GEMMs (input projections, weight gradients) go through the inputs' array module
(CuPy -> cuBLAS); each recurrence, forward and backward, runs in one persistent launch per
layer and direction (persistent.py: LSTM and the shared machinery; persistent_gru.py,
persistent_rnn.py); settings.py chooses the launch layout, or the per-step kernels
(common.py and the cell modules) for comparisons. sample.py generates text in one launch.
Importing needs neither CuPy nor a GPU: numba.cuda is loaded and the kernels compiled on the
first call, which raises SeqtoolError("no CUDA GPU found; use --device cpu") without a device.
The NUMBA_ENABLE_CUDASIM=1 simulator counts as a device and takes NumPy arrays (tests).
"""
from seqtool.kernels.cuda import common, gru, lstm, persistent, persistent_gru, persistent_rnn, rnn, settings  # noqa: F401,E501


def num_threads():
    """`nthreads` for the kernels' signatures; the CUDA kernels ignore it."""
    return 1
