"""Sequence classification commands: ``seqtool train genre`` and the genre handlers of predict/eval.

DATA (train and eval) is a folder with one subfolder per class (MIDI or audio files), a JSONL of
note lists, or a list of paths, one per line ('-': stdin), each optionally followed by a tab and
its label; without a label a path's class is its parent folder's name, or what --label-regex
matches in its file name (the regex is stored in the model, so eval reads lists the same way).
Heavy imports stay inside the functions so ``seqtool --help`` stays instant.
"""

from __future__ import annotations

import os
import sys

import click

from seqtool.cli.options import Reporter, common_options, train_options
from seqtool.cli.train import check_output, run_training
from seqtool.device import module_to, require as require_device

_FEATURE_KEYS = ("sr", "win_ms", "hop_ms", "n_mels", "fmin", "fmax")
LR_PATIENCE = 10  # validations without a new best before the lr is halved


@click.command("genre")
@click.argument("data", type=click.Path(allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@click.option("--voices", type=click.Choice(["melody", "all"]), default=None,
              help="Scores: the top voice of the first part only (melody), or every note [default: melody].")
@click.option("--pool", type=click.Choice(["last", "mean", "attention"]), default=None,
              help="How the per-step outputs become one vector: final states, masked mean, or "
                   "additive attention over time [default: attention].")
@click.option("--proj", type=click.IntRange(min=0), default=None, metavar="SIZE",
              help="Linear+tanh projection of the input features before the RNN (0: none) [default: 0].")
@click.option("--transpose", type=click.IntRange(min=0, max=24), default=None, metavar="SEMITONES",
              help="Scores: shift each training crop by a random number of semitones in "
                   "[-SEMITONES, SEMITONES] (augmentation) [default: 5 for scores].")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out files whose name or path matches GLOB (repeatable), e.g. for a held-out set.")
@click.option("--label-regex", default=None, metavar="REGEX",
              help="Class of a listed file = group 1 (or the match) of REGEX searched in its file name, "
                   "e.g. '^(\\d+)_' for 7_jackson_3.wav [default: the parent folder's name].")
@click.option("--strict", is_flag=True, help="Stop at the first file that cannot be read (default: list and skip it).")
@click.option("--sr", type=click.IntRange(min=1000), default=None,
              help="Audio: sample rate the audio is resampled to [default: 16000].")
@click.option("--win-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Audio: STFT window, ms [default: 40].")
@click.option("--hop-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Audio: frame hop, ms [default: 20].")
@click.option("--n-mels", type=click.IntRange(min=1), default=None, help="Audio: mel bands [default: 64].")
@click.option("--fmin", type=click.FloatRange(min=0), default=None, help="Audio: lowest mel frequency, Hz [default: 0].")
@click.option("--fmax", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Audio: highest mel frequency, Hz [default: sr/2].")
@train_options
@common_options
def train_genre(data, output, voices, pool, proj, transpose, exclude, label_regex, strict, sr, win_ms, hop_ms, n_mels,
                fmin, fmax, cell, hidden, layers, bidirectional, dropout, optimizer, lr, clip_norm, batch,
                seq_len, epochs, steps, time_budget, patience, checkpoint_every, resume, val_frac,
                json_output, quiet, device, seed):
    """Train a sequence classifier (genre of a score, class of a recording) on DATA.

    DATA: a folder with one subfolder per class holding MIDI (.mid) or audio (.wav .flac .ogg)
    files; a JSONL of note lists ({"id", "label", "notes": [[onset, duration, pitch, part], ...]});
    or a list of paths, one per line ('-': stdin), each optionally followed by TAB and the label
    (else the parent folder's name, or --label-regex). Files that cannot be read are listed and
    skipped (--strict: error).

    Scores become one row per note (pitch, interval, duration and inter-onset time relative to
    the piece's median, rest, voice); audio becomes log-mel frames. Features are standardised
    with training statistics stored in MODEL. Default model: 2 bidirectional LSTM layers
    (scores: 64 units, dropout 0.5; audio: 128, dropout 0.2), attention pooling, softmax over the
    classes; each epoch trains on a random crop of --seq-len steps (scores: 32 notes, transposed
    by up to +-5 semitones; audio: 200 frames) of every piece. A stratified --val-frac of the
    pieces (default 0.1) is held out; validation averages the class probabilities over chunks
    covering each whole piece and reports loss and accuracy. Without
    a stopping rule it trains for 30 epochs; with --patience the best validation weights are kept.
    """
    import numpy as np

    from seqtool import modelfile
    from seqtool.audio import FeatureConfig, Normalizer
    from seqtool.data.dataset_folders import stratified_split
    from seqtool.errors import SeqtoolError, UsageError
    from seqtool.tasks.genre import GenreTask, InputSpec, build_genre, config_of, defaults_for, read_data
    from seqtool.train import TrainSettings

    out = Reporter(quiet=quiet, json_output=json_output)
    require_device(device)  # before reading any data: one-line error without a GPU
    check_output(output)
    given = {"cell": cell, "hidden": hidden, "layers": layers, "bidirectional": bidirectional,
             "dropout": dropout, "pool": pool, "proj": proj}
    feature_opts = {"sr": sr, "win_ms": win_ms, "hop_ms": hop_ms, "n_mels": n_mels, "fmin": fmin, "fmax": fmax}
    training = {"optimizer": optimizer, "lr": lr, "clip_norm": clip_norm}
    data_opts = {"batch": batch, "seq_len": seq_len, "val_frac": val_frac, "transpose": transpose}
    labels = normalizer = spec = None
    if resume:
        meta = modelfile.read_meta(resume, expect_task="genre")
        config, saved = meta.get("config") or {}, meta.get("training") or {}
        for k, v in given.items():
            if v is not None and config.get(k) != v:
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {config.get(k)}")
        try:
            spec = InputSpec.from_dict(meta.get("input") or {})
        except ValueError as e:
            raise SeqtoolError(f"{resume} is not a valid genre checkpoint ({e})") from None
        saved_features = spec.features or {}
        for k, v in feature_opts.items():
            if v is not None and saved_features.get(k) != v:
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {saved_features.get(k)}")
        if voices is not None and voices != spec.voices:
            raise UsageError(f"--voices {voices} differs from the checkpoint's {spec.voices}")
        if label_regex is not None and label_regex != spec.label_regex:
            raise UsageError(f"--label-regex differs from the checkpoint's {spec.label_regex!r}")
        given = {k: config.get(k) for k in given}
        labels, normalizer = list(meta.get("labels") or []), Normalizer.from_dict(meta.get("normalizer"))
        training = {k: saved.get(k) if v is None else v for k, v in training.items()}
        saved_data = meta.get("data_options") or {}
        data_opts = {k: saved_data.get(k) if v is None else v for k, v in data_opts.items()}
    if epochs is None and steps is None and time_budget is None:
        epochs = 30

    if spec is None:
        pieces, spec = read_data(data, None, voices or "melody", strict, exclude, label_regex, out,
                                 features=FeatureConfig(**{k: v for k, v in feature_opts.items()
                                                           if v is not None}).to_dict())
        if spec.kind != "audio" and any(v is not None for v in feature_opts.values()):
            raise UsageError("--sr/--win-ms/--hop-ms/--n-mels/--fmin/--fmax apply to audio data only")
    else:
        pieces, spec = read_data(data, spec, strict=strict, exclude=exclude, reporter=out)
    DEFAULTS = defaults_for(spec.kind)
    cfg = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    training = {k: DEFAULTS[k] if v is None else v for k, v in training.items()}
    data_opts = {k: DEFAULTS[k] if v is None else v for k, v in data_opts.items()}
    found = sorted({p.label for p in pieces})
    if labels is None:
        labels = found
        if len(labels) < 2:
            raise SeqtoolError(f"{data}: found only the class {labels[0]!r}; a classifier needs at least 2")
    else:
        unknown = [lab for lab in found if lab not in labels]
        if unknown:
            raise SeqtoolError(f"{data}: class {unknown[0]!r} is not one of the checkpoint's ({', '.join(labels)})")
    # the split has its own generator: --resume must find the same pieces in each part
    split_rng = np.random.default_rng(0 if seed is None else seed)
    tr_idx, val_idx = stratified_split([p.label for p in pieces], data_opts["val_frac"], split_rng)
    train, val = [pieces[i] for i in tr_idx], [pieces[i] for i in val_idx]
    if normalizer is None:
        normalizer = Normalizer().fit([p.features for p in train])
    elif len(normalizer.mean) != spec.input_size:
        raise SeqtoolError(f"{resume}: normaliser size does not match the features")
    for p in pieces:
        p.features = normalizer(p.features)
    rng = np.random.default_rng(seed)
    model = build_genre({**cfg, "input_size": spec.input_size, "attention": DEFAULTS["attention"]},
                        len(labels), rng)
    task = GenreTask(model, train, val, labels, spec, normalizer, data_opts["batch"], data_opts["seq_len"],
                     data_opts["transpose"])
    base_meta = task.meta

    def meta():  # remember data options so --resume needs no repeated flags
        return {**base_meta(), "data_options": data_opts}

    task.meta = meta
    # about two validations per epoch, at least 10 steps apart
    val_every = int(min(500, max(10, task.n_batches // 2)))
    # A validation set of a few dozen pieces is noisy: with the loop's default (halve the lr after
    # 3 validations without a new best) music21-styles ran the lr down to 1e-5 within 40 epochs.
    settings = TrainSettings(optimizer=training["optimizer"], lr=training["lr"],
                             clip_norm=training["clip_norm"], epochs=epochs, steps=steps,
                             time_budget=time_budget, val_every=val_every, patience=patience,
                             checkpoint_every=checkpoint_every, lr_patience=LR_PATIENCE)
    counts = {lab: 0 for lab in labels}
    for p in train:
        counts[p.label] += 1
    steps_total = sum(len(p.features) for p in train)
    unit = "notes" if spec.kind == "score" else "frames"
    out.info(f"{len(train)} training pieces ({steps_total:,} {unit}, {task.n_batches} batches per epoch), "
             f"{len(val)} validation; {len(labels)} classes: "
             + ", ".join(f"{lab} ({n})" for lab, n in counts.items()))
    out.info(f"{config_of(model, data_opts['seq_len'])}")
    run_training(task, output, settings, rng, out, resume, device)


# ----------------------------------------------------------------------------- predict


def _expand_inputs(inputs, kind: str):
    """(path as given, where) for each input: files as given, folders' files of the model's
    kind (sorted, recursive), '-' = paths on stdin, one per line; a .jsonl stays one input."""
    from seqtool.data.dataset_folders import AUDIO_EXTS, MIDI_EXTS, _walk_files
    from seqtool.errors import SeqtoolError

    exts = MIDI_EXTS if kind == "score" else AUDIO_EXTS
    for item in inputs or ("-",):
        if item == "-":
            for ln, line in enumerate(sys.stdin, 1):
                p = line.rstrip("\r\n").split("\t")[0].strip()
                if p and not p.startswith("#"):
                    yield p, f"<stdin> line {ln}"
        elif os.path.isdir(item):
            files = [str(f) for f in _walk_files(item) if f.name.lower().endswith(exts)]
            if not files:
                raise SeqtoolError(f"{item}: no {' '.join(exts)} files")
            for f in files:
                yield f, f
        else:
            yield item, item


def predict(model_path, inputs, out, opts) -> None:
    """One TSV line per input: path, predicted label, then P(class) per class in the model's
    label order (stated on stderr); --json: one object per input."""
    import numpy as np

    from seqtool.data.scores import read_scores_jsonl, score_features
    from seqtool.errors import SeqtoolError
    from seqtool.tasks.genre import load_genre, piece_features

    opts.only("genre")
    clf = load_genre(model_path)
    module_to(clf.model, opts.device)
    if not out.json_output:  # JSON names its fields
        out.info("# columns: path, predicted label, " + ", ".join(f"P({lab})" for lab in clf.labels))

    def emit(name, feats):
        p = clf.probabilities([feats])[0]
        label = clf.labels[int(np.argmax(p))]
        if out.json_output:
            out.emit({"input": name, "label": label,
                      "probabilities": {lab: round(float(x), 6) for lab, x in zip(clf.labels, p)}})
        else:
            click.echo("\t".join([name, label] + [f"{x:.4f}" for x in p]))
            sys.stdout.flush()

    for path, where in _expand_inputs(inputs, clf.spec.kind):
        if path.lower().endswith(".jsonl"):
            if clf.spec.kind != "score":
                raise SeqtoolError(f"{where}: a JSONL of scores, but the model reads audio")
            for sid, _, notes in read_scores_jsonl(path, clf.spec.voices, require_label=False):
                emit(sid, score_features(notes))
            continue
        try:
            feats = piece_features(path, clf.spec)
        except SeqtoolError as e:
            msg = str(e)
            raise SeqtoolError(msg if where == path else f"{where}: {msg}") from None
        except (OSError, EOFError, ValueError, RuntimeError) as e:  # decoders' own errors
            raise SeqtoolError(f"{where}: {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
        if not len(feats):
            raise SeqtoolError(f"{where}: {path} has no notes or frames")
        emit(path, feats)


# ----------------------------------------------------------------------------- eval


def format_report(m: dict) -> str:
    """Accuracy line, per-class table, confusion matrix (rows true, columns predicted)."""
    labels = m["labels"]
    w = max(12, max(len(lab) for lab in labels) + 2)
    correct = sum(m["confusion"][i][i] for i in range(len(labels)))
    lines = [f"accuracy {m['accuracy']:.4f} ({correct}/{m['n']})  macro F1 {m['macro_f1']:.4f}", ""]
    lines.append(f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for lab in labels:
        c = m["per_class"][lab]
        lines.append(f"{lab:<{w}}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    cw = max(6, max(len(lab) for lab in labels) + 2)
    lines.append(f"{'':<{w}}" + "".join(f"{lab:>{cw}}" for lab in labels))
    for lab, row in zip(labels, m["confusion"]):
        lines.append(f"{lab:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)


def evaluate(model_path, data, out, opts) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix on labelled DATA."""
    import numpy as np

    from seqtool.errors import SeqtoolError, UsageError
    from seqtool.tasks.genre import classify, load_genre, metrics, read_data

    opts.only("genre")
    if len(data) != 1:
        raise UsageError("genre eval takes one DATA: a class folder, a JSONL or a list of paths ('-')")
    clf = load_genre(model_path)
    module_to(clf.model, opts.device)
    pieces, _ = read_data(data[0], clf.spec, reporter=out)
    index = {lab: i for i, lab in enumerate(clf.labels)}
    unknown = sorted({p.label for p in pieces if p.label not in index})
    if unknown:
        raise SeqtoolError(f"{data[0]}: class {unknown[0]!r} is not one the model knows "
                           f"({', '.join(clf.labels)})")
    probs = classify(clf, pieces)
    y_true = np.array([index[p.label] for p in pieces])
    m = metrics(y_true, probs.argmax(axis=1), clf.labels)
    if out.json_output:
        out.emit({"task": "genre", **m})
    else:
        click.echo(format_report(m))
