"""A loaded seq2seq model as the task protocol's Predictor: ``seqtool predict`` (one translation
per input line, attention maps on request) and ``seqtool eval`` (BLEU and exact match, by
source length)."""

from __future__ import annotations

import os
import sys

import numpy as np

from seqtool.data.pairs import read_pairs
from seqtool.errors import SeqtoolError, UsageError
from seqtool.io.fileio import display_name, numbered_lines, open_input
from seqtool.tasks.base import Record, Report, TaskOptions, reporter_of
from seqtool.tasks.seq2seq import metrics
from seqtool.tasks.seq2seq.decode import EVAL_BATCH, Translator
from seqtool.tasks.seq2seq.text import EOS, SPECIALS, display_token

__all__ = ["Predictor", "draw_attention"]

SHADES = " \u2591\u2592\u2593\u2588"  # attention weight 0 .. 1 as unicode shade blocks
_CELL_MAX = 8  # widest column label in the terminal heat-map
_PNG_CELL = 16  # pixels per attention cell in --attention-png images


def draw_attention(weights, source_tokens, target_tokens) -> list[str]:
    """A source x target heat-map as text lines: one row per target token (with <eos>), one
    column per source token, each cell a shade block from ' ' (0) to full (1)."""
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
    from seqtool.io.png import heatmap_rgb, write_png

    path = os.path.join(directory, f"attention-{number:06d}.png")
    write_png(path, heatmap_rgb(np.asarray(weights), vmin=0.0, vmax=1.0, scale=_PNG_CELL))
    return path


def _prepare_png_dir(directory: str | None) -> None:
    if directory is None:
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise SeqtoolError(f"cannot create {directory}: {e.strerror or e}") from None


def _numbered_lines(inputs, strict: bool = False):
    """(input name, line number, line without its newline) of every input ('-': stdin), read
    one line at a time so each answer can be printed before the next line arrives; an input
    that cannot be read is reported and the next one read (unless strict)."""
    from seqtool.tasks.base import each_input

    def lines(path):
        name = display_name(path)
        with open_input(path) as f:
            for lineno, line in numbered_lines(f, name):
                yield name, lineno, line.rstrip("\r\n")

    return each_input(inputs or ("-",), lines, strict)


def _decoding(options: TaskOptions) -> tuple[int, float, int | None]:
    """(beam width, length penalty, longest output or None) of --beam, --length-penalty, --max-len."""
    return (int(options.get("beam", 1)), float(options.get("length_penalty", 1.0)),
            options.get("max_len"))


def _decoding_name(options: TaskOptions) -> str:
    beam, alpha, _ = _decoding(options)
    return f"beam {beam}, length penalty {alpha:g}" if beam > 1 else "greedy"


class Predictor:
    """A seq2seq model file ready to translate (``translator`` holds model and vocabularies)."""

    def __init__(self, translator: Translator):
        self.translator = translator

    def _translate(self, src_ids, beam: int, alpha: float, max_len):
        """The best Hypothesis for one source (None for an empty one)."""
        if len(src_ids) == 0:
            return None
        if beam > 1:
            return self.translator.beam(src_ids, beam, alpha, max_len)
        return self.translator.greedy([src_ids], max_len)[0]

    # ---- predict
    def predict(self, inputs: tuple, options: TaskOptions, reporter=None):
        """Records of each input line's translation (text: the translation; an empty line gives
        an empty line). --show-attention draws each map on stderr, --attention-png writes PNGs."""
        options.only("seq2seq", ("beam", "length_penalty", "max_len", "show_attention",
                                 "attention_png"))
        if (options.get("show_attention") or options.get("attention_png")) and \
                self.translator.model.attention == "none":
            raise UsageError("this model has no attention (trained with --attention none): "
                             "nothing to draw")
        _prepare_png_dir(options.get("attention_png"))
        return self._records(inputs, options, reporter_of(reporter))

    def _records(self, inputs, options: TaskOptions, reporter):
        tr = self.translator
        decoding = _decoding(options)
        png_dir = options.get("attention_png")
        want_attention = bool(options.get("show_attention") or png_dir)
        for number, (name, lineno, text) in enumerate(_numbered_lines(inputs, options.strict), start=1):
            src_toks, src_ids = tr.source_ids(text)
            hyp = self._translate(src_ids, *decoding)
            translation = "" if hyp is None else tr.text(hyp.ids)
            data = {"input": name, "line": lineno, "source": text, "translation": translation,
                    "score": None if hyp is None else hyp.score}
            if hyp is not None and hyp.attention is not None and want_attention:
                data["attention"] = [[round(float(w), 4) for w in row] for row in hyp.attention]
            yield Record(data, translation)  # printed before the map below is drawn
            if hyp is None or hyp.attention is None:
                continue
            if options.get("show_attention"):
                self._show_attention(hyp, src_toks, f"{name} line {lineno}:")
            if png_dir:
                reporter.info(f"wrote {_attention_png(png_dir, number, hyp.attention)}")

    def _show_attention(self, hyp, src_toks, title: str) -> None:
        """The map on stderr; asked for, so shown even with --quiet."""
        tgt_toks = self.translator.tgt.decode(hyp.ids)
        if len(hyp.attention) > len(hyp.ids):
            tgt_toks.append(SPECIALS[EOS])
        lines = [title, *draw_attention(hyp.attention, src_toks, tgt_toks)]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()

    # ---- evaluate
    def evaluate(self, data: tuple, options: TaskOptions, reporter=None) -> Report:
        """Corpus BLEU, exact match and both by source length on one PAIRS file. --multi-ref:
        one translation per distinct source, scored against all of that source's targets."""
        reporter = reporter_of(reporter)
        options.only("seq2seq", ("beam", "length_penalty", "max_len", "multi_ref"))
        if len(data) != 1:
            raise UsageError("seq2seq eval takes one PAIRS.tsv file (or '-')")
        metrics.require_sacrebleu()
        multi_ref = bool(options.get("multi_ref"))
        pairs = read_pairs(data[0], reverse=self.translator.reverse)
        if pairs.bad_count:
            reporter.warn(pairs.bad_message())
        texts, ref_lists = metrics.references_by_source(pairs.sources, pairs.targets, multi_ref)
        sources = [self.translator.source_ids(s)[1] for s in texts]
        hyps = self._translate_all(sources, options, reporter)
        counted = "sources" if multi_ref else "pairs"  # what a bucket counts
        scores = metrics.score_translations(hyps, ref_lists, [len(s) for s in sources], counted)
        return _eval_report(scores, len(pairs.sources), ref_lists, multi_ref,
                            _decoding_name(options))

    def _translate_all(self, sources, options: TaskOptions, reporter) -> list[str]:
        """Every source's translation, shortest first (similar lengths batch well)."""
        tr = self.translator
        beam, alpha, max_len = _decoding(options)
        hyps = [None] * len(sources)
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        step = 1 if beam > 1 else EVAL_BATCH
        with reporter.progress("translating", total=len(order)) as bar:
            for k in range(0, len(order), step):
                part = order[k:k + step]
                if beam > 1:
                    found = [tr.beam(sources[i], beam, alpha, max_len) for i in part]
                else:
                    found = tr.greedy([sources[i] for i in part], max_len)
                for i, h in zip(part, found):
                    hyps[i] = tr.text(h.ids)
                bar.advance(len(part))
        return hyps


def _eval_report(scores: metrics.Scores, n_pairs: int, ref_lists, multi_ref: bool,
                 decoding: str) -> Report:
    """The eval block as printed and as one JSON object."""
    n_refs = sum(len(r) for r in ref_lists)
    counted = "sources" if multi_ref else "pairs"
    data = {"task": "seq2seq", "bleu": round(scores.bleu.score, 2),
            "exact": round(float(scores.exact.mean()), 4), "pairs": n_pairs, "decoding": decoding,
            "signature": scores.signature, "bucket_signature": scores.bucket_signature,
            "by_source_length": scores.table}
    if multi_ref:
        data.update(sources=len(ref_lists), references=n_refs)
    scored = (f"{len(ref_lists)} sources, {n_refs} distinct references from {n_pairs} pairs"
              if multi_ref else f"{n_pairs} pairs")
    lines = [f"BLEU {scores.bleu.score:.2f}  exact match {100 * scores.exact.mean():.2f}%  "
             f"({scored}, {decoding})",
             f"sacrebleu {scores.signature}: {scores.bleu}",
             f"{'source tokens':>13}  {counted:>7}  {'BLEU*':>6}  {'exact':>7}   "
             f"(* effective n-gram order within a bucket)"]
    lines += [f"{row['source_len']:>13}  {row[counted]:>7}  {row['bleu']:>6.2f}  "
              f"{100 * row['exact']:>6.2f}%" for row in scores.table]
    return Report(data, "\n".join(lines))
