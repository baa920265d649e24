"""Scoring translations: corpus BLEU (sacrebleu, default 13a tokenization: the `sacrebleu`
command's number), exact match, and both by source length."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seqtool.errors import SeqtoolError

__all__ = ["require_sacrebleu", "references_by_source", "length_buckets", "reference_streams",
           "Scores", "score_translations"]


def require_sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise SeqtoolError("seq2seq eval needs sacrebleu: pip install sacrebleu") from None
    return sacrebleu


def references_by_source(sources, targets, multi_ref: bool) -> tuple[list[str], list[list[str]]]:
    """(texts to translate, their references). With ``multi_ref`` a source given several times
    (several valid translations) is one item, scored against each distinct target once."""
    if not multi_ref:
        return list(sources), [[" ".join(t.split())] for t in targets]
    grouped: dict[str, list[str]] = {}
    for src, tgt in zip(sources, targets):
        grouped.setdefault(" ".join(src.split()), []).append(" ".join(tgt.split()))
    return list(grouped), [list(dict.fromkeys(refs)) for refs in grouped.values()]


def length_buckets(lengths) -> list[tuple[int, int]]:
    """Fixed-width source-length buckets (at most 6) that depend only on the data."""
    top = max(lengths)
    width = max(1, math.ceil(top / 6))
    return [(lo, lo + width - 1) for lo in range(1, top + 1, width)]


def reference_streams(ref_lists, rows) -> list[list[str | None]]:
    """sacrebleu's reference streams for the given rows: stream k holds each row's k-th
    reference, None where a row has fewer (sacrebleu then reports nrefs:var)."""
    n = max(len(ref_lists[i]) for i in rows)
    return [[ref_lists[i][k] if k < len(ref_lists[i]) else None for i in rows] for k in range(n)]


@dataclass
class Scores:
    bleu: object  # sacrebleu's BLEUScore of the whole corpus
    exact: np.ndarray  # (items,) bool: the translation is one of the references
    table: list[dict]  # per length bucket: source_len, <counted>, bleu, exact
    signature: str
    bucket_signature: str


def score_translations(hyps, ref_lists, lengths, counted: str) -> Scores:
    """Corpus BLEU and exact match, and per source-length bucket (``counted`` names what a bucket
    counts: "pairs" or "sources")."""
    sacrebleu = require_sacrebleu()
    metric = sacrebleu.BLEU()  # the defaults of the `sacrebleu` command (13a, exp smoothing)
    bleu = metric.corpus_score(hyps, reference_streams(ref_lists, range(len(hyps))))
    exact = np.array([h in refs for h, refs in zip(hyps, ref_lists)])
    bucket_metric = sacrebleu.BLEU(effective_order=True)
    table = []
    for lo, hi in length_buckets(lengths):
        idx = [i for i, n in enumerate(lengths) if lo <= n <= hi]
        if not idx:
            continue
        # Effective order: a bucket of 1-3 word sentences has no 4-grams, and plain BLEU would
        # be 0 for every model there; the corpus score above stays the standard one.
        b = bucket_metric.corpus_score([hyps[i] for i in idx], reference_streams(ref_lists, idx))
        table.append({"source_len": f"{lo}-{hi}" if hi > lo else str(lo), counted: len(idx),
                      "bleu": round(b.score, 2), "exact": round(float(exact[idx].mean()), 4)})
    return Scores(bleu, exact, table, str(metric.get_signature()),
                  str(bucket_metric.get_signature()))
