"""Tensors and their gradients: autograd, differentiable functions, losses, GEMM helpers, array modules."""
