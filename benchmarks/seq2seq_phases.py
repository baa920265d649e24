"""Where a seq2seq training step's time goes, phase by phase, on real Tatoeba batches.

    python benchmarks/seq2seq_phases.py PAIRS.tsv [--steps 30] [--batch 64]

Builds the default model (seqtool.tasks.seq2seq.defaults) on PAIRS, then times, each forward
plus backward on the shapes of the same batches: the embeddings and encoder, the decoder's
recurrence, the attention, the output layer's (T*N, H) x (H, V) product (with its GFLOP/s),
the softmax cross-entropy over the target vocabulary, Adam, and the whole step. The whole step minus the
phases is the autograd's bookkeeping and the rest of the Python. Medians over --steps batches.
"""

import argparse
import statistics
import time

import numpy as np

import seqtool
from seqtool.core.autograd import Tensor
from seqtool.core.losses import cross_entropy
from seqtool.data.pairs import read_pairs
from seqtool.optim import make_optimizer
from seqtool.tasks.seq2seq.defaults import DEFAULTS
from seqtool.tasks.seq2seq.text import PAD
from seqtool.tasks.seq2seq.training import build_task


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _backward(out: Tensor) -> None:
    out.backward(np.ones(out.shape, out.dtype))  # a seed gradient, no extra sum node


def _phases(task, model, batch) -> dict:
    src, lengths, tgt_in, tgt_out = batch
    T, N = tgt_in.shape
    H = model.hidden
    emb = Tensor(np.asarray(model.tgt_embed(tgt_in).data), requires_grad=True)
    y = Tensor(np.random.default_rng(0).standard_normal((T, N, H)).astype(np.float32), requires_grad=True)
    memory, _ = model.encode(src, lengths)
    keys, values = Tensor(memory.keys.data), Tensor(memory.values.data)
    logits = Tensor(np.asarray(model.out(y).data), requires_grad=True)
    return {
        "embeddings + encoder": _timed(lambda: _backward(model.encode(src, lengths)[0].values)),
        "decoder recurrence": _timed(lambda: _backward(model.decoder(emb, None)[0])),
        "attention": _timed(lambda: _backward(model.attn(y.transpose(1, 0, 2), keys, values, memory.mask)[0])),
        "output layer product": _timed(lambda: _backward(model.out(y))),
        "softmax cross-entropy": _timed(lambda: cross_entropy(logits, tgt_out, ignore_index=PAD).backward()),
        "rows": T * N,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    args = ap.parse_args()
    config = {k: DEFAULTS[k] for k in ("cell", "hidden", "layers", "embed", "dropout", "bidirectional",
                                       "attention", "input_feeding", "unit")}
    data = {"batch": args.batch, "val_frac": None, "min_count": None, "teacher_forcing": 1.0,
            "reverse": False}
    rng = np.random.default_rng(0)
    task = build_task(read_pairs(args.pairs), config, data, None, rng)
    model = task.model
    opt = make_optimizer("adam", list(model.parameters()), DEFAULTS["lr"])
    batches = task.train_batches(rng)
    rows = []
    for i in range(args.steps + 3):  # the first ones compile and warm the caches
        batch = next(batches)
        for p in model.parameters():
            p.grad = None
        times = _phases(task, model, batch)
        for p in model.parameters():
            p.grad = None
        times["whole step (forward, backward)"] = _timed(lambda: task.loss(batch).backward())
        times["Adam"] = _timed(opt.step)
        times["tokens"] = int((batch[3] != PAD).sum())
        if i >= 3:
            rows.append(times)
    print(f"{len(task.src_vocab):,} source / {len(task.tgt_vocab):,} target words; batch {args.batch}; "
          f"median over {len(rows)} steps; {seqtool.__name__} threads: "
          f"{__import__('numba').get_num_threads()}")
    whole = statistics.median(r["whole step (forward, backward)"] for r in rows)
    for name in rows[0]:
        if name not in ("tokens", "rows"):
            ms = 1e3 * statistics.median(r[name] for r in rows)
            print(f"  {name:34s} {ms:8.1f} ms  {100 * ms / (1e3 * whole):5.1f}% of forward+backward")
    print(f"  target tokens per batch (median)   {statistics.median(r['tokens'] for r in rows):8.0f}")
    # forward (M x H x V), weight gradient and input gradient: three products of 2 M H V flops
    flops = [6 * r["rows"] * model.hidden * len(task.tgt_vocab) / r["output layer product"] for r in rows]
    print(f"  output layer product: {statistics.median(flops) / 1e9:.0f} GFLOP/s "
          f"(padded rows T x N, median {statistics.median(r['rows'] for r in rows):.0f})")


if __name__ == "__main__":
    main()
