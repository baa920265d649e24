"""Generation speed: seqtool's compiled sampling loop vs a PyTorch loop, one character at a time.

    python benchmarks/sample_speed.py [--hidden 256] [--layers 2] [--length 20000]

Both run the same 2 x 256 LSTM charlm (random weights, copied into torch.nn modules) and
sample with temperature 1. seqtool: `seqtool.sampling.generate` (what `seqtool sample`
runs: the whole loop in one @njit call per 4096 tokens, the hidden units split over
`seqtool.sampling.sampling_threads()` threads, BLAS pinned to one thread per thread), timed
after a warm-up call so compilation is not counted; the end-to-end `seqtool sample` command
(process start, model load, cached compile) is timed separately. PyTorch: embedding ->
nn.LSTM -> Linear -> softmax -> multinomial per character under torch.no_grad(), with
torch.set_num_threads(TORCH_THREADS, default 2: faster here than 1, 1,950 vs 1,420 chars/s).
Needs torch (optional dependency).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def build(path, hidden, layers, embed, vocab):
    from test_sampling import make_charlm

    tokens = [chr(c) for c in range(32, 32 + vocab - 1)] + ["\n"]
    make_charlm(path, "lstm", layers=layers, hidden=hidden, embed=embed, tokens=tokens, seed=0)


def seqtool_rate(path, length):
    from seqtool.sampling import generate, load_charlm, sampling_threads

    lm = load_charlm(path)
    print(f"seqtool sampling threads: {sampling_threads(lm)}", file=sys.stderr)
    generate(lm, 100, seed=0)  # compile (or load the cache) outside the timing
    best = 0.0
    for rep in range(3):
        t = time.perf_counter()
        text = generate(lm, length, seed=rep)
        best = max(best, len(text) / (time.perf_counter() - t))
    return best


def cli_rate(path, length):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "seqtool.cli.main", "sample", str(path),
                          "--length", str(length), "--seed", "1", "-q"],
                         capture_output=True, check=True).stdout
    return len(out.decode("utf-8")), time.perf_counter() - t


def torch_rate(path, length):
    import torch

    from seqtool.modelfile import load_model

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    arrays, meta = load_model(path, expect_task="charlm")
    cfg = meta["config"]
    V, E = arrays["embed.weight"].shape
    emb = torch.nn.Embedding(V, E)
    rnn = torch.nn.LSTM(E, cfg["hidden"], cfg["layers"])
    head = torch.nn.Linear(cfg["hidden"], V)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(arrays["embed.weight"]))
        rnn.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in arrays.items()
                             if k.startswith("rnn.")})
        head.weight.copy_(torch.from_numpy(arrays["head.weight"]))
        head.bias.copy_(torch.from_numpy(arrays["head.bias"]))
    gen = torch.Generator().manual_seed(0)

    def run(n):
        tok, state, out = torch.zeros(1, 1, dtype=torch.long), None, []
        with torch.no_grad():
            for _ in range(n):
                y, state = rnn(emb(tok), state)
                p = torch.softmax(head(y[0, 0]), dim=-1)
                tok = torch.multinomial(p, 1, generator=gen).view(1, 1)
                out.append(int(tok))
        return out

    run(50)  # warm-up
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        run(length)
        best = max(best, length / (time.perf_counter() - t))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--length", type=int, default=20000)
    ap.add_argument("--torch-length", type=int, default=2000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lm.st")
        build(path, a.hidden, a.layers, a.embed, a.vocab)
        ours = seqtool_rate(path, a.length)
        n, secs = cli_rate(path, a.length)
        theirs = torch_rate(path, a.torch_length)
    print(f"LSTM {a.layers} x {a.hidden}, embed {a.embed}, vocab {a.vocab}")
    print(f"seqtool (compiled loop):      {ours:10.0f} chars/s")
    print(f"seqtool sample (end to end):  {n / secs:10.0f} chars/s ({n} chars in {secs:.2f} s "
          f"incl. start-up)")
    print(f"PyTorch (per-char loop):      {theirs:10.0f} chars/s")
    print(f"ratio:                        {ours / theirs:10.1f}x")


if __name__ == "__main__":
    main()
