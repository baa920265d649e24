"""seq2seq commands: ``seqtool train seq2seq``, and the predict / eval handlers for seq2seq models.

Heavy imports stay inside the functions so ``seqtool --help`` does not load NumPy or Numba.
"""

from __future__ import annotations

import math
import os
import sys

import click

from seqtool.cli.options import Reporter, common_options, train_options
from seqtool.device import module_to, require as require_device

SHADES = " \u2591\u2592\u2593\u2588"  # attention weight 0 .. 1 as unicode shade blocks
_CELL_MAX = 8  # widest column label in the terminal heat-map
_PNG_CELL = 16  # pixels per attention cell in --attention-png images


@click.command("seq2seq")
@click.argument("pairs", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@click.option("--attention", type=click.Choice(["none", "dot", "general", "additive"]), default=None,
              help="Decoder attention: none (fixed vector), dot / general (Luong), additive "
                   "(Bahdanau) [default: general].")
@click.option("--input-feeding/--no-input-feeding", default=None,
              help="With attention: feed the previous attentional vector into the decoder "
                   "(Luong's input feeding), one decoder step at a time; without it the decoder "
                   "and the attention run over the whole target at once (faster) "
                   "[default: off].")
@click.option("--unit", type=click.Choice(["word", "char"]), default=None,
              help="Token unit on both sides [default: word].")
@click.option("--embed", type=click.IntRange(min=1), default=None, help="Embedding size [default: 128].")
@click.option("--teacher-forcing", type=click.FloatRange(0, 1), default=None, metavar="RATIO",
              help="Probability of feeding the gold previous token instead of the model's own "
                   "prediction [default: 1.0].")
@click.option("--min-count", type=click.IntRange(min=1), default=None,
              help="Rarer tokens become <unk> [default: 1].")
@click.option("--reverse", is_flag=True, default=False,
              help="Swap the columns: the file is target<TAB>source.")
@click.option("--strict", is_flag=True, default=False,
              help="Fail on a bad line (no tab, empty side) instead of skipping it.")
@train_options
@common_options
def train_seq2seq(pairs, output, attention, input_feeding, unit, embed, teacher_forcing, min_count,
                  reverse, strict,
                  cell, hidden, layers, bidirectional, dropout, optimizer, lr, clip_norm, batch,
                  seq_len, epochs, steps, time_budget, patience, checkpoint_every, resume, val_frac,
                  json_output, quiet, device, seed):
    """Train an encoder-decoder on PAIRS ('-' for stdin): one source<TAB>target pair per line.

    A random --val-frac of the pairs (the same ones on every run) is held out; each validation
    reports the loss and the greedy exact match (and BLEU) on up to 500 of them. Without a
    stopping rule it trains for 10 epochs. --resume MODEL continues exactly.
    """
    import numpy as np

    from seqtool import modelfile
    from seqtool.cli.train import check_output, run_training
    from seqtool.data.pairs import read_pairs
    from seqtool.errors import UsageError
    from seqtool.tasks.seq2seq import (DEFAULTS, OLDER_FILE_CONFIG, Seq2SeqTask, Vocab, build_seq2seq,
                                       config_of, detokenize, tokenize)
    from seqtool.train import TrainSettings

    out = Reporter(quiet=quiet, json_output=json_output)
    if seq_len is not None:
        raise UsageError("--seq-len does not apply to seq2seq (each pair is one sequence)")
    require_device(device)  # before reading any data: one-line error without a GPU
    check_output(output)

    given = {"cell": cell, "hidden": hidden, "layers": layers, "embed": embed, "dropout": dropout,
             "bidirectional": bidirectional, "attention": attention, "input_feeding": input_feeding,
             "unit": unit}
    training = {"optimizer": optimizer, "lr": lr, "clip_norm": clip_norm}
    data_opts = {"batch": batch, "val_frac": val_frac, "min_count": min_count,
                 "teacher_forcing": teacher_forcing, "reverse": reverse or None}
    vocab = None
    if resume:
        meta = modelfile.read_meta(resume, expect_task="seq2seq")
        config, saved = {**OLDER_FILE_CONFIG, **(meta.get("config") or {})}, meta.get("training") or {}
        for k, v in given.items():
            if v is not None and config.get(k) != v:
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {config.get(k)}")
        given = {k: config.get(k) for k in given}
        vocab = meta.get("vocab") or {}
        training = {k: saved.get(k) if v is None else v for k, v in training.items()}
        data_opts = {k: (meta.get("data_options") or {}).get(k) if v is None else v
                     for k, v in data_opts.items()}
    cfg = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    training = {k: DEFAULTS[k] if v is None else v for k, v in training.items()}
    data_opts = {k: DEFAULTS.get(k, False) if v is None else v for k, v in data_opts.items()}
    if epochs is None and steps is None and time_budget is None:
        epochs = 10

    data = read_pairs(pairs, reverse=bool(data_opts["reverse"]), strict=strict)
    if data.bad_count:
        out.warn(data.bad_message())
    src_tokens = [tokenize(s, cfg["unit"]) for s in data.sources]
    tgt_tokens = [tokenize(t, cfg["unit"]) for t in data.targets]
    if vocab:
        src_vocab, tgt_vocab = Vocab(vocab["source"]), Vocab(vocab["target"])
    else:
        src_vocab = Vocab.build(src_tokens, data_opts["min_count"])
        tgt_vocab = Vocab.build(tgt_tokens, data_opts["min_count"])
    rng = np.random.default_rng(seed)
    model = build_seq2seq(cfg, len(src_vocab), len(tgt_vocab), rng)
    references = [detokenize(t, cfg["unit"]) for t in tgt_tokens]
    task = Seq2SeqTask(model, src_vocab, tgt_vocab, src_tokens, tgt_tokens, cfg["unit"],
                       data_opts["batch"], data_opts["val_frac"], data_opts["teacher_forcing"],
                       references=references)
    base_meta = task.meta

    def meta():  # remember data options so --resume and eval need no repeated flags
        return {**base_meta(), "data_options": data_opts}

    task.meta = meta
    # About two validations per epoch, at least 25 and at most 500 steps apart.
    val_every = int(min(500, max(25, len(task.batches) // 2)))
    settings = TrainSettings(optimizer=training["optimizer"], lr=training["lr"],
                             clip_norm=training["clip_norm"], epochs=epochs, steps=steps,
                             time_budget=time_budget, val_every=val_every, patience=patience,
                             checkpoint_every=checkpoint_every)
    out.info(f"{len(task.train_idx):,} training and {len(task.val_idx):,} validation pairs from "
             f"{data.name}; vocabulary {len(src_vocab):,} source / {len(tgt_vocab):,} target "
             f"{cfg['unit']}s; {config_of(model, cfg['unit'])}")
    run_training(task, output, settings, rng, out, resume, device)


# ----------------------------------------------------------------------------- shared helpers


def _decode_options(opts):
    beam = int(opts.get("beam", 1))
    alpha = float(opts.get("length_penalty", 1.0))
    return beam, alpha, opts.get("max_len")


def _load(model_path, opts):
    from seqtool.tasks.seq2seq import load_seq2seq

    translator = load_seq2seq(model_path)
    module_to(translator.model, opts.device)
    return translator


def draw_attention(weights, source_tokens, target_tokens) -> list[str]:
    """A source x target heat-map as text lines: one row per target token (with <eos>), one
    column per source token, each cell a shade block from ' ' (0) to full (1)."""
    from seqtool.tasks.seq2seq import display_token

    src = [display_token(t)[:_CELL_MAX] for t in source_tokens]
    tgt = [display_token(t) for t in target_tokens]
    width = max(len(t) for t in tgt)
    cols = [max(len(s), 2) for s in src]
    lines = [" " * width + " | " + " ".join(s.ljust(c) for s, c in zip(src, cols))]
    for label, row in zip(tgt, weights):
        cells = []
        for w, c in zip(row, cols):
            level = min(len(SHADES) - 1, int(round(float(w) * (len(SHADES) - 1))))
            cells.append(SHADES[level] * c)
        lines.append(label.rjust(width) + " | " + " ".join(cells))
    return lines


def _attention_png(directory: str, number: int, weights) -> str:
    """Write the map of sentence `number` as DIR/attention-NNNNNN.png; rows are target tokens."""
    import numpy as np

    from seqtool.png import heatmap_rgb, write_png

    path = os.path.join(directory, f"attention-{number:06d}.png")
    write_png(path, heatmap_rgb(np.asarray(weights), vmin=0.0, vmax=1.0, scale=_PNG_CELL))
    return path


def _prepare_png_dir(directory: str | None) -> None:
    from seqtool.errors import SeqtoolError

    if directory is None:
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise SeqtoolError(f"cannot create {directory}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------- predict


def predict(model_path, inputs, out: Reporter, opts) -> None:
    """Translate each input line; the answer is printed (and flushed) before the next line is
    read. An empty line gives an empty line."""
    from seqtool.errors import SeqtoolError, UsageError
    from seqtool.fileio import display_name, open_input
    from seqtool.tasks.seq2seq import EOS, SPECIALS

    opts.only("seq2seq", ("beam", "length_penalty", "max_len", "show_attention", "attention_png"))
    beam, alpha, max_len = _decode_options(opts)
    tr = _load(model_path, opts)
    png_dir = opts.get("attention_png")
    want_attention = opts.get("show_attention") or png_dir
    if want_attention and tr.model.attention == "none":
        raise UsageError("this model has no attention (trained with --attention none): "
                         "nothing to draw")
    _prepare_png_dir(png_dir)
    number = 0
    for path in inputs or ("-",):
        name = display_name(path)
        with open_input(path) as f:
            lineno = 0
            while True:
                try:
                    line = f.readline()
                except UnicodeDecodeError as e:
                    raise SeqtoolError(f"{name} line {lineno + 1} is not valid UTF-8 ({e.reason})") from None
                if not line:
                    break
                lineno += 1
                number += 1
                text = line.rstrip("\r\n")
                src_toks, src_ids = tr.source_ids(text)
                if len(src_ids) == 0:
                    hyp = None
                    translation = ""
                elif beam > 1:
                    hyp = tr.beam(src_ids, beam, alpha, max_len)
                    translation = tr.text(hyp.ids)
                else:
                    hyp = tr.greedy([src_ids], max_len)[0]
                    translation = tr.text(hyp.ids)
                if out.json_output:
                    rec = {"input": name, "line": lineno, "source": text, "translation": translation,
                           "score": None if hyp is None else hyp.score}
                    if hyp is not None and hyp.attention is not None and want_attention:
                        rec["attention"] = [[round(float(w), 4) for w in row] for row in hyp.attention]
                    out.emit(rec)
                else:
                    click.echo(translation)
                    sys.stdout.flush()
                if hyp is None or hyp.attention is None:
                    continue
                tgt_toks = tr.tgt.decode(hyp.ids)
                if len(hyp.attention) > len(hyp.ids):
                    tgt_toks.append(SPECIALS[EOS])
                if opts.get("show_attention"):
                    click.echo(f"{name} line {lineno}:", err=True)
                    click.echo("\n".join(draw_attention(hyp.attention, src_toks, tgt_toks)), err=True)
                if png_dir:
                    written = _attention_png(png_dir, number, hyp.attention)
                    out.info(f"wrote {written}")


# ----------------------------------------------------------------------------- eval


def _buckets(lengths):
    """Fixed-width source-length buckets (at most 6) that depend only on the data."""
    top = max(lengths)
    width = max(1, math.ceil(top / 6))
    return [(lo, lo + width - 1) for lo in range(1, top + 1, width)]


def _reference_streams(ref_lists, rows):
    """sacrebleu's reference streams for the given rows: stream k holds each row's k-th
    reference, None where a row has fewer (sacrebleu then reports nrefs:var)."""
    n = max(len(ref_lists[i]) for i in rows)
    return [[ref_lists[i][k] if k < len(ref_lists[i]) else None for i in rows] for k in range(n)]


def evaluate(model_path, data, out: Reporter, opts) -> None:
    """Corpus BLEU (sacrebleu, default 13a tokenization: the `sacrebleu` command's number),
    exact match, and both by source length. --multi-ref: one translation per distinct source,
    scored against all of that source's targets."""
    import numpy as np

    from seqtool.data.pairs import read_pairs
    from seqtool.errors import SeqtoolError, UsageError

    opts.only("seq2seq", ("beam", "length_penalty", "max_len", "multi_ref"))
    if len(data) != 1:
        raise UsageError("seq2seq eval takes one PAIRS.tsv file (or '-')")
    try:
        import sacrebleu
    except ImportError:
        raise SeqtoolError("seq2seq eval needs sacrebleu: pip install sacrebleu") from None
    beam, alpha, max_len = _decode_options(opts)
    multi_ref = bool(opts.get("multi_ref"))
    tr = _load(model_path, opts)
    pairs = read_pairs(data[0], reverse=tr.reverse)
    if pairs.bad_count:
        out.warn(pairs.bad_message())
    if multi_ref:  # a source given several times (several valid translations) is one item
        grouped: dict[str, list[str]] = {}
        for src, tgt in zip(pairs.sources, pairs.targets):
            grouped.setdefault(" ".join(src.split()), []).append(" ".join(tgt.split()))
        texts = list(grouped)
        ref_lists = [list(dict.fromkeys(refs)) for refs in grouped.values()]  # a repeated pair once
    else:
        texts, ref_lists = pairs.sources, [[" ".join(t.split())] for t in pairs.targets]
    sources = [tr.source_ids(s)[1] for s in texts]
    hyps = [None] * len(sources)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # similar lengths batch well
    with out.progress("translating", total=len(order)) as bar:
        if beam > 1:
            for i in order:
                hyps[i] = tr.text(tr.beam(sources[i], beam, alpha, max_len).ids)
                bar.advance(1)
        else:
            for k in range(0, len(order), 128):
                part = order[k:k + 128]
                for i, h in zip(part, tr.greedy([sources[i] for i in part], max_len)):
                    hyps[i] = tr.text(h.ids)
                bar.advance(len(part))
    everything = range(len(hyps))
    metric = sacrebleu.BLEU()  # the defaults of the `sacrebleu` command (13a, exp smoothing)
    bleu = metric.corpus_score(hyps, _reference_streams(ref_lists, everything))
    exact = np.array([h in refs for h, refs in zip(hyps, ref_lists)])
    lengths = [len(s) for s in sources]
    table = []
    counted = "sources" if multi_ref else "pairs"  # what a bucket counts
    bucket_metric = sacrebleu.BLEU(effective_order=True)
    for lo, hi in _buckets(lengths):
        idx = [i for i, n in enumerate(lengths) if lo <= n <= hi]
        if not idx:
            continue
        # Effective order: a bucket of 1-3 word sentences has no 4-grams, and plain BLEU would
        # be 0 for every model there; the corpus score above stays the standard one.
        b = bucket_metric.corpus_score([hyps[i] for i in idx], _reference_streams(ref_lists, idx))
        table.append({"source_len": f"{lo}-{hi}" if hi > lo else str(lo), counted: len(idx),
                      "bleu": round(b.score, 2), "exact": round(float(exact[idx].mean()), 4)})
    decoding = f"beam {beam}, length penalty {alpha:g}" if beam > 1 else "greedy"
    signature = str(metric.get_signature())
    n_pairs, n_refs = len(pairs.sources), sum(len(r) for r in ref_lists)
    if out.json_output:
        record = {"task": "seq2seq", "bleu": round(bleu.score, 2), "exact": round(float(exact.mean()), 4),
                  "pairs": n_pairs, "decoding": decoding, "signature": signature,
                  "bucket_signature": str(bucket_metric.get_signature()),
                  "by_source_length": table}
        if multi_ref:
            record.update(sources=len(hyps), references=n_refs)
        out.emit(record)
        return
    scored = (f"{len(hyps)} sources, {n_refs} distinct references from {n_pairs} pairs"
              if multi_ref else f"{n_pairs} pairs")
    click.echo(f"BLEU {bleu.score:.2f}  exact match {100 * exact.mean():.2f}%  ({scored}, {decoding})")
    click.echo(f"sacrebleu {signature}: {bleu}")
    click.echo(f"{'source tokens':>13}  {counted:>7}  {'BLEU*':>6}  {'exact':>7}   "
               f"(* effective n-gram order within a bucket)")
    for row in table:
        click.echo(f"{row['source_len']:>13}  {row[counted]:>7}  {row['bleu']:>6.2f}  "
                   f"{100 * row['exact']:>6.2f}%")
