"""``seqtool train sed`` as a TrainJob: options merged with the defaults and a --resume
checkpoint, recordings read and split, clips and timelines read (--clips), the normaliser
fitted, the model built."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from seqtool.io import modelfile
from seqtool.data.audio import FeatureConfig, Normalizer
from seqtool.data.synth import SceneRecipe, load_backgrounds, load_clip_library, load_timelines
from seqtool.data.events import events_to_roll
from seqtool.errors import SeqtoolError, UsageError
from seqtool.tasks.base import (describe, TRAINING_KEYS, TrainJob, TrainRequest, check_output, fill_defaults,
                                merge_given, reporter_of,
                                stored_or_given, train_settings, validation_interval)
from seqtool.tasks.sed.data import load_recordings, split_recordings
from seqtool.tasks.sed.model import DEFAULTS, NAME, build_sed, config_of, scene_defaults
from seqtool.tasks.sed.scenes import NORMALISER, VALIDATION, SceneMaker
from seqtool.tasks.sed.training import SEDTask

__all__ = ["from_options"]

ARCH_KEYS = ("cell", "hidden", "layers", "bidirectional", "dropout")
FEATURE_KEYS = ("sr", "win_ms", "hop_ms", "n_mels", "fmin", "fmax")
DATA_KEYS = ("batch", "seq_len", "val_frac", "augment")
# train sed --clips: stored with the data options (paths absolute), so --resume needs none again
SCENE_KEYS = ("clips", "timelines", "backgrounds", "ebr", "events_per_class", "polyphony",
              "scene_seconds", "scenes")


@dataclass
class _Settled:
    """What the options and a --resume checkpoint settle before any audio is read."""

    config: dict
    features: dict
    training: dict
    data_options: dict
    scene: dict  # SCENE_KEYS: all None without --clips; defaults are filled once the clips are read
    decode: dict = field(default_factory=lambda: {k: DEFAULTS[k] for k in ("threshold", "median_ms")})
    labels: list | None = None
    normalizer: Normalizer | None = None


def _span(value, kind):
    """A number or (low, high) as [low, high] (JSON keeps lists)."""
    return None if value is None else [kind(v) for v in (value if np.ndim(value) else (value, value))]


def _given_scene(request: TrainRequest) -> dict:
    """The --clips options given, as stored: absolute paths, ranges as [low, high]."""
    from seqtool.data.synth import NOISE_KINDS

    g = {k: (None if v in ((), []) else v) for k, v in request.given(SCENE_KEYS).items()}
    if g["clips"] is not None:
        g["clips"] = os.path.abspath(g["clips"])
    if g["timelines"] is not None:
        g["timelines"] = [os.path.abspath(t) for t in g["timelines"]]
    if g["backgrounds"] is not None:
        g["backgrounds"] = [b if b in NOISE_KINDS and not os.path.exists(b) else os.path.abspath(b)
                            for b in g["backgrounds"]]
    g["ebr"] = _span(g["ebr"], float)
    g["events_per_class"], g["polyphony"] = _span(g["events_per_class"], int), _span(g["polyphony"], int)
    return g


def _given(request: TrainRequest) -> _Settled:
    return _Settled(request.given(ARCH_KEYS), request.given(FEATURE_KEYS), request.given(TRAINING_KEYS),
                    request.given(DATA_KEYS), _given_scene(request))


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
                       stored_or_given(given.scene, stored_data),
                       labels=meta.get("labels"), normalizer=Normalizer.from_dict(meta.get("normalizer")))
    settled.decode.update(meta.get("decode") or {})
    return settled, stored_data


def _settle(request: TrainRequest) -> _Settled:
    settled, stored_data = _resumed(request) if request.resume else (_given(request), {})
    settled.config = fill_defaults(settled.config, DEFAULTS)
    settled.training = fill_defaults(settled.training, DEFAULTS)
    settled.data_options = fill_defaults(settled.data_options, DEFAULTS)
    # the validation split (and with --clips the fixed scenes) has its own seed, kept in the
    # model, so --resume finds the same parts
    split_seed = next((v for v in (stored_data.get("split_seed"), request.seed) if v is not None), 0)
    settled.data_options["split_seed"] = int(split_seed)
    extra = [k for k, v in settled.scene.items() if v is not None and k != "clips"]
    if settled.scene["clips"] is None and extra:
        raise UsageError(f"--{_flag(extra[0])} needs --clips (the folder of clips to mix scenes from)")
    if settled.scene["clips"] is None and not request.data:
        raise UsageError("train sed takes AUDIO_DIR ANNOTATIONS, --clips DIR, or both")
    return settled


def _flag(key: str) -> str:
    return {"timelines": "timeline", "backgrounds": "background"}.get(key, key).replace("_", "-")


def _summary(task: SEDTask) -> str:
    secs = sum(r.duration for r in task.train)
    scenes = task.meta()["data"]
    fresh = (f" + {scenes['scenes_per_epoch']} new scenes per epoch "
             f"({scenes['scene_seconds_per_epoch'] / 60:,.0f} min)" if task.scenes else "")
    val = "validation scenes" if task.scenes and not task.train else "validation"
    return (f"{len(task.train)} training recordings ({secs:,.0f} s){fresh}, {task.n_batches} batches per "
            f"epoch, {len(task.val)} {val}; {len(task.labels)} classes: {', '.join(task.labels)}; "
            f"{describe(config_of(task.model, task.seq_len))}")


def _scene_maker(scene: dict, library: dict, features: FeatureConfig, labels, reporter):
    """(SceneMaker, the scene options to store): timelines and backgrounds read, the options not
    given set to the defaults (said once on stderr)."""
    unknown = sorted(set(library) - set(labels))
    if unknown:
        raise SeqtoolError(f"{scene['clips']}: clips of class {unknown[0]!r}, which the model does not "
                           f"know ({', '.join(labels)})")
    timelines = load_timelines(scene["timelines"] or (), library)
    chosen = fill_defaults(scene, scene_defaults(len(timelines)))
    defaulted = [k for k, v in scene.items() if v is None and k not in ("clips", "timelines")]
    chosen = {**chosen, "ebr": _span(chosen["ebr"], float), "events_per_class":
              _span(chosen["events_per_class"], int), "polyphony": _span(chosen["polyphony"], int),
              "backgrounds": list(chosen["backgrounds"])}
    recipe = SceneRecipe(tuple(timelines), tuple(sorted(library)), float(chosen["scene_seconds"]),
                         tuple(chosen["events_per_class"]), tuple(chosen["polyphony"]), tuple(chosen["ebr"]),
                         load_backgrounds(chosen["backgrounds"], features.sr))
    maker = SceneMaker(library, recipe, features, labels)
    reporter.info(_scene_note(chosen, len(timelines), defaulted))
    return maker, chosen


def _scene_note(c: dict, n_timelines: int, defaulted: list) -> str:
    ebr, epc, poly = c["ebr"], c["events_per_class"], c["polyphony"]
    on = f"{n_timelines} on the given timelines + " if n_timelines else ""
    note = (f"scenes per epoch: {on}{c['scenes']} on random timelines ({c['scene_seconds']:g} s, "
            f"{epc[0]}-{epc[1]} events per class, polyphony {poly[0]}-{poly[1]}), EBR {ebr[0]:g} to "
            f"{ebr[1]:g} dB, backgrounds {', '.join(map(os.path.basename, c['backgrounds']))}")
    if defaulted:
        note += f" (defaults: {', '.join('--' + _flag(k) for k in defaulted)})"
    return note


def _held_out(maker: SceneMaker, layout: list, val_frac: float, seed: int) -> list:
    """The fixed validation scenes' layout: val_frac of an epoch's timeline and random scenes
    (at least one of each kind the epoch has), timelines picked by ``seed``."""
    if val_frac == 0:
        return []
    n_tl = sum(1 for t in layout if t is not None)
    n_random = len(layout) - n_tl
    return maker.held_out_layout(seed, math.ceil(val_frac * n_tl), math.ceil(val_frac * n_random))


def _labels(recordings, rec_labels, clip_labels, stored, hop_s: float) -> list:
    """The classes: the checkpoint's, else those of the annotations and the clips together
    (the recordings' targets recomputed when the clips add classes)."""
    if stored is not None:
        return list(stored)
    labels = sorted(set(rec_labels) | set(clip_labels))
    if labels != list(rec_labels):
        for rec in recordings:
            rec.roll = events_to_roll(rec.events, labels, len(rec.features), hop_s)
    return labels


def _read_data(request: TrainRequest, s: _Settled, features: FeatureConfig, reporter):
    """(recordings, labels, SceneMaker or None): the annotated recordings (if any) and the clips
    (with --clips); the scene options chosen go into the stored data options."""
    recordings, rec_labels = [], []
    if request.data:
        audio_dir, annotations = request.data
        recordings, rec_labels = load_recordings(audio_dir, annotations, features, s.labels, reporter)
    if s.scene["clips"] is None:
        return recordings, rec_labels, None
    library = load_clip_library(s.scene["clips"], features.sr)
    labels = _labels(recordings, rec_labels, library, s.labels, features.hop_s)
    maker, chosen = _scene_maker(s.scene, library, features, labels, reporter)
    s.data_options.update(chosen)
    return recordings, labels, maker


def _task(request: TrainRequest, s: _Settled, rng: np.random.Generator, reporter) -> SEDTask:
    """Recordings read and split, clips read, features normalised (a new normaliser fitted on
    the training part and, with --clips, on scenes of a fixed seed), the model built."""
    features = FeatureConfig(**{k: v for k, v in s.features.items() if v is not None})
    recordings, labels, maker = _read_data(request, s, features, reporter)
    opts = s.data_options
    train, val = split_recordings(recordings, opts["val_frac"], np.random.default_rng(opts["split_seed"]))
    layout, val_layout = [], []
    if maker is not None:
        layout = maker.layout(opts["scenes"])
        if not layout and not recordings:
            raise UsageError("--scenes 0 without --timeline or recordings leaves nothing to train on")
        maker.check_memory([t for t in layout if t is not None], opts["scenes"],
                           f"an epoch of {len(layout)} scenes of {opts['scene_seconds']:g} s "
                           f"(--scenes, --scene-seconds)")
        if opts["scenes"]:
            maker.check_fits()
        if not recordings:
            val_layout = _held_out(maker, layout, opts["val_frac"], opts["split_seed"])
    normalizer = s.normalizer
    if normalizer is None:
        fixed = maker.render(_held_out(maker, layout, 0.1, opts["split_seed"]), opts["split_seed"],
                             NORMALISER) if maker is not None else []
        normalizer = Normalizer().fit([r.features for r in train + fixed])
    for rec in recordings:
        rec.features = normalizer(rec.features)
    if val_layout:
        val = maker.render(val_layout, opts["split_seed"], VALIDATION, normalizer, prefix="validation")
    model = build_sed(s.config, features.n_mels, len(labels), rng)
    return SEDTask(model, train, val, labels, features, normalizer, opts["batch"], opts["seq_len"],
                   s.decode["threshold"], s.decode["median_ms"],
                   request.get("tune_decoding", DEFAULTS["tune_decoding"]), opts["augment"], data_options=opts,
                   scenes=maker, scene_layout=layout)


def from_options(request: TrainRequest) -> TrainJob:
    """A sound event detector ready to train on ``request.data`` = (AUDIO_DIR, ANNOTATIONS) and/or
    scenes mixed from ``clips`` (request option) every epoch."""
    if len(request.data) not in (0, 2):
        raise UsageError("train sed takes AUDIO_DIR ANNOTATIONS")
    reporter = reporter_of(request)
    settled = _settle(request)
    scene_files = [p for p in (settled.scene["timelines"] or []) + (settled.scene["backgrounds"] or [])
                   if os.path.isabs(p)]  # noise names are not files
    check_output(request.output, (*request.data, *scene_files), request.options.get("force"))
    rng = np.random.default_rng(request.seed)
    task = _task(request, settled, rng, reporter)
    # new scenes every epoch: one validation an epoch is enough (32-60 min of audio by default)
    per_epoch = 1 if task.scenes is not None else 2
    settings = train_settings(request, settled.training, validation_interval(task.n_batches, per_epoch, 20),
                              DEFAULTS["epochs"])
    reporter.info(_summary(task))
    return TrainJob(task, settings, rng, request)
