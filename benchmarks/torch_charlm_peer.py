"""The PyTorch char-LSTM peer that `seqtool train charlm` must beat at equal wall-clock.

    python benchmarks/torch_charlm_peer.py TEXT [--time-budget 300] [--device cpu|cuda] [--json]

Model and training follow jcjohnson/torch-rnn's defaults (train.lua):
    Embedding(V, 64) -> LSTM(64, 128) -> LSTM(128, 128) -> Linear(128, V), no dropout
    batch 50, seq-len 50, Adam lr 2e-3, gradient clip 5
    (torch-rnn clamps every gradient value to [-5, 5]; --clip-mode norm clips the global norm
    instead, as `seqtool train --clip-norm` does).
torch-rnn also halves the lr every 5 epochs; that is off by default here (--lr-decay-every 5
turns it on) because a time budget on a small text runs hundreds of epochs and the decay
would drive the lr to zero, handicapping the peer.
Data: the file's characters (vocabulary = the characters of the whole file), the LAST 10% held
out for validation. Truncated BPTT as torch-rnn: the training text is cut into 50 streams, one
per batch row, read 50 characters at a time, with the LSTM state carried from one chunk to the
next (detached) and reset at each epoch.

Training stops at the first step that would start after --time-budget seconds of training
(validation is not counted). The final validation loss is computed the way seqtool's charlm
evaluates (seqtool/tasks/charlm.py): 128 parallel streams over the validation text, each
warmed up on the 64 characters before it (unscored), mean cross-entropy in nats per character.

Prints steps, epochs, training seconds, chars/s (training characters per second) and the final
validation loss. Needs torch (an optional dependency of seqtool). --device cuda trains on the
GPU (cuDNN's LSTM; batches are moved there step by step, as seqtool's charlm does), the peer
for `seqtool train charlm --device cuda` (benchmarks/gpu.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

EVAL_STREAMS, EVAL_WARMUP, EVAL_CHUNK = 128, 64, 256  # as seqtool.tasks.charlm


def load(path, val_frac):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    n_val = int(round(len(ids) * val_frac))
    return vocab, ids, ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def make_model(torch, vocab_size, embed, hidden, layers):
    nn = torch.nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, embed)
            self.rnn = nn.LSTM(embed, hidden, layers)  # time-major (T, N, E)
            self.head = nn.Linear(hidden, vocab_size)

        def forward(self, tokens, state=None):
            y, state = self.rnn(self.embed(tokens), state)  # (T, N, H)
            return self.head(y), state  # (T, N, V)

    return CharLSTM()


def batches(train, batch, seq_len):
    """(chunks, T, N) inputs and targets: chunk k of stream n is train[n*S + k*T : ... + T]."""
    S = (len(train) - 1) // batch
    chunks = S // seq_len
    if chunks < 1:
        sys.exit(f"text too short for batch {batch} x seq-len {seq_len}")
    idx = np.arange(batch)[None, None, :] * S + np.arange(chunks * seq_len).reshape(chunks, seq_len)[:, :, None]
    return train[idx], train[idx + 1]


def evaluate(torch, model, full, n_val, device="cpu"):
    """Mean cross-entropy (nats/char) over the last n_val characters, seqtool's procedure."""
    F = torch.nn.functional
    offset = len(full) - n_val
    N = max(1, min(EVAL_STREAMS, (n_val - 1) // 8))
    S = (n_val - 1) // N
    starts = offset + np.arange(N) * S
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        state = None
        W = int(min(EVAL_WARMUP, offset))
        if W:
            warm = full[starts[:, None] - W + np.arange(W)[None, :]].T  # (W, N)
            _, state = model(torch.from_numpy(np.ascontiguousarray(warm)).to(device), None)
        for t0 in range(0, S, EVAL_CHUNK):
            pos = starts[None, :] + np.arange(t0, min(S, t0 + EVAL_CHUNK))[:, None]  # (t, N)
            logits, state = model(torch.from_numpy(full[pos]).to(device), state)
            target = torch.from_numpy(full[pos + 1]).to(device)
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                           reduction="sum"))
            count += pos.size
    model.train()
    return total / count, count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("text", help="UTF-8 text file")
    p.add_argument("--time-budget", type=float, default=300.0, help="training seconds (default 300)")
    p.add_argument("--val-frac", type=float, default=0.1, help="last part held out (default 0.1)")
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-decay-every", type=int, default=0,
                   help="multiply the lr by --lr-decay-factor every this many epochs (torch-rnn: 5; default 0: never)")
    p.add_argument("--lr-decay-factor", type=float, default=0.5)
    p.add_argument("--clip", type=float, default=5.0, help="gradient clip (0: none)")
    p.add_argument("--clip-mode", choices=("value", "norm"), default="value",
                   help="value: clamp each gradient element (torch-rnn); norm: global norm")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch.set_num_threads (default: the cores this process may use)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args(argv)
    if args.time_budget <= 0 or not 0 < args.val_frac < 1:
        p.error("--time-budget must be > 0 and --val-frac in (0, 1)")
    try:
        import torch
    except ImportError:
        sys.exit("PyTorch is not installed: pip install torch")

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("PyTorch here has no CUDA GPU: use --device cpu")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    vocab, full, train, val = load(args.text, args.val_frac)
    if len(val) < 2:
        sys.exit("text too short for a validation split")
    xs, ys = batches(train, args.batch, args.seq_len)  # (chunks, T, N)
    xs, ys = torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(np.ascontiguousarray(ys))
    model = make_model(torch, len(vocab), args.embed, args.hidden, args.layers).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    F = torch.nn.functional

    steps, epoch, k, state, loss_value = 0, 0, 0, None, float("nan")
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < args.time_budget:
        if k == len(xs):  # epoch boundary: state reset, torch-rnn's lr decay
            k, state, epoch = 0, None, epoch + 1
            if args.lr_decay_every and epoch % args.lr_decay_every == 0:
                for g in opt.param_groups:
                    g["lr"] *= args.lr_decay_factor
        logits, state = model(xs[k].to(args.device), state)  # (T, N, V)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys[k].to(args.device).reshape(-1))
        opt.zero_grad()
        loss.backward()
        if args.clip > 0:
            if args.clip_mode == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), args.clip)
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        loss_value = loss.item()  # waits for the step (on a GPU too)
        steps, k = steps + 1, k + 1
    seconds = time.perf_counter() - t_start
    val_loss, val_scored = evaluate(torch, model, full, len(val), args.device)
    rec = {"peer": "torch-rnn defaults (PyTorch)", "torch_version": torch.__version__,
           "device": args.device, "threads": args.threads, "steps": steps, "epochs": epoch + k / len(xs),
           "train_seconds": seconds, "chars_per_s": steps * args.batch * args.seq_len / seconds,
           "last_train_loss": loss_value, "val_loss": val_loss, "val_bits_per_char": val_loss / math.log(2),
           "val_chars": len(val), "val_scored": val_scored, "vocab": len(vocab)}
    if args.json:
        print(json.dumps(rec))
    else:
        print(f"steps {steps}  epochs {rec['epochs']:.2f}  {seconds:.1f} s  "
              f"{rec['chars_per_s']:,.0f} chars/s  ({args.device}, {args.threads} threads, torch {torch.__version__})")
        print(f"final validation loss {val_loss:.4f} nats/char ({rec['val_bits_per_char']:.3f} bits/char) "
              f"({val_scored:,} of the last {len(val):,} characters scored); last train loss {loss_value:.4f}")


if __name__ == "__main__":
    main()
