"""CUDA twins of the CPU kernels (imported as seqtool.kernels.cuda)."""
