"""RNN, LSTM and GRU layers with PyTorch's parameter names and layouts.

Each (layer, direction) is one autograd Function whose forward and backward are one fused
kernel call over the whole sequence (seqtool.kernels). A PyTorch state_dict converted to numpy
loads with load_state_dict and reproduces PyTorch's outputs and gradients.
"""
from __future__ import annotations

import numpy as np

from seqtool.core import functional as F
from seqtool.core import memory
from seqtool.core import xp
from seqtool.device import cuda_kernels_for_host_arrays
from seqtool.core.autograd import Function, Tensor
from seqtool.errors import SeqtoolError, UsageError
from seqtool.nn import init as initializers
from seqtool.nn.module import Module, Parameter
from seqtool.core.xp import is_device_array

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _kernels(array):
    """The kernel module set for where `array` lives (NumPy -> CPU, CuPy -> CUDA).

    Under the CUDA simulator a run on --device cuda keeps NumPy arrays but still goes through
    the CUDA kernels (seqtool.device.cuda_kernels_for_host_arrays), so CI exercises that path.
    """
    if is_device_array(array) or cuda_kernels_for_host_arrays():
        from seqtool.kernels import cuda as kernels_cuda

        return kernels_cuda
    from seqtool import kernels

    return kernels


def _nthreads(array):
    return _kernels(array).num_threads()


def _c(a):
    return a if a.flags.c_contiguous else a.copy()


class LSTMLayerFn(Function):
    """One LSTM layer, one direction: (x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (y, h_n, c_n)."""

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None, reverse=False):
        K = _kernels(x).lstm
        x, h0, c0 = _c(x), _c(h0), _c(c0)
        y, h, c, gates = K.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih + b_hh, lengths, reverse, _nthreads(x))
        self.save_for_backward(x, w_ih, w_hh, h, c, gates, lengths)
        self.reverse = reverse
        end = 0 if reverse else x.shape[0]
        return y, h[end].copy(), c[end].T.copy()  # c is stored (T+1, H, N); .copy() works for CuPy too

    def backward(self, dy, dh_n, dc_n):
        x, w_ih, w_hh, h, c, gates, lengths = self.saved_tensors
        zeros = h[0] * 0
        dy = _c(dy) if dy is not None else np.zeros_like(h[1:])
        dx, dh0, dc0, dw_ih, dw_hh, db = _kernels(x).lstm.lstm_backward(
            x, w_ih, w_hh, h, c, gates, lengths, self.reverse, dy,
            zeros if dh_n is None else _c(dh_n), zeros if dc_n is None else _c(dc_n),
            self.needs_input_grad[0], _nthreads(x))
        return (dx if self.needs_input_grad[0] else None), dh0, dc0, dw_ih, dw_hh, db, db.copy()


class LSTMPairFn(Function):
    """Both directions of one bidirectional LSTM layer in one CPU kernel call
    (seqtool.kernels.pairs): (x, h0 (2, N, H), c0 (2, N, H), forward w_ih, w_hh, b_ih, b_hh,
    reverse w_ih, w_hh, b_ih, b_hh) -> (y (T, N, 2H), h_n (2, N, H), c_n (2, N, H))."""

    def forward(self, x, h0, c0, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_r, w_hh_r, b_ih_r, b_hh_r, lengths=None):
        from seqtool.kernels import pairs

        x = _c(x)
        w_ih, w_hh = np.stack([w_ih_f, w_ih_r]), np.stack([w_hh_f, w_hh_r])
        b = np.stack([b_ih_f + b_hh_f, b_ih_r + b_hh_r])
        y, h, c, gates = pairs.lstm_forward_pair(x, _c(h0), _c(c0), w_ih, w_hh, b, lengths, _nthreads(x))
        self.save_for_backward(x, w_ih, w_hh, h, c, gates, lengths)
        T = x.shape[0]
        return y, np.stack([h[0, T], h[1, 0]]), np.stack([c[0, T].T, c[1, 0].T])

    def backward(self, dy, dh_n, dc_n):
        from seqtool.kernels import pairs

        x, w_ih, w_hh, h, c, gates, lengths = self.saved_tensors
        zeros = np.zeros((2,) + h.shape[2:], h.dtype)
        dy = _c(dy) if dy is not None else np.zeros(x.shape[:2] + (2 * h.shape[3],), h.dtype)
        dx, dh0, dc0, dw_ih, dw_hh, db = pairs.lstm_backward_pair(
            x, w_ih, w_hh, h, c, gates, lengths, dy, zeros if dh_n is None else _c(dh_n),
            zeros if dc_n is None else _c(dc_n), self.needs_input_grad[0], _nthreads(x))
        return ((dx if self.needs_input_grad[0] else None), dh0, dc0,
                dw_ih[0], dw_hh[0], db[0], db[0].copy(), dw_ih[1], dw_hh[1], db[1], db[1].copy())


class GRUPairFn(Function):
    """Both directions of one bidirectional GRU layer in one CPU kernel call:
    (x, h0 (2, N, H), forward w_ih, w_hh, b_ih, b_hh, reverse ones) -> (y (T, N, 2H), h_n (2, N, H))."""

    def forward(self, x, h0, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_r, w_hh_r, b_ih_r, b_hh_r, lengths=None,
                reset_after=True):
        from seqtool.kernels import pairs

        x = _c(x)
        w_ih, w_hh = np.stack([w_ih_f, w_ih_r]), np.stack([w_hh_f, w_hh_r])
        b_ih, b_hh = np.stack([b_ih_f, b_ih_r]), np.stack([b_hh_f, b_hh_r])
        y, h, gates, hn = pairs.gru_forward_pair(x, _c(h0), w_ih, w_hh, b_ih, b_hh, lengths, reset_after,
                                                 _nthreads(x))
        self.save_for_backward(x, w_ih, w_hh, h, gates, hn, lengths)
        self.reset_after = reset_after
        return y, np.stack([h[0, x.shape[0]], h[1, 0]])

    def backward(self, dy, dh_n):
        from seqtool.kernels import pairs

        x, w_ih, w_hh, h, gates, hn, lengths = self.saved_tensors
        dy = _c(dy) if dy is not None else np.zeros(x.shape[:2] + (2 * h.shape[3],), h.dtype)
        dh_n = _c(dh_n) if dh_n is not None else np.zeros((2,) + h.shape[2:], h.dtype)
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = pairs.gru_backward_pair(
            x, w_ih, w_hh, h, gates, hn, lengths, self.reset_after, dy, dh_n, self.needs_input_grad[0],
            _nthreads(x))
        return ((dx if self.needs_input_grad[0] else None), dh0,
                dw_ih[0], dw_hh[0], db_ih[0], db_hh[0], dw_ih[1], dw_hh[1], db_ih[1], db_hh[1])


class RNNPairFn(Function):
    """Both directions of one bidirectional vanilla RNN layer in one CPU kernel call:
    (x, h0 (2, N, H), forward w_ih, w_hh, b_ih, b_hh, reverse ones) -> (y (T, N, 2H), h_n (2, N, H))."""

    def forward(self, x, h0, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_r, w_hh_r, b_ih_r, b_hh_r, lengths=None,
                relu=False):
        from seqtool.kernels import pairs

        x = _c(x)
        w_ih, w_hh = np.stack([w_ih_f, w_ih_r]), np.stack([w_hh_f, w_hh_r])
        b = np.stack([b_ih_f + b_hh_f, b_ih_r + b_hh_r])
        y, h, act = pairs.rnn_forward_pair(x, _c(h0), w_ih, w_hh, b, lengths, relu, _nthreads(x))
        self.save_for_backward(x, w_ih, w_hh, h, act, lengths)
        self.relu = relu
        return y, np.stack([h[0, x.shape[0]], h[1, 0]])

    def backward(self, dy, dh_n):
        from seqtool.kernels import pairs

        x, w_ih, w_hh, h, act, lengths = self.saved_tensors
        dy = _c(dy) if dy is not None else np.zeros(x.shape[:2] + (2 * h.shape[3],), h.dtype)
        dh_n = _c(dh_n) if dh_n is not None else np.zeros((2,) + h.shape[2:], h.dtype)
        dx, dh0, dw_ih, dw_hh, db = pairs.rnn_backward_pair(
            x, w_ih, w_hh, h, act, lengths, self.relu, dy, dh_n, self.needs_input_grad[0], _nthreads(x))
        return ((dx if self.needs_input_grad[0] else None), dh0,
                dw_ih[0], dw_hh[0], db[0], db[0].copy(), dw_ih[1], dw_hh[1], db[1], db[1].copy())


def _pairs_directions(x, dirs):
    """Whether a layer's two directions run as one *PairFn call (the rule: kernels/pairs.py)."""
    if dirs != 2 or is_device_array(x.data) or cuda_kernels_for_host_arrays():
        return False
    from seqtool.kernels import pairs

    return pairs.pair_directions(_nthreads(x.data))


class GRULayerFn(Function):
    """One GRU layer, one direction: (x, h0, w_ih, w_hh, b_ih, b_hh) -> (y, h_n)."""

    def forward(self, x, h0, w_ih, w_hh, b_ih, b_hh, lengths=None, reverse=False, reset_after=True):
        K = _kernels(x).gru
        x, h0 = _c(x), _c(h0)
        y, h, gates, hn = K.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, reset_after, _nthreads(x))
        self.save_for_backward(x, w_ih, w_hh, h, gates, hn, lengths)
        self.reverse, self.reset_after = reverse, reset_after
        return y, h[0 if reverse else x.shape[0]].copy()

    def backward(self, dy, dh_n):
        x, w_ih, w_hh, h, gates, hn, lengths = self.saved_tensors
        zeros = h[0] * 0
        dy = _c(dy) if dy is not None else np.zeros_like(h[1:])
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _kernels(x).gru.gru_backward(
            x, w_ih, w_hh, h, gates, hn, lengths, self.reverse, self.reset_after, dy,
            zeros if dh_n is None else _c(dh_n), self.needs_input_grad[0], _nthreads(x))
        return (dx if self.needs_input_grad[0] else None), dh0, dw_ih, dw_hh, db_ih, db_hh


class RNNLayerFn(Function):
    """One vanilla RNN layer, one direction: (x, h0, w_ih, w_hh, b_ih, b_hh) -> (y, h_n)."""

    def forward(self, x, h0, w_ih, w_hh, b_ih, b_hh, lengths=None, reverse=False, relu=False):
        K = _kernels(x).rnn
        x, h0 = _c(x), _c(h0)
        y, h, act = K.rnn_forward(x, h0, w_ih, w_hh, b_ih + b_hh, lengths, reverse, relu, _nthreads(x))
        self.save_for_backward(x, w_ih, w_hh, h, act, lengths)
        self.reverse, self.relu = reverse, relu
        return y, h[0 if reverse else x.shape[0]].copy()

    def backward(self, dy, dh_n):
        x, w_ih, w_hh, h, act, lengths = self.saved_tensors
        zeros = h[0] * 0
        dy = _c(dy) if dy is not None else np.zeros_like(h[1:])
        dx, dh0, dw_ih, dw_hh, db = _kernels(x).rnn.rnn_backward(
            x, w_ih, w_hh, h, act, lengths, self.reverse, self.relu, dy,
            zeros if dh_n is None else _c(dh_n), self.needs_input_grad[0], _nthreads(x))
        return (dx if self.needs_input_grad[0] else None), dh0, dw_ih, dw_hh, db, db.copy()


class RNNBase(Module):
    """Stacked, optionally bidirectional recurrent layers (time-major unless batch_first).

    init: "uniform" (PyTorch: U(-1/sqrt(H), 1/sqrt(H)) everywhere), "orthogonal" (orthogonal
    recurrent blocks, Xavier input weights, zero biases) or "identity" (IRNN: identity
    recurrent weights and zero biases, meant for nonlinearity="relu").
    """

    mode = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, nonlinearity="tanh", reset_after=True,
                 init="uniform", forget_bias=0.0, rng=None, dtype=np.float32):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {dropout!r}")
        if nonlinearity not in ("tanh", "relu"):
            raise UsageError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        if init not in ("uniform", "orthogonal", "identity"):
            raise UsageError(f"init must be uniform, orthogonal or identity, got {init!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.nonlinearity, self.reset_after = bidirectional, nonlinearity, reset_after
        self.dropout_rng = rng if rng is not None else np.random.default_rng()
        rng = self.dropout_rng
        G, H = _GATES[self.mode], self.hidden_size
        dirs = 2 if bidirectional else 1
        self._check_memory(np.dtype(dtype).itemsize)
        bound = 1.0 / np.sqrt(H)
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else H * dirs
            for sfx in ("", "_reverse")[:dirs]:
                w_ih = rng.uniform(-bound, bound, (G * H, d_in)).astype(dtype)
                w_hh = rng.uniform(-bound, bound, (G * H, H)).astype(dtype)
                b_ih = rng.uniform(-bound, bound, G * H).astype(dtype)
                b_hh = rng.uniform(-bound, bound, G * H).astype(dtype)
                if init != "uniform":
                    b_ih[:] = 0.0
                    b_hh[:] = 0.0
                    for g in range(G):
                        blk = slice(g * H, (g + 1) * H)
                        if init == "identity":
                            w_hh[blk] = np.eye(H, dtype=dtype)
                            initializers.normal_(w_ih[blk], 0.0, 0.001, rng)
                        else:
                            initializers.orthogonal_(w_hh[blk], 1.0, rng)
                            initializers.xavier_uniform_(w_ih[blk], 1.0, rng)
                if self.mode == "lstm" and forget_bias:
                    b_ih[H:2 * H] = forget_bias  # the forget gate starts open
                    b_hh[H:2 * H] = 0.0
                setattr(self, f"weight_ih_l{layer}{sfx}", Parameter(w_ih))
                setattr(self, f"weight_hh_l{layer}{sfx}", Parameter(w_hh))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{sfx}", Parameter(b_ih))
                    setattr(self, f"bias_hh_l{layer}{sfx}", Parameter(b_hh))

    def _check_memory(self, itemsize: int) -> None:
        """Refuse sizes that cannot fit before NumPy tries (a MemoryError traceback, or worse)."""
        n = memory.recurrent_param_count(self.mode, self.input_size, self.hidden_size,
                                         self.num_layers, self.bidirectional)
        dirs = 2 if self.bidirectional else 1
        largest = _GATES[self.mode] * self.hidden_size * max(self.input_size, self.hidden_size * dirs)
        layers = "layer" if self.num_layers == 1 else "layers"
        memory.require_memory(n * itemsize + largest * 8,  # + the float64 draw of one matrix
                              f"an {self.mode.upper()} of {self.num_layers} {layers} x "
                              f"{self.hidden_size} hidden units")

    def _check_dtype(self, dtype, hx) -> None:
        """The kernels take one float type: say so, as torch does, instead of a Numba TypingError."""
        want = self.weight_hh_l0.dtype
        states = hx if isinstance(hx, (tuple, list)) else (hx,)
        found = [np.dtype(dtype)] + [np.dtype(h.dtype) for h in states if h is not None]
        bad = next((d for d in found if d != want), None)
        if bad is not None:
            what = "input" if bad == found[0] and np.dtype(dtype) != want else "initial state"
            raise SeqtoolError(f"{type(self).__name__}: expected {what} of dtype {want} (the layer's "
                               f"weights) but found {bad}; convert it with .astype(np.{want}) or "
                               f"build the layer with dtype=np.{bad}")

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _params(self, layer, sfx, dtype):
        w_ih = getattr(self, f"weight_ih_l{layer}{sfx}")
        w_hh = getattr(self, f"weight_hh_l{layer}{sfx}")
        if self.bias:
            return w_ih, w_hh, getattr(self, f"bias_ih_l{layer}{sfx}"), getattr(self, f"bias_hh_l{layer}{sfx}")
        zeros = xp.zeros(w_hh.shape[0], dtype, like=w_hh.data)
        return w_ih, w_hh, zeros, zeros

    def _lengths(self, lengths, T, N):
        if lengths is None:
            return np.full(N, T, np.int64)
        lengths = xp.to_host(lengths)  # the CPU kernels read them on the host; CUDA ones copy them over
        if lengths.shape != (N,) or lengths.dtype.kind not in "iu":
            raise UsageError(f"lengths must be {N} integers, got shape {lengths.shape}")
        if N and (lengths.min() < 0 or lengths.max() > T):
            raise UsageError(f"lengths must lie in [0, {T}]")
        return lengths.astype(np.int64)

    def forward(self, x, hx=None, lengths=None):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 3:
            raise UsageError(f"{type(self).__name__} expects a 3-d input, got shape {x.shape}")
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        T, N, D = x.shape
        if D != self.input_size:
            raise UsageError(f"input has {D} features, the layer expects {self.input_size}")
        self._check_dtype(x.dtype, hx)
        lengths = self._lengths(lengths, T, N)
        H, dirs, lstm = self.hidden_size, self.num_directions, self.mode == "lstm"
        h0, c0 = (hx if lstm and hx is not None else (hx, None))
        out_h, out_c = [], []
        inp = x
        pair = _pairs_directions(x, dirs)
        for layer in range(self.num_layers):
            ys = []
            if pair:
                inp = self._pair_layer(inp, layer, h0, c0, lengths, out_h, out_c)
                if self.dropout and self.training and layer < self.num_layers - 1:
                    inp = F.dropout(inp, self.dropout, True, self.dropout_rng)
                continue
            for d, sfx in enumerate(("", "_reverse")[:dirs]):
                k = layer * dirs + d
                start_h = h0[k] if h0 is not None else xp.zeros((N, H), x.dtype, like=x.data)
                params = self._params(layer, sfx, x.dtype)
                if lstm:
                    start_c = c0[k] if c0 is not None else xp.zeros((N, H), x.dtype, like=x.data)
                    y, h_n, c_n = LSTMLayerFn.apply(inp, start_h, start_c, *params, lengths=lengths, reverse=d == 1)
                    out_c.append(c_n)
                elif self.mode == "gru":
                    y, h_n = GRULayerFn.apply(inp, start_h, *params, lengths=lengths, reverse=d == 1,
                                              reset_after=self.reset_after)
                else:
                    y, h_n = RNNLayerFn.apply(inp, start_h, *params, lengths=lengths, reverse=d == 1,
                                              relu=self.nonlinearity == "relu")
                ys.append(y)
                out_h.append(h_n)
            inp = ys[0] if dirs == 1 else F.concat(ys, axis=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                inp = F.dropout(inp, self.dropout, True, self.dropout_rng)
        output = inp.transpose(1, 0, 2) if self.batch_first else inp
        h_n = F.stack(out_h, axis=0)
        return (output, (h_n, F.stack(out_c, axis=0))) if lstm else (output, h_n)

    def _pair_layer(self, inp, layer, h0, c0, lengths, out_h, out_c):
        """One bidirectional layer through LSTMPairFn/GRUPairFn/RNNPairFn; appends its final states."""
        N, H = inp.shape[1], self.hidden_size
        starts = []
        for given in (h0, c0) if self.mode == "lstm" else (h0,):
            if given is None:
                starts.append(np.zeros((2, N, H), inp.dtype))
            else:
                starts.append(F.stack([given[2 * layer], given[2 * layer + 1]], axis=0))
        params = self._params(layer, "", inp.dtype) + self._params(layer, "_reverse", inp.dtype)
        if self.mode == "lstm":
            y, h_n, c_n = LSTMPairFn.apply(inp, *starts, *params, lengths=lengths)
            out_c.extend([c_n[0], c_n[1]])
        elif self.mode == "gru":
            y, h_n = GRUPairFn.apply(inp, *starts, *params, lengths=lengths, reset_after=self.reset_after)
        else:
            y, h_n = RNNPairFn.apply(inp, *starts, *params, lengths=lengths, relu=self.nonlinearity == "relu")
        out_h.extend([h_n[0], h_n[1]])
        return y

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}")


class RNN(RNNBase):
    mode = "rnn"


class LSTM(RNNBase):
    mode = "lstm"


class GRU(RNNBase):
    mode = "gru"
