"""Sound event detection commands: ``seqtool train sed`` and the sed handlers of predict/eval.

``seqtool eval`` also scores an event table against a reference without a model
(``seqtool eval PRED.tsv REF.tsv``): see ``evaluate_tables`` and ``is_event_table``.
Heavy imports stay inside the functions so ``seqtool --help`` stays instant.
"""

from __future__ import annotations

import os
import shutil
import sys

import click

from seqtool.cli.options import Reporter, common_options, train_options
from seqtool.cli.train import check_output, run_training
from seqtool.device import module_to, require as require_device

_FEATURE_KEYS = ("sr", "win_ms", "hop_ms", "n_mels", "fmin", "fmax")
_LEVELS = " ▁▂▃▄▅▆▇█"  # activity 0..1 in nine steps, for the terminal piano-roll


@click.command("sed")
@click.argument("audio_dir", type=click.Path(file_okay=False))
@click.argument("annotations", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@click.option("--sr", type=click.IntRange(min=1000), default=None,
              help="Sample rate the audio is resampled to [default: 16000].")
@click.option("--win-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="STFT window, ms [default: 40].")
@click.option("--hop-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frame hop, ms [default: 20].")
@click.option("--n-mels", type=click.IntRange(min=1), default=None, help="Mel bands [default: 64].")
@click.option("--fmin", type=click.FloatRange(min=0), default=None, help="Lowest mel frequency, Hz [default: 0].")
@click.option("--fmax", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Highest mel frequency, Hz [default: sr/2].")
@click.option("--tune-decoding/--no-tune-decoding", default=True, show_default=True,
              help="Pick the threshold and median filter with the lowest mean of the segment- and "
                   "event-based error rates on the validation recordings as the model's defaults "
                   "for predict and eval.")
@click.option("--augment/--no-augment", default=None,
              help="Vary each training window's level (+-6 dB) and blank a random band of up to 8 mel "
                   "bands [default: on].")
@train_options
@common_options
def train_sed(audio_dir, annotations, output, sr, win_ms, hop_ms, n_mels, fmin, fmax, tune_decoding, augment, cell,
              hidden, layers, bidirectional, dropout, optimizer, lr, clip_norm, batch, seq_len, epochs, steps,
              time_budget, patience, checkpoint_every, resume, val_frac, json_output, quiet, device, seed):
    """Train a sound event detector on the recordings in AUDIO_DIR.

    ANNOTATIONS is a DCASE event list (filename onset offset event_label, tab separated, header
    line optional; '-' for stdin); every file it names must be in AUDIO_DIR (paths relative
    to it), and recordings it does not name are not used. Features are
    log-mel energies (--sr --win-ms --hop-ms --n-mels --fmin --fmax), standardised with the
    training statistics, all stored in MODEL. Default model: 4 stacked bidirectional LSTM
    layers of 64 units and a sigmoid per class, trained on windows of --seq-len frames with
    frame-wise binary cross-entropy. A random --val-frac of the recordings (default 0.1) is
    held out; each validation prints the loss and the segment-based F1 and error rate, and
    (--tune-decoding) picks the threshold and median filter that predict and eval use by
    default. Without a stopping rule it trains for 30 epochs.
    """
    import numpy as np

    from seqtool import modelfile
    from seqtool.audio import FeatureConfig, Normalizer
    from seqtool.errors import UsageError
    from seqtool.tasks.sed import DEFAULTS, SEDTask, build_sed, config_of, load_recordings, split_recordings
    from seqtool.train import TrainSettings

    out = Reporter(quiet=quiet, json_output=json_output)
    require_device(device)  # before reading any audio: one-line error without a GPU
    check_output(output)
    given = {"cell": cell, "hidden": hidden, "layers": layers, "bidirectional": bidirectional,
             "dropout": dropout}
    feature_opts = {"sr": sr, "win_ms": win_ms, "hop_ms": hop_ms, "n_mels": n_mels, "fmin": fmin, "fmax": fmax}
    training = {"optimizer": optimizer, "lr": lr, "clip_norm": clip_norm}
    data_opts = {"batch": batch, "seq_len": seq_len, "val_frac": val_frac, "augment": augment}
    labels = normalizer = None
    decode = {"threshold": DEFAULTS["threshold"], "median_ms": DEFAULTS["median_ms"]}
    if resume:
        meta = modelfile.read_meta(resume, expect_task="sed")
        config, saved = meta.get("config") or {}, meta.get("training") or {}
        for k, v in given.items():
            if v is not None and config.get(k) != v:
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {config.get(k)}")
        saved_features = meta.get("features") or {}
        for k, v in feature_opts.items():
            if v is not None and saved_features.get(k) != v:
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {saved_features.get(k)}")
        given = {k: config.get(k) for k in given}
        feature_opts = {k: saved_features.get(k) for k in feature_opts}
        labels, normalizer = meta.get("labels"), Normalizer.from_dict(meta.get("normalizer"))
        decode.update(meta.get("decode") or {})
        training = {k: saved.get(k) if v is None else v for k, v in training.items()}
        data_opts = {k: (meta.get("data_options") or {}).get(k) if v is None else v for k, v in data_opts.items()}
    cfg = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    training = {k: DEFAULTS[k] if v is None else v for k, v in training.items()}
    data_opts = {k: DEFAULTS[k] if v is None else v for k, v in data_opts.items()}
    # the validation split has its own seed, kept in the model, so --resume finds the same parts
    split_seed = ((meta.get("data_options") or {}).get("split_seed") if resume else None)
    data_opts["split_seed"] = int(split_seed if split_seed is not None else (0 if seed is None else seed))
    features = FeatureConfig(**{k: v for k, v in feature_opts.items() if v is not None})
    if epochs is None and steps is None and time_budget is None:
        epochs = 30

    recordings, labels = load_recordings(audio_dir, annotations, features, labels, out)
    rng = np.random.default_rng(seed)
    train, val = split_recordings(recordings, data_opts["val_frac"], np.random.default_rng(data_opts["split_seed"]))
    if normalizer is None:
        normalizer = Normalizer().fit([r.features for r in train])
    for rec in recordings:
        rec.features = normalizer(rec.features)
    model = build_sed(cfg, features.n_mels, len(labels), rng)
    task = SEDTask(model, train, val, labels, features, normalizer, data_opts["batch"], data_opts["seq_len"],
                   decode["threshold"], decode["median_ms"], tune_decoding, data_opts["augment"])
    base_meta = task.meta

    def meta():  # remember data options so --resume needs no repeated flags
        return {**base_meta(), "data_options": data_opts}

    task.meta = meta
    val_every = int(min(500, max(20, task.n_batches // 2)))
    settings = TrainSettings(optimizer=training["optimizer"], lr=training["lr"],
                             clip_norm=training["clip_norm"], epochs=epochs, steps=steps,
                             time_budget=time_budget, val_every=val_every, patience=patience,
                             checkpoint_every=checkpoint_every)
    secs = sum(r.duration for r in train)
    out.info(f"{len(train)} training recordings ({secs:,.0f} s, {task.n_batches} batches per epoch), "
             f"{len(val)} validation; {len(labels)} classes: {', '.join(labels)}; "
             f"{config_of(model, data_opts['seq_len'])}")
    run_training(task, output, settings, rng, out, resume, device)


# ----------------------------------------------------------------------------- predict


def _inputs(inputs):
    """Audio inputs: files, '-', or folders (their .wav/.flac/.ogg files, sorted)."""
    from seqtool.synth import AUDIO_EXTS

    out = []
    for p in inputs or ("-",):
        if p != "-" and os.path.isdir(p):
            files = sorted(f for f in os.listdir(p) if f.lower().endswith(AUDIO_EXTS))
            out.extend(os.path.join(p, f) for f in files)
        else:
            out.append(p)
    return out


def _analyse(det, path, name=None):
    """(probabilities (T, C), duration) of one input."""
    from seqtool.audio import read_audio
    from seqtool.tasks.sed import frame_logits, sigmoid

    x, _ = read_audio(path, target_sr=det.features.sr)
    probs = sigmoid(frame_logits(det.model, det.features_of(x), det.window))
    return probs, len(x) / det.features.sr


def _decode_settings(det, opts):
    from seqtool.tasks.sed import parse_thresholds

    thr = parse_thresholds(opts.get("threshold"), det.labels, det.threshold)
    median_ms = opts.get("median_ms", det.median_ms)
    return thr, median_ms


def draw_roll(probs, labels, hop_s, name, width=None):
    """Lines of a per-class activity piano-roll: one row per class, time left to right."""
    import numpy as np

    label_w = max(len(lab) for lab in labels)
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    cols = max(10, width - label_w - 3)
    T = len(probs)
    edges = np.linspace(0, T, min(cols, T) + 1).astype(int)
    duration = T * hop_s
    lines = [f"{name}  ({duration:.1f} s, {duration / (len(edges) - 1):.2f} s per column)"]
    for c, lab in enumerate(labels):
        peaks = [probs[a:b, c].max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])]
        cells = "".join(_LEVELS[int(round(p * (len(_LEVELS) - 1)))] for p in peaks)
        lines.append(f"{lab:>{label_w}} |{cells}|")
    # a time axis with a tick every 10 s (or every 1 s for short inputs)
    n = len(edges) - 1
    step = 10.0 if duration >= 30 else 1.0
    axis = [" "] * n
    for k in range(int(duration // step) + 1):
        col = int(k * step / duration * n) if duration > 0 else 0
        label = f"{k * step:g}"
        if col + len(label) <= n and all(ch == " " for ch in axis[max(0, col - 1):col + len(label)]):
            axis[col:col + len(label)] = list(label)
    lines.append(" " * (label_w + 2) + "".join(axis))
    return lines


def roll_image(rolls):
    """(H, W, 3) uint8 image: one 12-pixel band per class for each input, inputs stacked with a
    4-pixel gap; columns are frames."""
    import numpy as np

    from seqtool.png import heatmap_rgb

    width = max(len(p) for p in rolls)
    parts = []
    for k, probs in enumerate(rolls):
        values = np.full((probs.shape[1], width), np.nan)
        values[:, :len(probs)] = probs.T  # (C, T): class rows, time columns
        band = heatmap_rgb(values, vmin=0.0, vmax=1.0)
        band = np.repeat(band, 12, axis=0)
        band[::12] = 0  # a dark line between classes
        if k:
            parts.append(np.zeros((4, width, 3), np.uint8) + 255)
        parts.append(band)
    return np.concatenate(parts, axis=0)


def predict(model_path, inputs, out: Reporter, opts) -> None:
    """Events of each input as DCASE TSV lines (filename onset offset event_label) on stdout."""
    from seqtool.fileio import display_name
    from seqtool.tasks.sed import detect, load_sed

    opts.only("sed", ("threshold", "median_ms", "roll", "png"))
    if opts.get("png") == "-":
        from seqtool.errors import UsageError

        raise UsageError("--png needs a file name: stdout carries the events")
    det = load_sed(model_path)
    module_to(det.model, opts.device)
    thr, median_ms = _decode_settings(det, opts)
    hop = det.features.hop_s
    rolls = []
    for path in _inputs(inputs):
        name = "-" if path == "-" else path
        probs, duration = _analyse(det, path)
        events = detect(probs, det.labels, hop, duration, thr, median_ms, name)
        for e in events:
            if out.json_output:
                out.emit({"filename": e.filename, "onset": e.onset, "offset": e.offset, "event_label": e.label})
            else:
                click.echo(f"{e.filename}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}")
        sys.stdout.flush()
        if opts.get("roll"):
            click.echo("\n".join(draw_roll(probs, det.labels, hop, display_name(path))), err=True)
        if opts.get("png"):
            rolls.append(probs)
    if opts.get("png") and rolls:
        from seqtool.png import write_png

        write_png(opts["png"], roll_image(rolls))
        out.info(f"piano-roll ({', '.join(det.labels)} from top) written to {opts['png']}")


# ----------------------------------------------------------------------------- eval


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


def _fmt_pct(x):
    import math

    return "   nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}%"


def _report(out: Reporter, seg, evt, onset, labels, extra: dict) -> None:
    if out.json_output:
        strip = ("class_wise",)
        out.emit({"task": "sed", **extra,
                  "segment_based": {k: v for k, v in seg.items() if k not in strip},
                  "event_based": {k: v for k, v in evt.items() if k not in strip},
                  "event_based_onset_only": {k: v for k, v in onset.items() if k not in strip},
                  "class_wise": {lab: {"segment_f1": seg["class_wise"][lab]["f1"],
                                       "segment_er": seg["class_wise"][lab]["error_rate"],
                                       "event_f1": evt["class_wise"][lab]["f1"],
                                       "event_er": evt["class_wise"][lab]["error_rate"]} for lab in labels}})
        return

    def line(title, m):
        return (f"{title:<34} F1 {_fmt_pct(m['f1'])}  P {_fmt_pct(m['precision'])}  R {_fmt_pct(m['recall'])}  "
                f"ER {m['error_rate']:.3f} (S {m['substitution_rate']:.3f} D {m['deletion_rate']:.3f} "
                f"I {m['insertion_rate']:.3f})")

    click.echo(line("segment-based (1 s segments)", seg))
    click.echo(line("event-based (onset+offset collars)", evt))
    click.echo(line("event-based (onset collar only)", onset))
    click.echo(f"reference events {evt['n_ref']}, detected {evt['n_sys']}; "
               f"macro segment F1 {_fmt_pct(seg['f1_macro'])}, macro event F1 {_fmt_pct(evt['f1_macro'])}")
    w = max(len(lab) for lab in labels)
    click.echo(f"{'class':<{w}}  {'seg F1':>7}  {'seg ER':>6}  {'evt F1':>7}  {'evt ER':>6}  {'ref':>4}  {'sys':>4}")
    for lab in labels:
        s, e = seg["class_wise"][lab], evt["class_wise"][lab]
        click.echo(f"{lab:<{w}}  {_fmt_pct(s['f1'])}  {s['error_rate']:6.3f}  {_fmt_pct(e['f1'])}  "
                   f"{e['error_rate']:6.3f}  {e['n_ref']:>4}  {e['n_sys']:>4}")


def _score(ref, est, labels, durations):
    from seqtool.sed_metrics import event_based, segment_based

    seg = segment_based(ref, est, labels, 1.0, durations)
    evt = event_based(ref, est, labels, 0.2, 0.2, evaluate_offset=True)
    onset = event_based(ref, est, labels, 0.2, 0.2, evaluate_offset=False)
    return seg, evt, onset


def evaluate(model_path, data, out: Reporter, opts) -> None:
    """DATA: AUDIO_DIR REFERENCE.tsv (the files the reference names) or AUDIO... REFERENCE.tsv."""
    from seqtool.data.events import check_labels, read_events
    from seqtool.errors import SeqtoolError, UsageError
    from seqtool.tasks.sed import _audio_path, detect, load_sed

    opts.only("sed", ("threshold", "median_ms"))
    if len(data) < 2:
        raise UsageError("sed eval takes AUDIO_DIR REFERENCE.tsv, or AUDIO_FILE... REFERENCE.tsv")
    *audio, ref_path = data
    det = load_sed(model_path)
    module_to(det.model, opts.device)
    numbered = read_events(ref_path, with_lines=True)
    source = "<stdin>" if ref_path == "-" else ref_path
    check_labels(numbered, det.labels, source)
    ref = [e for _, e in numbered]
    if len(audio) == 1 and os.path.isdir(audio[0]):
        first_line = {}
        for lineno, e in numbered:
            first_line.setdefault(e.filename, lineno)
        if not first_line:
            raise SeqtoolError(f"{source}: no reference events to find recordings by")
        jobs = []
        for fname, lineno in first_line.items():
            path = _audio_path(audio[0], fname)
            if path is None:
                raise SeqtoolError(f"{source}:{lineno}: audio file {fname} not found in {audio[0]}")
            jobs.append((fname, path))
    else:
        # files given one by one are matched to the reference by their base name
        names = {os.path.basename(e.filename): e.filename for e in ref}
        jobs = [(names.get(os.path.basename(p), os.path.basename(p)), p) for p in audio]
        keep = {f for f, _ in jobs}
        ref = [e for e in ref if e.filename in keep]
    thr, median_ms = _decode_settings(det, opts)
    est, durations = [], {}
    with out.progress("detecting", total=len(jobs)) as bar:
        for fname, path in sorted(jobs):
            probs, duration = _analyse(det, path)
            durations[fname] = duration
            est.extend(detect(probs, det.labels, det.features.hop_s, duration, thr, median_ms, fname))
            bar.advance()
    seg, evt, onset = _score(ref, est, det.labels, durations)
    _report(out, seg, evt, onset, det.labels, {"files": len(jobs)})


def evaluate_tables(pred_path, data, out: Reporter, opts) -> None:
    """``seqtool eval PRED.tsv REF.tsv``: score an event list against a reference, no model.

    Labels are those of both lists; a file lasts until its last event (no audio to measure).
    """
    from seqtool.data.events import read_events
    from seqtool.errors import UsageError

    opts.only("sed", ())
    if len(data) != 1:
        raise UsageError("scoring an event list takes PREDICTED.tsv REFERENCE.tsv")
    if pred_path == "-" and data[0] == "-":
        raise UsageError("only one of PREDICTED and REFERENCE can be stdin")
    from seqtool.data.events import Event

    est = read_events(pred_path)
    ref = read_events(data[0])
    # predict writes the paths it was given (scenes/a.wav); references usually hold base names
    ref_names = {e.filename for e in ref}
    by_base = {os.path.basename(f): f for f in ref_names}
    est = [e if e.filename in ref_names or os.path.basename(e.filename) not in by_base
           else Event(by_base[os.path.basename(e.filename)], e.onset, e.offset, e.label) for e in est]
    labels = sorted({e.label for e in ref} | {e.label for e in est})
    if not labels:
        from seqtool.errors import SeqtoolError

        raise SeqtoolError("both event lists are empty: nothing to score")
    seg, evt, onset = _score(ref, est, labels, None)
    _report(out, seg, evt, onset, labels, {"files": len({e.filename for e in ref} | {e.filename for e in est})})
