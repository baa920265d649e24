"""A seq2seq output layer against PyTorch on the same arrays: the three products of a
(M, H) x (H, V) linear layer (forward, input gradient, weight gradient) and the softmax
cross-entropy forward + backward over V classes. Best of 15, both libraries on the same threads.

    python benchmarks/output_layer_vs_torch.py [--rows 480] [--hidden 256] [--vocab 8087]

The defaults are a Tatoeba en->fr batch of the default model (benchmarks/seq2seq_phases.py).
"""

import argparse
import time

import numba
import numpy as np

import seqtool
from seqtool.core import gemm
from seqtool.core.losses import cross_entropy


def best_ms(fn, repeats=15) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=480)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8087)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(numba.get_num_threads())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.hidden)).astype(np.float32)
    w = (rng.standard_normal((a.vocab, a.hidden)) * 0.05).astype(np.float32)
    g = rng.standard_normal((a.rows, a.vocab)).astype(np.float32)
    t = rng.integers(1, a.vocab, a.rows)
    tx, tw, tg, tt = (torch.tensor(v) for v in (x, w, g, t))

    def ours_xent():
        logits = seqtool.tensor(g, requires_grad=True)
        cross_entropy(logits, t, ignore_index=0).backward()

    def torch_xent():
        logits = tg.clone().requires_grad_(True)  # the clone is counted against torch
        torch.nn.functional.cross_entropy(logits, tt, ignore_index=0).backward()

    gflop = 2 * a.rows * a.hidden * a.vocab / 1e9
    rows = [("forward x W^T", lambda: gemm.matmul(x, w.T), lambda: tx @ tw.T),
            ("input gradient g W", lambda: gemm.matmul(g, w), lambda: tg @ tw),
            ("weight gradient g^T x", lambda: gemm.matmul_tn(g, x), lambda: tg.T @ tx)]
    print(f"{a.rows} x {a.hidden} x {a.vocab}, {numba.get_num_threads()} threads; ms (GFLOP/s)")
    for name, ours, theirs in rows:
        o, p = best_ms(ours), best_ms(theirs)
        print(f"  {name:24s} seqtool {o:6.1f} ({gflop / o * 1e3:4.0f})  torch {p:6.1f} ({gflop / p * 1e3:4.0f})")
    print(f"  {'cross-entropy fwd+bwd':24s} seqtool {best_ms(ours_xent):6.1f}         "
          f"torch {best_ms(torch_xent):6.1f} (with a clone)")


if __name__ == "__main__":
    main()
