import math
import sys
import types

import numpy as np
import pytest

from seqtool.data.events import Event
from seqtool.errors import SeqtoolError
from seqtool.metrics.sed import event_based, segment_based

LABELS = ["cough", "door", "knock", "speech"]


def random_events(rng, files, n, jitter_from=None, duration=20.0):
    """Random overlapping events; with jitter_from, perturb those events (near misses and hits)."""
    out = []
    if jitter_from is None:
        for _ in range(n):
            f = files[rng.integers(len(files))]
            on = float(np.round(rng.uniform(0, duration - 0.2), 2))
            off = float(np.round(on + rng.uniform(0.05, 4.0), 2))
            out.append(Event(f, on, off, LABELS[rng.integers(len(LABELS))]))
        return out
    for e in jitter_from:
        if rng.random() < 0.2:
            continue  # deletion
        lab = e.label if rng.random() < 0.7 else LABELS[rng.integers(len(LABELS))]
        on = max(0.0, float(np.round(e.onset + rng.normal(0, 0.2), 2)))
        off = max(on, float(np.round(e.offset + rng.normal(0, 0.4), 2)))
        out.append(Event(e.filename, on, off, lab))
    out += random_events(rng, files, n // 4, duration=duration)  # insertions
    rng.shuffle(out)
    return out


def _sed_eval():
    # dcase_util imports pkg_resources at module level only to print versions; newer
    # setuptools no longer ships it, so a placeholder module lets the import succeed
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        sys.modules.setdefault("pkg_resources", types.ModuleType("pkg_resources"))
    return pytest.importorskip("sed_eval")


def _as_dicts(events):
    return [{"filename": e.filename, "event_onset": e.onset, "event_offset": e.offset, "event_label": e.label}
            for e in events]


def _same(a, b):
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == pytest.approx(b, rel=1e-12, abs=1e-12)


def _per_file(events, f):
    return [e for e in events if e.filename == f]


# short files crowd events together, so collars overlap and the matching has choices
@pytest.mark.parametrize("seed,duration", [(s, 20.0) for s in range(6)] + [(6, 4.0), (7, 3.0)])
def test_matches_sed_eval(seed, duration):
    sed_eval = _sed_eval()
    rng = np.random.default_rng(seed)
    files = [f"a{i}.wav" for i in range(3)]
    ref = random_events(rng, files, 30, duration=duration)
    est = random_events(rng, files, 40, jitter_from=ref, duration=duration)
    if seed == 5:
        est += [Event("only_est.wav", 1.0, 2.0, "door")]  # a file without reference events
    all_files = sorted({e.filename for e in ref + est})

    seg = sed_eval.sound_event.SegmentBasedMetrics(LABELS, time_resolution=1.0)
    evt = sed_eval.sound_event.EventBasedMetrics(LABELS, evaluate_onset=True, evaluate_offset=True,
                                                 t_collar=0.2, percentage_of_length=0.2)
    onset_only = sed_eval.sound_event.EventBasedMetrics(LABELS, evaluate_onset=True, evaluate_offset=False,
                                                        t_collar=0.2)
    for f in all_files:
        r, e = _as_dicts(_per_file(ref, f)), _as_dicts(_per_file(est, f))
        seg.evaluate(r, e)
        evt.evaluate(r, e)
        onset_only.evaluate(r, e)

    for ours, theirs in [(segment_based(ref, est, LABELS), seg),
                         (event_based(ref, est, LABELS), evt),
                         (event_based(ref, est, LABELS, evaluate_offset=False), onset_only)]:
        fm, er = theirs.overall_f_measure(), theirs.overall_error_rate()
        assert _same(ours["f1"], fm["f_measure"])
        assert _same(ours["precision"], fm["precision"])
        assert _same(ours["recall"], fm["recall"])
        for k in ("error_rate", "substitution_rate", "deletion_rate", "insertion_rate"):
            assert _same(ours[k], er[k]), k
        for lab in LABELS:
            cf = theirs.class_wise_f_measure(lab)
            ce = theirs.class_wise_error_rate(lab)
            assert _same(ours["class_wise"][lab]["f1"], cf["f_measure"]), lab
            assert _same(ours["class_wise"][lab]["error_rate"], ce["error_rate"]), lab
        avg = theirs.results_class_wise_average_metrics()
        assert _same(ours["f1_macro"], avg["f_measure"]["f_measure"])


def test_matching_choice_matters_like_sed_eval():
    # two same-label estimates compete for references; which pair is matched decides whether
    # the leftover forms a substitution, so this pins the matching order
    sed_eval = _sed_eval()
    # (found by enumerating all maximum matchings: some leave 0 substitutions, others 1)
    ref = [Event("f", 0.2, 9.0, "door"), Event("f", 0.4, 9.0, "door"), Event("f", 0.0, 9.0, "cough")]
    est = [Event("f", 0.4, 9.0, "door"), Event("f", 0.1, 9.0, "cough"), Event("f", 0.5, 9.0, "cough")]
    m = sed_eval.sound_event.EventBasedMetrics(LABELS, t_collar=0.2, percentage_of_length=0.2)
    m.evaluate(_as_dicts(ref), _as_dicts(est))
    ours = event_based(ref, est, LABELS)
    assert ours["n_tp"] == m.overall["Ntp"]
    assert ours["substitutions"] == m.overall["Nsubs"]


def test_segment_tiny_case_by_hand():
    # 3 s file. ref: cough [0, 1.5) -> segments 0,1; door [2.2, 2.5) -> segment 2.
    # est: cough [0.2, 0.8) -> segment 0; knock [2.0, 3.0) -> segment 2.
    ref = [Event("x", 0.0, 1.5, "cough"), Event("x", 2.2, 2.5, "door")]
    est = [Event("x", 0.2, 0.8, "cough"), Event("x", 2.0, 3.0, "knock")]
    m = segment_based(ref, est, LABELS)
    # segment 0: ref{cough} est{cough}: tp 1. segment 1: ref{cough} est{}: D 1.
    # segment 2: ref{door} est{knock}: S 1.
    assert (m["n_tp"], m["n_ref"], m["n_sys"]) == (1, 3, 2)
    assert (m["substitutions"], m["deletions"], m["insertions"]) == (1, 1, 0)
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert m["error_rate"] == pytest.approx(2 / 3)
    assert m["class_wise"]["cough"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert m["class_wise"]["knock"]["n_sys"] == 1


def test_event_tiny_case_by_hand():
    ref = [Event("x", 1.0, 3.0, "cough"),   # hit: onset 0.1 off, offset 0.3 <= 20% of 2 s = 0.4
           Event("x", 5.0, 5.5, "door"),    # estimate labelled knock at the same time: substitution
           Event("x", 8.0, 9.0, "speech")]  # estimate onset 0.3 late: deletion + insertion
    est = [Event("x", 1.1, 3.3, "cough"), Event("x", 5.0, 5.5, "knock"), Event("x", 8.3, 9.0, "speech")]
    m = event_based(ref, est, LABELS)
    assert (m["n_tp"], m["substitutions"], m["deletions"], m["insertions"]) == (1, 1, 1, 1)
    assert m["f1"] == pytest.approx(1 / 3)
    assert m["error_rate"] == pytest.approx(3 / 3)
    # offset tolerance shrinks to the 200 ms collar for short events
    short = event_based([Event("x", 0.0, 0.5, "cough")], [Event("x", 0.0, 0.75, "cough")], LABELS)
    assert short["n_tp"] == 0
    onset_only = event_based([Event("x", 0.0, 0.5, "cough")], [Event("x", 0.0, 0.75, "cough")], LABELS,
                             evaluate_offset=False)
    assert onset_only["n_tp"] == 1


def test_perfect_and_empty():
    ref = [Event("x", 0.0, 1.0, "cough"), Event("y", 2.0, 4.0, "door")]
    for fn in (segment_based, event_based):
        m = fn(ref, ref, LABELS)
        assert m["f1"] == 1.0 and m["error_rate"] == 0.0
        empty = fn(ref, [], LABELS)
        assert math.isnan(empty["precision"]) and empty["recall"] == 0.0
        assert empty["error_rate"] == pytest.approx(1.0)


def test_durations_extend_files():
    ref = [Event("x", 0.0, 1.0, "cough")]
    est = [Event("x", 0.0, 1.0, "cough"), Event("x", 5.5, 6.0, "door")]
    # a 3 s file: the door estimate lies outside and is not counted
    assert segment_based(ref, est, LABELS, durations={"x": 3.0})["n_sys"] == 1
    assert segment_based(ref, est, LABELS)["n_sys"] == 2


def test_unknown_label_is_an_error():
    with pytest.raises(SeqtoolError, match="bird"):
        segment_based([Event("x", 0, 1, "bird")], [], LABELS)
