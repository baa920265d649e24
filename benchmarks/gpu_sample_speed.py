"""GPU generation speed: `seqtool sample --device cuda` vs a PyTorch loop on the same GPU.

    python benchmarks/gpu_sample_speed.py [--hidden 256] [--layers 2] [--rounds 5] [--json]

Both run the same LSTM charlm (default 2 x 256, embed 64, vocab 96, random weights; or
--model FILE), with temperature 1. seqtool: `seqtool.tasks.charlm.sampler.generate` on the model moved
to the GPU (what `seqtool sample --device cuda` runs: kernels/cuda/sample.py, every token of
a 4096-token chunk in one launch), after a warm-up call so compilation is not counted.
PyTorch: embedding -> nn.LSTM (cuDNN) -> Linear -> softmax -> multinomial per character on the
GPU under torch.no_grad(), the token staying on the GPU (`int(tok)` once per character to
collect the text, as any generator that prints must). The two alternate for --rounds rounds;
the ratio is the median of the rounds' ratios (issue 17's target: >= 10x). Needs an NVIDIA
GPU, `pip install -e .[cuda]` and PyTorch with CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))  # sample_speed, beside this file


def build(path, hidden, layers, embed, vocab):
    from test_sampling import make_charlm

    tokens = [chr(c) for c in range(32, 32 + vocab - 1)] + ["\n"]
    make_charlm(path, "lstm", layers=layers, hidden=hidden, embed=embed, tokens=tokens, seed=0)


def seqtool_runner(path, length):
    from seqtool.device import use
    from seqtool.tasks.charlm import load
    from seqtool.tasks.charlm.sampler import generate

    use("cuda")
    lm = load(path, "cuda")
    generate(lm, 100, seed=0)  # compile outside the timing

    def rate(seed):
        t = time.perf_counter()
        text = generate(lm, length, seed=seed)
        return len(text) / (time.perf_counter() - t)
    return rate


def torch_runner(path, length):
    from sample_speed import torch_runner as loop  # the CPU benchmark's PyTorch loop, on the GPU

    return loop(path, length, device="cuda")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--model", help="a trained charlm LSTM file instead of random weights")
    ap.add_argument("--length", type=int, default=20000)
    ap.add_argument("--torch-length", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = a.model or os.path.join(d, "lm.st")
        if a.model is None:
            build(path, a.hidden, a.layers, a.embed, a.vocab)
        ours, theirs = seqtool_runner(path, a.length), torch_runner(path, a.torch_length)
        rounds = [(ours(seed), theirs(seed)) for seed in range(a.rounds)]
    ours_r = np.array([r[0] for r in rounds])
    theirs_r = np.array([r[1] for r in rounds])
    ratios = ours_r / theirs_r
    rec = {"hidden": a.hidden, "layers": a.layers, "model": a.model, "rounds": a.rounds,
           "seqtool_chars_per_s": float(np.median(ours_r)), "torch_chars_per_s": float(np.median(theirs_r)),
           "ratio": float(np.median(ratios)), "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max())}
    if a.json:
        print(json.dumps(rec))
        return
    print(f"seqtool (one launch per chunk): {rec['seqtool_chars_per_s']:10.0f} chars/s median")
    print(f"PyTorch (per-char GPU loop):    {rec['torch_chars_per_s']:10.0f} chars/s median")
    print(f"ratio:                          {rec['ratio']:10.1f}x median of rounds "
          f"({rec['ratio_min']:.1f}-{rec['ratio_max']:.1f}x)")


if __name__ == "__main__":
    main()
