"""Sound event detection metrics, numerically identical to sed_eval 0.2 (Mesaros et al. 2016).

Events are grouped per filename and every file is scored on its own, then counts are summed
(micro average), as sed_eval's evaluate() loop does. Files evaluated: every filename in the
reference, the estimate or `durations`; a file with only estimates counts as insertions.

Undefined ratios follow sed_eval: precision / recall are NaN when their denominator is zero;
error rates divide by (N_ref + eps).
"""

from __future__ import annotations

import math

import numpy as np

from seqtool.errors import SeqtoolError

_EPS = float(np.spacing(1))  # sed_eval's eps in the rate denominators


def _group(events, labels) -> dict:
    known = set(labels)
    out: dict = {}
    for e in events:
        if e.label not in known:
            raise SeqtoolError(f"{e.filename}: event label {e.label!r} is not one of the evaluated labels")
        out.setdefault(e.filename, []).append(e)
    return out


def _files(ref, est, durations):
    return sorted(set(ref) | set(est) | set(durations or {}))


def _precision(tp, n_sys):
    return float("nan") if n_sys == 0 else tp / n_sys


def _recall(tp, n_ref):
    return float("nan") if n_ref == 0 else tp / n_ref


def _f1(p, r):
    if p == 0 and r == 0:
        return 0.0
    return 2 * p * r / (p + r)


def _prf(tp, n_sys, n_ref) -> dict:
    p, r = _precision(tp, n_sys), _recall(tp, n_ref)
    return {"f1": _f1(p, r), "precision": p, "recall": r}


def _class_wise(counts: dict) -> dict:
    out = {}
    for label, c in counts.items():
        d = _prf(c["tp"], c["n_sys"], c["n_ref"])
        d["deletion_rate"] = c["fn"] / (c["n_ref"] + _EPS)
        d["insertion_rate"] = c["fp"] / (c["n_ref"] + _EPS)
        d["error_rate"] = d["deletion_rate"] + d["insertion_rate"]
        d.update({"n_ref": int(c["n_ref"]), "n_sys": int(c["n_sys"]), "n_tp": int(c["tp"])})
        out[label] = d
    return out


def _summary(tp, n_sys, n_ref, s, d, i, class_counts) -> dict:
    out = _prf(tp, n_sys, n_ref)
    out["substitution_rate"] = s / (n_ref + _EPS)
    out["deletion_rate"] = d / (n_ref + _EPS)
    out["insertion_rate"] = i / (n_ref + _EPS)
    out["error_rate"] = out["substitution_rate"] + out["deletion_rate"] + out["insertion_rate"]
    out.update({"n_ref": int(n_ref), "n_sys": int(n_sys), "n_tp": int(tp),
                "substitutions": int(s), "deletions": int(d), "insertions": int(i)})
    cw = _class_wise(class_counts)
    out["class_wise"] = cw
    # macro averages skip NaN classes, like sed_eval's class_wise_average
    with np.errstate(all="ignore"):
        f1s = np.array([c["f1"] for c in cw.values()], dtype=float)
        ers = np.array([c["error_rate"] for c in cw.values()], dtype=float)
        out["f1_macro"] = float(np.nanmean(f1s)) if np.any(~np.isnan(f1s)) else float("nan")
        out["error_rate_macro"] = float(np.nanmean(ers)) if np.any(~np.isnan(ers)) else float("nan")
    return out


# ---------------------------------------------------------------- segment based


def _segment_runs(ref_events, est_events, index, res, n_seg):
    """Segment activity as runs of equal rows: (widths (K,), ref (K, C), est (K, C)).

    Run k stands for widths[k] consecutive segments with the same activity. A segment counts
    when an event touches any part of it, as in sed_eval; a row per segment, as sed_eval keeps,
    would take 8 GB per class for an offset of 1e9 s, while the runs grow with the events only.
    """
    spans = []
    for which, events in enumerate((ref_events, est_events)):
        for e in events:
            # same float expressions as sed_eval so boundary cases round identically
            lo = min(int(math.floor(e.onset * 1 / float(res))), n_seg)
            hi = min(int(math.ceil(e.offset * 1 / float(res))), n_seg)
            if hi > lo:
                spans.append((which, index[e.label], lo, hi))
    cuts = np.unique(np.array([0, n_seg] + [s[2] for s in spans] + [s[3] for s in spans], np.int64))
    widths = np.diff(cuts)
    delta = np.zeros((2, len(cuts), len(index)), np.int64)
    for which, c, lo, hi in spans:
        delta[which, np.searchsorted(cuts, lo), c] += 1
        delta[which, np.searchsorted(cuts, hi), c] -= 1
    active = (np.cumsum(delta, axis=1)[:, :len(widths)] > 0).astype(np.int64)
    return widths, active[0], active[1]


def segment_based(reference_events, estimated_events, labels, segment_s: float = 1.0,
                  durations: dict | None = None) -> dict:
    """Segment-based F1 / precision / recall / ER (overall micro) plus class-wise scores.

    durations: optional {filename: seconds}; otherwise a file lasts until its last offset in
    either list.
    """
    labels = list(labels)
    if segment_s <= 0:
        raise SeqtoolError(f"segment length must be positive, got {segment_s}")
    index = {lab: i for i, lab in enumerate(labels)}
    ref, est = _group(reference_events, labels), _group(estimated_events, labels)
    tp = n_ref = n_sys = s_tot = d_tot = i_tot = 0
    cls = {lab: {"tp": 0, "fp": 0, "fn": 0, "n_ref": 0, "n_sys": 0} for lab in labels}
    for f in _files(ref, est, durations):
        r_ev, e_ev = ref.get(f, []), est.get(f, [])
        if durations and f in durations:
            length = float(durations[f])
        else:
            length = max([e.offset for e in r_ev + e_ev], default=0.0)
        n_seg = int(math.ceil(length * 1 / float(segment_s)))
        w, r, e = _segment_runs(r_ev, e_ev, index, segment_s, n_seg)  # (K,), (K, C), (K, C)
        hit = (r + e) > 1
        nr, ns, ntp = r.sum(axis=1), e.sum(axis=1), hit.sum(axis=1)  # (K,)
        # per segment: matched-count substitutions, the surplus is deletions or insertions
        s_tot += int(((np.minimum(nr, ns) - ntp) * w).sum())
        d_tot += int((np.maximum(0, nr - ns) * w).sum())
        i_tot += int((np.maximum(0, ns - nr) * w).sum())
        tp += int((ntp * w).sum())
        n_ref += int((nr * w).sum())
        n_sys += int((ns * w).sum())
        for lab, c in index.items():
            cls[lab]["tp"] += int((hit[:, c] * w).sum())
            cls[lab]["fp"] += int(((e[:, c] > r[:, c]) * w).sum())
            cls[lab]["fn"] += int(((r[:, c] > e[:, c]) * w).sum())
            cls[lab]["n_ref"] += int((r[:, c] * w).sum())
            cls[lab]["n_sys"] += int((e[:, c] * w).sum())
    out = _summary(tp, n_sys, n_ref, s_tot, d_tot, i_tot, cls)
    out["segment_s"] = segment_s
    return out


# ---------------------------------------------------------------- event based


def _onset_ok(r, e, collar):
    return math.fabs(r.onset - e.onset) <= collar


def _offset_ok(r, e, collar, pct):
    return math.fabs(r.offset - e.offset) <= max(collar, pct * (r.offset - r.onset))


def _max_matching(adj: dict) -> dict:
    """Maximum bipartite matching by Hopcroft-Karp: adj {est: [refs]} -> {ref: est}.

    Which maximum matching comes out decides which events remain for the substitution pass,
    so the search order (greedy start, then layered augmenting paths explored in insertion
    order) mirrors the mir_eval / sed_eval routine to reproduce its counts exactly.
    """
    match: dict = {}
    for u, vs in adj.items():
        for v in vs:
            if v not in match:
                match[v] = u
                break
    while True:
        free = []  # sentinel: marks free left vertices, and collects free right vertices reached
        left_prev = {u: free for u in adj}  # left vertex -> right vertex that led to it
        for v in match:
            del left_prev[match[v]]
        layer = list(left_prev)
        right_prev: dict = {}  # right vertex -> left vertices one layer before
        while layer and not free:
            nxt: dict = {}
            for u in layer:
                for v in adj[u]:
                    if v not in right_prev:
                        nxt.setdefault(v, []).append(u)
            layer = []
            for v, us in nxt.items():
                right_prev[v] = us
                if v in match:
                    layer.append(match[v])
                    left_prev[match[v]] = v
                else:
                    free.append(v)
        if not free:
            return match

        def augment(v):
            if v not in right_prev:
                return False
            us = right_prev.pop(v)
            for u in us:
                if u in left_prev:
                    pu = left_prev.pop(u)
                    if pu is free or augment(pu):
                        match[v] = u
                        return True
            return False

        for v in list(free):
            augment(v)


def _hits(refs, ests, ok, same_label: bool) -> dict:
    """{estimate index: [reference indices it may match]}, in sed_eval's row-major order."""
    adj: dict = {}
    for j, r in enumerate(refs):
        for i, e in enumerate(ests):
            if (not same_label or r.label == e.label) and ok(r, e):
                adj.setdefault(i, []).append(j)
    return adj


def event_based(reference_events, estimated_events, labels, t_collar: float = 0.2,
                percentage_of_length: float = 0.2, evaluate_offset: bool = True) -> dict:
    """Event-based F1 / ER with onset collar t_collar and offset collar
    max(t_collar, percentage_of_length * reference length); evaluate_offset=False scores onsets only
    (the DCASE 2016 task 2 ranking metric).
    """
    labels = list(labels)
    if t_collar <= 0:
        raise SeqtoolError(f"collar must be positive, got {t_collar}")
    ref, est = _group(reference_events, labels), _group(estimated_events, labels)

    def ok(r, e):
        return _onset_ok(r, e, t_collar) and (not evaluate_offset or
                                              _offset_ok(r, e, t_collar, percentage_of_length))

    tp = n_ref = n_sys = subs = 0
    cls = {lab: {"tp": 0, "fp": 0, "fn": 0, "n_ref": 0, "n_sys": 0} for lab in labels}
    for f in _files(ref, est, None):
        refs, ests = ref.get(f, []), est.get(f, [])
        matched = _max_matching(_hits(refs, ests, ok, same_label=True))
        ref_ok = np.zeros(len(refs), dtype=bool)
        est_ok = np.zeros(len(ests), dtype=bool)
        for j, i in matched.items():
            ref_ok[j] = est_ok[i] = True
        # substitutions: a leftover reference and a leftover estimate that agree in time
        # but not in label, paired greedily in list order as sed_eval does
        used = np.zeros(len(ests), dtype=bool)
        leftover_e = np.flatnonzero(~est_ok)
        n_subs = 0
        for j in np.flatnonzero(~ref_ok):
            for i in leftover_e:
                if not used[i] and ok(refs[j], ests[i]):
                    used[i] = True
                    n_subs += 1
                    break
        tp += len(matched)
        subs += n_subs
        n_ref += len(refs)
        n_sys += len(ests)
        for lab in labels:
            c_refs = [r for r in refs if r.label == lab]
            c_ests = [e for e in ests if e.label == lab]
            c_tp = len(_max_matching(_hits(c_refs, c_ests, ok, same_label=False)))
            c = cls[lab]
            c["tp"] += c_tp
            c["n_ref"] += len(c_refs)
            c["n_sys"] += len(c_ests)
            c["fp"] += len(c_ests) - c_tp
            c["fn"] += len(c_refs) - c_tp
    out = _summary(tp, n_sys, n_ref, subs, n_ref - tp - subs, n_sys - tp - subs, cls)
    out.update({"t_collar": t_collar, "percentage_of_length": percentage_of_length,
                "evaluate_offset": evaluate_offset})
    return out



# The DCASE 2016 task 2 evaluation: 1 s segments; 200 ms onset collar, offset collar the larger of
# 200 ms and 20% of the reference event's length.
SEGMENT_S = 1.0
T_COLLAR = 0.2
PERCENTAGE_OF_LENGTH = 0.2


def dcase_scores(reference_events, estimated_events, labels, durations: dict | None = None) -> dict:
    """{"segment_based", "event_based", "event_based_onset_only"} scores with the DCASE collars."""
    def events(evaluate_offset):
        return event_based(reference_events, estimated_events, labels, T_COLLAR, PERCENTAGE_OF_LENGTH,
                           evaluate_offset=evaluate_offset)

    return {"segment_based": segment_based(reference_events, estimated_events, labels, SEGMENT_S, durations),
            "event_based": events(True), "event_based_onset_only": events(False)}
