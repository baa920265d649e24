"""Layers (Modules) built on seqtool.core.autograd; recurrent layers run fused Numba kernels."""

from seqtool.nn import init  # noqa: F401
from seqtool.nn.layers import Dropout, Embedding, Linear  # noqa: F401
from seqtool.nn.module import Module, ModuleList, Parameter, Sequential  # noqa: F401

try:  # recurrent.py is written separately; the basic layers work without it
    from seqtool.nn.recurrent import GRU, LSTM, RNN  # noqa: F401
except ImportError:
    pass
from seqtool.nn.attention import ATTENTIONS, AdditiveAttention, Attention, DotAttention  # noqa: F401
from seqtool.nn.cells import GRUCellFn, LSTMCellFn, cell_step  # noqa: F401
