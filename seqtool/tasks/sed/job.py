"""``seqtool train sed`` as a TrainJob: options merged with the defaults and a --resume
checkpoint, recordings read and split, the normaliser fitted, the model built."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seqtool.io import modelfile
from seqtool.data.audio import FeatureConfig, Normalizer
from seqtool.errors import UsageError
from seqtool.tasks.base import (describe, TRAINING_KEYS, TrainJob, TrainRequest, check_output, fill_defaults,
                                merge_given, reporter_of,
                                stored_or_given, train_settings, validation_interval)
from seqtool.tasks.sed.data import load_recordings, split_recordings
from seqtool.tasks.sed.model import DEFAULTS, NAME, build_sed, config_of
from seqtool.tasks.sed.training import SEDTask

__all__ = ["from_options"]

ARCH_KEYS = ("cell", "hidden", "layers", "bidirectional", "dropout")
FEATURE_KEYS = ("sr", "win_ms", "hop_ms", "n_mels", "fmin", "fmax")
DATA_KEYS = ("batch", "seq_len", "val_frac", "augment")


@dataclass
class _Settled:
    """What the options and a --resume checkpoint settle before any audio is read."""

    config: dict
    features: dict
    training: dict
    data_options: dict
    decode: dict = field(default_factory=lambda: {k: DEFAULTS[k] for k in ("threshold", "median_ms")})
    labels: list | None = None
    normalizer: Normalizer | None = None


def _given(request: TrainRequest) -> _Settled:
    return _Settled(request.given(ARCH_KEYS), request.given(FEATURE_KEYS), request.given(TRAINING_KEYS),
                    request.given(DATA_KEYS))


def _resumed(request: TrainRequest) -> tuple[_Settled, dict]:
    """The options given merged with the checkpoint's: architecture and features must match it,
    training and data options given win. Also the checkpoint's stored data options."""
    meta = modelfile.read_meta(request.resume, expect_task=NAME)
    given = _given(request)
    stored_data = meta.get("data_options") or {}
    settled = _Settled(merge_given(given.config, meta.get("config") or {}),
                       merge_given(given.features, meta.get("features") or {}),
                       stored_or_given(given.training, meta.get("training") or {}),
                       stored_or_given(given.data_options, stored_data),
                       labels=meta.get("labels"), normalizer=Normalizer.from_dict(meta.get("normalizer")))
    settled.decode.update(meta.get("decode") or {})
    return settled, stored_data


def _settle(request: TrainRequest) -> _Settled:
    settled, stored_data = _resumed(request) if request.resume else (_given(request), {})
    settled.config = fill_defaults(settled.config, DEFAULTS)
    settled.training = fill_defaults(settled.training, DEFAULTS)
    settled.data_options = fill_defaults(settled.data_options, DEFAULTS)
    # the validation split has its own seed, kept in the model, so --resume finds the same parts
    split_seed = next((v for v in (stored_data.get("split_seed"), request.seed) if v is not None), 0)
    settled.data_options["split_seed"] = int(split_seed)
    return settled


def _summary(task: SEDTask) -> str:
    secs = sum(r.duration for r in task.train)
    return (f"{len(task.train)} training recordings ({secs:,.0f} s, {task.n_batches} batches per epoch), "
            f"{len(task.val)} validation; {len(task.labels)} classes: {', '.join(task.labels)}; "
            f"{describe(config_of(task.model, task.seq_len))}")


def _task(request: TrainRequest, s: _Settled, rng: np.random.Generator, reporter) -> SEDTask:
    """Recordings read and split, features normalised (a new normaliser fitted on the training
    part), the model built."""
    audio_dir, annotations = request.data
    features = FeatureConfig(**{k: v for k, v in s.features.items() if v is not None})
    recordings, labels = load_recordings(audio_dir, annotations, features, s.labels, reporter)
    opts = s.data_options
    train, val = split_recordings(recordings, opts["val_frac"], np.random.default_rng(opts["split_seed"]))
    normalizer = s.normalizer if s.normalizer is not None else Normalizer().fit([r.features for r in train])
    for rec in recordings:
        rec.features = normalizer(rec.features)
    model = build_sed(s.config, features.n_mels, len(labels), rng)
    return SEDTask(model, train, val, labels, features, normalizer, opts["batch"], opts["seq_len"],
                   s.decode["threshold"], s.decode["median_ms"],
                   request.get("tune_decoding", DEFAULTS["tune_decoding"]), opts["augment"], data_options=opts)


def from_options(request: TrainRequest) -> TrainJob:
    """A sound event detector ready to train on ``request.data`` = (AUDIO_DIR, ANNOTATIONS)."""
    if len(request.data) != 2:
        raise UsageError("train sed takes AUDIO_DIR ANNOTATIONS")
    reporter = reporter_of(request)
    check_output(request.output, request.data, request.options.get("force"))
    settled = _settle(request)
    rng = np.random.default_rng(request.seed)
    task = _task(request, settled, rng, reporter)
    settings = train_settings(request, settled.training, validation_interval(task.n_batches, 2, 20),
                              DEFAULTS["epochs"])
    reporter.info(_summary(task))
    return TrainJob(task, settings, rng, request)
