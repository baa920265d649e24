"""Numba kernels: arithmetic only (imported as seqtool.kernels)."""
