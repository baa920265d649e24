"""The shared training loop, its interrupt handling and its distributed (MPI) layer."""
