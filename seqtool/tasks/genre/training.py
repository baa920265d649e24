"""``seqtool train genre`` as a library call: defaults, --resume merging, data, split, feature
normalisation, model and training settings (from_options -> TrainJob).

The defaults depend on the input kind (scores or audio), so they are filled in once the data is
read; on --resume the checkpoint fixes the architecture, the input settings, the classes and the
normaliser, and supplies the training and data options not given again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtool.errors import SeqtoolError, UsageError
from seqtool.tasks.base import (describe, TRAINING_KEYS, TrainJob, TrainRequest, check_given_match, check_output,
                                fill_defaults, merge_given, stored_or_given, train_settings,
                                validation_interval)
from seqtool.tasks.genre.inputs import InputSpec, Piece, read_data
from seqtool.tasks.genre.model import build_genre, config_of
from seqtool.tasks.genre.task import NAME, GenreTask

__all__ = ["DEFAULTS", "SCORE_DEFAULTS", "defaults_for", "from_options"]

DEFAULTS = {"cell": "lstm", "hidden": 128, "layers": 2, "bidirectional": True, "dropout": 0.2,
            "proj": 0, "pool": "attention", "attention": 64, "optimizer": "adam", "lr": 2e-3,
            "clip_norm": 5.0, "batch": 32, "val_frac": 0.1, "transpose": 0, "voices": "melody",
            "seq_len": 200}  # audio: 4 s of frames at the default 20 ms hop
# Scores are few and short (music21-styles: 366 training melodies of 30-300 notes). Measured on
# its 20% held-out files: 2 x biLSTM 128 on crops of 256 notes (whole melodies) overfit and reached
# 86%; 64 units, dropout 0.5 and crops of 32 notes (many different crops per piece, and the
# chunk average at prediction) 90.2% with two seeds, and 90.2-92.2% with +-5 semitone transpositions.
SCORE_DEFAULTS = {"hidden": 64, "dropout": 0.5, "seq_len": 32, "transpose": 5}
DEFAULT_EPOCHS = 30  # without a stopping rule
# A validation set of a few dozen pieces is noisy: with the loop's default (halve the lr after
# 3 validations without a new best) music21-styles ran the lr down to 1e-5 within 40 epochs.
LR_PATIENCE = 10  # validations without a new best before the lr is halved

ARCHITECTURE_KEYS = ("cell", "hidden", "layers", "bidirectional", "dropout", "pool", "proj")
FEATURE_KEYS = ("sr", "win_ms", "hop_ms", "n_mels", "fmin", "fmax")
DATA_KEYS = ("batch", "seq_len", "val_frac", "transpose")


def defaults_for(kind: str) -> dict:
    """DEFAULTS for "score" or "audio" inputs; options given always win."""
    return {**DEFAULTS, **SCORE_DEFAULTS} if kind == "score" else dict(DEFAULTS)


@dataclass
class _Choices:
    """A run's options: those given (None where not), merged with a checkpoint's on --resume,
    which also fixes the input settings, the classes and the normaliser."""

    architecture: dict
    training: dict
    data: dict
    spec: InputSpec | None = None
    labels: list | None = None
    normalizer: object = None

    def with_defaults(self, kind: str) -> "_Choices":
        d = defaults_for(kind)
        return _Choices(fill_defaults(self.architecture, d), fill_defaults(self.training, d),
                        fill_defaults(self.data, d), self.spec, self.labels, self.normalizer)


def from_options(request: TrainRequest) -> TrainJob:
    """A genre TrainJob: DATA read, classes found, pieces split and normalised, model built."""
    from seqtool.training.trainer import NullReporter

    reporter = request.reporter or NullReporter()
    check_output(request.output, request.data, request.options.get("force"))
    data = _one_data(request)
    choices = _Choices(request.given(ARCHITECTURE_KEYS), request.given(TRAINING_KEYS),
                       request.given(DATA_KEYS))
    if request.resume:
        choices = _merge_checkpoint(choices, request)
    pieces, spec = _read_pieces(request, data, choices.spec, reporter)
    choices = choices.with_defaults(spec.kind)
    labels = _class_labels(data, pieces, choices.labels)
    train, val = _split(pieces, choices.data["val_frac"], request.seed)
    normalizer = _normalise(pieces, train, choices.normalizer, spec, request.resume)
    rng = np.random.default_rng(request.seed)
    model = build_genre({**choices.architecture, "input_size": spec.input_size,
                         "attention": DEFAULTS["attention"]}, len(labels), rng)
    d = choices.data
    task = GenreTask(model, train, val, labels, spec, normalizer, d["batch"], d["seq_len"],
                     d["transpose"], data_options=d)
    # about two validations per epoch, at least 10 steps apart
    settings = train_settings(request, choices.training, validation_interval(task.n_batches, 2, 10),
                              DEFAULT_EPOCHS, lr_patience=LR_PATIENCE)
    _describe(task, reporter)
    return TrainJob(task, settings, rng, request)


def _one_data(request: TrainRequest) -> str:
    if len(request.data) != 1:
        raise UsageError("genre trains on one DATA: a class folder, a JSONL or a list of paths ('-')")
    return request.data[0]


def _merge_checkpoint(given: _Choices, request: TrainRequest) -> _Choices:
    """--resume: given options must match the checkpoint's architecture and input settings."""
    from seqtool.io import modelfile
    from seqtool.data.audio import Normalizer

    meta = modelfile.read_meta(request.resume, expect_task=NAME)
    architecture = merge_given(given.architecture, meta.get("config") or {})
    try:
        spec = InputSpec.from_dict(meta.get("input") or {})
    except ValueError as e:
        raise SeqtoolError(f"{request.resume} is not a valid genre checkpoint ({e})") from None
    check_given_match(request.given(FEATURE_KEYS), spec.features or {})
    check_given_match(request.given(("voices",)), {"voices": spec.voices})
    label_regex = request.options.get("label_regex")
    if label_regex is not None and label_regex != spec.label_regex:
        raise UsageError(f"--label-regex differs from the checkpoint's {spec.label_regex!r}")
    return _Choices(architecture, stored_or_given(given.training, meta.get("training") or {}),
                    stored_or_given(given.data, meta.get("data_options") or {}), spec,
                    list(meta.get("labels") or []), Normalizer.from_dict(meta.get("normalizer")))


def _read_pieces(request: TrainRequest, data: str, spec: InputSpec | None, reporter):
    """(pieces, spec): with a checkpoint's spec the files must be of its kind and are read with
    its settings; otherwise the kind is found and the given settings apply."""
    strict, exclude = bool(request.options.get("strict")), request.get("exclude", ())
    if spec is not None:
        return read_data(data, spec, strict=strict, exclude=exclude, reporter=reporter)
    from seqtool.data.audio import FeatureConfig

    features = {k: v for k, v in request.given(FEATURE_KEYS).items() if v is not None}
    pieces, spec = read_data(data, None, request.get("voices", DEFAULTS["voices"]), strict, exclude,
                             request.options.get("label_regex"), reporter,
                             features=FeatureConfig(**features).to_dict())
    if spec.kind != "audio" and features:
        raise UsageError("--sr/--win-ms/--hop-ms/--n-mels/--fmin/--fmax apply to audio data only")
    return pieces, spec


def _class_labels(data: str, pieces: list[Piece], stored: list | None) -> list:
    """The classes: those found (sorted), or the checkpoint's, which must cover those found."""
    found = sorted({p.label for p in pieces})
    if stored is None:
        if len(found) < 2:
            raise SeqtoolError(f"{data}: found only the class {found[0]!r}; a classifier needs at least 2")
        return found
    unknown = [lab for lab in found if lab not in stored]
    if unknown:
        raise SeqtoolError(f"{data}: class {unknown[0]!r} is not one of the checkpoint's "
                           f"({', '.join(stored)})")
    return stored


def _split(pieces: list[Piece], val_frac: float, seed):
    """(training, validation) pieces, stratified by class."""
    from seqtool.data.dataset_folders import stratified_split

    # the split has its own generator: --resume must find the same pieces in each part
    split_rng = np.random.default_rng(0 if seed is None else seed)
    tr_idx, val_idx = stratified_split([p.label for p in pieces], val_frac, split_rng)
    return [pieces[i] for i in tr_idx], [pieces[i] for i in val_idx]


def _normalise(pieces: list[Piece], train: list[Piece], normalizer, spec: InputSpec, resume):
    """Standardise every piece's features in place with the training pieces' statistics (or the
    checkpoint's); returns the normaliser."""
    from seqtool.data.audio import Normalizer

    if normalizer is None:
        normalizer = Normalizer().fit([p.features for p in train])
    elif len(normalizer.mean) != spec.input_size:
        raise SeqtoolError(f"{resume}: normaliser size does not match the features")
    for p in pieces:
        p.features = normalizer(p.features)
    return normalizer


def _describe(task: GenreTask, reporter) -> None:
    """The data and model on stderr: pieces and steps per class, batches, the configuration."""
    counts = {lab: 0 for lab in task.labels}
    for p in task.train:
        counts[p.label] += 1
    steps_total = sum(len(p.features) for p in task.train)
    unit = "notes" if task.spec.kind == "score" else "frames"
    reporter.info(f"{len(task.train)} training pieces ({steps_total:,} {unit}, {task.n_batches} batches "
                  f"per epoch), {len(task.val)} validation; {len(task.labels)} classes: "
                  + ", ".join(f"{lab} ({n})" for lab, n in counts.items()))
    reporter.info(f"model: {describe(config_of(task.model, task.seq_len))}")
