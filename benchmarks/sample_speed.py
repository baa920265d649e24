"""Generation speed: seqtool's compiled sampling loop vs a PyTorch loop, one character at a time.

    python benchmarks/sample_speed.py [--hidden 256] [--layers 2] [--rounds 5] [--model FILE]

Both run the same LSTM charlm: by default a 2 x 256 one with random weights (embed 64,
vocab 96), or with --model a trained charlm LSTM file; the weights are copied into
torch.nn modules, and both sample with temperature 1. seqtool: `seqtool.tasks.charlm.sampler.generate`
(what `seqtool sample` runs: the whole loop in one @njit call per 4096 tokens, the hidden units
split over `seqtool.tasks.charlm.sampler.sampling_threads()` threads), after a warm-up call so compilation
is not counted. PyTorch: embedding -> nn.LSTM -> Linear -> softmax -> multinomial per character
under torch.no_grad(), with torch.set_num_threads(TORCH_THREADS, default 2: faster here than
1, 1,950 vs 1,420 chars/s). The two alternate for --rounds rounds, so a machine that speeds up
or slows down during the run moves both; the ratio reported is the median of the rounds'
ratios. The end-to-end `seqtool sample` command (process start, model load, cached compile) is
timed once, separately. Needs torch (optional dependency).
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


def seqtool_runner(path, length):
    from seqtool.tasks.charlm import load as load_charlm
    from seqtool.tasks.charlm.sampler import generate, sampling_threads

    lm = load_charlm(path)
    print(f"seqtool sampling threads: {sampling_threads(lm)}", file=sys.stderr)
    generate(lm, 100, seed=0)  # compile (or load the cache) outside the timing

    def rate(seed):
        t = time.perf_counter()
        text = generate(lm, length, seed=seed)
        return len(text) / (time.perf_counter() - t)
    return rate


def cli_rate(path, length):
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "seqtool.cli.main", "sample", str(path),
                          "--length", str(length), "--seed", "1", "-q"],
                         capture_output=True, check=True).stdout
    return len(out.decode("utf-8")), time.perf_counter() - t


def torch_runner(path, length, device="cpu"):
    """The same model in torch.nn, one character per step on `device`: rate(round) -> chars/s."""
    import torch

    from seqtool.io.modelfile import load_model

    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    dev = torch.device(device)
    arrays, meta = load_model(path, expect_task="charlm")
    cfg = meta["config"]
    V, E = arrays["embed.weight"].shape
    emb = torch.nn.Embedding(V, E).to(dev)
    rnn = torch.nn.LSTM(E, cfg["hidden"], cfg["layers"]).to(dev)
    head = torch.nn.Linear(cfg["hidden"], V).to(dev)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(arrays["embed.weight"]))
        rnn.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in arrays.items()
                             if k.startswith("rnn.")})
        head.weight.copy_(torch.from_numpy(arrays["head.weight"]))
        head.bias.copy_(torch.from_numpy(arrays["head.bias"]))
    gen = torch.Generator(device=dev).manual_seed(0)

    def run(n):
        tok, state, out = torch.zeros(1, 1, dtype=torch.long, device=dev), None, []
        with torch.no_grad():
            for _ in range(n):
                y, state = rnn(emb(tok), state)
                p = torch.softmax(head(y[0, 0]), dim=-1)
                tok = torch.multinomial(p, 1, generator=gen).view(1, 1)
                out.append(int(tok))  # to the host: each step waits for the device
        return out

    run(50)  # warm-up (on a GPU also cuDNN plans and the allocator)

    def rate(_round):
        t = time.perf_counter()
        run(length)
        return length / (time.perf_counter() - t)
    return rate


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
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = a.model
        if path is None:
            path = os.path.join(d, "lm.st")
            build(path, a.hidden, a.layers, a.embed, a.vocab)
        ours, theirs = seqtool_runner(path, a.length), torch_runner(path, a.torch_length)
        rounds = [(ours(seed), theirs(seed)) for seed in range(a.rounds)]
        n, secs = cli_rate(path, a.length)
        from seqtool.io.modelfile import load_model

        meta = load_model(path, expect_task="charlm")[1]
    cfg, vocab = meta["config"], len(meta["vocab"]["tokens"])
    ours_r = np.array([r[0] for r in rounds])
    theirs_r = np.array([r[1] for r in rounds])
    ratios = ours_r / theirs_r
    print(f"{cfg['cell'].upper()} {cfg['layers']} x {cfg['hidden']}, embed {cfg['embed']}, "
          f"vocab {vocab}, {'trained: ' + a.model if a.model else 'random weights'}")
    print(f"rounds:                       {a.rounds} (seqtool {a.length} chars, PyTorch "
          f"{a.torch_length} chars each)")
    print(f"seqtool (compiled loop):      {np.median(ours_r):10.0f} chars/s median "
          f"({ours_r.min():.0f}-{ours_r.max():.0f})")
    print(f"seqtool sample (end to end):  {n / secs:10.0f} chars/s ({n} chars in {secs:.2f} s "
          f"incl. start-up)")
    print(f"PyTorch (per-char loop):      {np.median(theirs_r):10.0f} chars/s median "
          f"({theirs_r.min():.0f}-{theirs_r.max():.0f})")
    print(f"ratio:                        {np.median(ratios):10.1f}x median of rounds "
          f"({ratios.min():.1f}-{ratios.max():.1f}x)")


if __name__ == "__main__":
    main()
