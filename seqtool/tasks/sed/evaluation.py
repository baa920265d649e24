"""Scores of detected events against a reference, as a report; and ``seqtool eval PRED.tsv
REF.tsv``, which scores an event list without a model."""

from __future__ import annotations

import math

from seqtool.data.events import read_events
from seqtool.errors import SeqtoolError, UsageError
from seqtool.metrics.sed import dcase_scores
from seqtool.tasks.base import Report, TaskOptions
from seqtool.tasks.sed.data import match_table_names
from seqtool.tasks.sed.model import NAME

__all__ = ["score_report", "is_event_table", "evaluate_tables"]

_METRICS = (("segment_based", "segment-based (1 s segments)"),
            ("event_based", "event-based (onset+offset collars)"),
            ("event_based_onset_only", "event-based (onset collar only)"))


def _pct(x) -> str:
    return "   nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}%"


def _overall_line(title: str, m: dict) -> str:
    return (f"{title:<34} F1 {_pct(m['f1'])}  P {_pct(m['precision'])}  R {_pct(m['recall'])}  "
            f"ER {m['error_rate']:.3f} (S {m['substitution_rate']:.3f} D {m['deletion_rate']:.3f} "
            f"I {m['insertion_rate']:.3f})")


def _report_text(scores: dict, labels) -> str:
    seg, evt = scores["segment_based"], scores["event_based"]
    lines = [_overall_line(title, scores[key]) for key, title in _METRICS]
    lines.append(f"reference events {evt['n_ref']}, detected {evt['n_sys']}; "
                 f"macro segment F1 {_pct(seg['f1_macro'])}, macro event F1 {_pct(evt['f1_macro'])}")
    w = max(len(lab) for lab in labels)
    lines.append(f"{'class':<{w}}  {'seg F1':>7}  {'seg ER':>6}  {'evt F1':>7}  {'evt ER':>6}  {'ref':>4}  {'sys':>4}")
    for lab in labels:
        s, e = seg["class_wise"][lab], evt["class_wise"][lab]
        lines.append(f"{lab:<{w}}  {_pct(s['f1'])}  {s['error_rate']:6.3f}  {_pct(e['f1'])}  "
                     f"{e['error_rate']:6.3f}  {e['n_ref']:>4}  {e['n_sys']:>4}")
    return "\n".join(lines)


def _report_data(scores: dict, labels, files: int) -> dict:
    seg, evt = scores["segment_based"], scores["event_based"]
    overall = {key: {k: v for k, v in scores[key].items() if k != "class_wise"} for key, _ in _METRICS}
    class_wise = {lab: {"segment_f1": seg["class_wise"][lab]["f1"],
                        "segment_er": seg["class_wise"][lab]["error_rate"],
                        "event_f1": evt["class_wise"][lab]["f1"],
                        "event_er": evt["class_wise"][lab]["error_rate"]} for lab in labels}
    return {"task": NAME, "files": files, **overall, "class_wise": class_wise}


def score_report(ref: list, est: list, labels, files: int, durations: dict | None = None) -> Report:
    """Segment-based and event-based scores (DCASE collars) of ``est`` against ``ref``."""
    scores = dcase_scores(ref, est, labels, durations)
    return Report(_report_data(scores, labels, files), _report_text(scores, labels))


def is_event_table(path) -> bool:
    """True for '-' or a file that reads as an event list (empty, or its first line a DCASE
    header or row); False for a model file, a missing path or other text.
    """
    if str(path) == "-":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    lines = head.decode("utf-8", errors="replace").splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        return b"\0" not in head  # an empty list: a detector that found nothing
    cols = first.split("\t") if "\t" in first else first.split()
    if {c.strip().lower() for c in cols} & {"onset", "offset", "event_label", "event_onset"}:
        return True
    if len(cols) not in (3, 4):
        return False
    if "\t" in first:  # tab-separated with the right column count: read it, errors name the line
        return True
    times = cols[1:3] if len(cols) == 4 else cols[0:2]
    try:
        [float(t) for t in times]
    except ValueError:
        return False
    return True


def evaluate_tables(pred_path, data: tuple, options: TaskOptions, reporter=None) -> Report:
    """``seqtool eval PRED.tsv REF.tsv``: score an event list against a reference, no model.

    Labels are those of both lists; a file lasts until its last event (no audio to measure).
    """
    TaskOptions(options).only(NAME, ())
    if len(data) != 1:
        raise UsageError("scoring an event list takes PREDICTED.tsv REFERENCE.tsv")
    if pred_path == "-" and data[0] == "-":
        raise UsageError("only one of PREDICTED and REFERENCE can be stdin")
    est = read_events(pred_path)
    ref = read_events(data[0])
    est = match_table_names(est, ref)
    labels = sorted({e.label for e in ref} | {e.label for e in est})
    if not labels:
        raise SeqtoolError("both event lists are empty: nothing to score")
    return score_report(ref, est, labels, len({e.filename for e in ref} | {e.filename for e in est}))
