"""Checks and measurements of the kernels: bench, self-check, gradcheck, naive references."""
