"""Sound event detection: log-mel frames -> stacked bidirectional LSTM -> per-class sigmoid.

Model file: task "sed"; config {"cell", "hidden", "layers", "bidirectional", "dropout",
"window"} (window: frames per training window, also the inference window); meta["labels"] =
class names in output order; meta["features"] = seqtool.audio.FeatureConfig as a dict;
meta["normalizer"] = per-band {"mean", "std"} of the training features; meta["decode"] =
{"threshold", "median_ms"}, the defaults of predict/eval. Parameters: rnn.* (seqtool.nn names),
head.weight (C, H * directions), head.bias (C,).

Training cuts every recording into windows of `window` frames that overlap by half; each epoch
shifts them by a random jitter and shuffles them. Inference runs the same windows over a whole
recording (batched, so a long file is one wide kernel call per layer) and blends the overlapping
halves with triangular weights, so every frame is judged with context on both sides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from seqtool import modelfile
from seqtool.audio import FeatureConfig, Normalizer, logmel, read_audio
from seqtool.autograd import no_grad
from seqtool.data.events import Event, check_labels, events_to_roll, read_events, roll_to_events
from seqtool.errors import SeqtoolError, UsageError
from seqtool.losses import bce_with_logits
from seqtool.nn import GRU, LSTM, RNN, Linear, Module
from seqtool.xp import to_host

__all__ = ["SEDModel", "SEDTask", "Recording", "DEFAULTS", "build_sed", "load_sed", "load_recordings",
           "frame_logits", "detect", "median_frames", "parse_thresholds"]

_CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
# Measured on scenes synthesized from the DCASE 2016 office clips (2 shared cores): 4 x biLSTM 64
# trains at ~2.5k frames/s; windows of 256 frames (5.1 s at a 20 ms hop) hold whole events.
DEFAULTS = {"cell": "lstm", "hidden": 64, "layers": 4, "bidirectional": True, "dropout": 0.2,
            "optimizer": "adam", "lr": 2e-3, "clip_norm": 5.0, "batch": 16, "seq_len": 256,
            "val_frac": 0.1, "augment": True, "threshold": 0.5, "median_ms": 100.0}
# Training augmentation (train sed --augment): level changes and frequency masking.
AUG_GAIN_DB = 6.0
AUG_MAX_BANDS = 8
# Decoding settings tried on the validation recordings (train sed --tune-decoding).
TUNE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
TUNE_MEDIAN_MS = (0.0, 60.0, 100.0, 200.0, 300.0)
_INFER_BATCH = 64  # windows per kernel call at inference (bounds the saved-gates memory)
# A new detector predicts "inactive" (most frames are): the head starts at sigmoid(-2) ~ 0.12
# instead of 0.5, which skips the first epoch's worth of learning the class priors.
_HEAD_BIAS = -2.0


class SEDModel(Module):
    """Features (T, N, D) -> stacked (bidirectional) RNN -> linear head -> logits (T, N, C)."""

    def __init__(self, n_features: int, n_classes: int, hidden: int, layers: int, cell: str = "lstm",
                 bidirectional: bool = True, dropout: float = 0.0, rng: np.random.Generator | None = None):
        super().__init__()
        if cell not in _CELLS:
            raise UsageError(f"unknown cell {cell!r}; choose one of: {', '.join(_CELLS)}")
        rng = rng if rng is not None else np.random.default_rng()
        self.cell, self.dropout = cell, float(dropout)
        self.rnn = _CELLS[cell](n_features, hidden, layers, bidirectional=bidirectional, dropout=dropout,
                                forget_bias=1.0 if cell == "lstm" else 0.0, rng=rng)
        self.head = Linear(hidden * (2 if bidirectional else 1), n_classes, rng=rng)
        self.head.bias.data[:] = _HEAD_BIAS

    def forward(self, x, lengths=None):
        y, _ = self.rnn(self.on_device(x), None, lengths)  # (T, N, H * dirs)
        return self.head(y)  # (T, N, C)


def config_of(model: SEDModel, window: int) -> dict:
    rnn = model.rnn
    return {"cell": model.cell, "hidden": rnn.hidden_size, "layers": rnn.num_layers,
            "bidirectional": bool(rnn.bidirectional), "dropout": model.dropout, "window": int(window)}


def build_sed(config: dict, n_features: int, n_classes: int, rng=None) -> SEDModel:
    return SEDModel(n_features, n_classes, int(config["hidden"]), int(config["layers"]), config["cell"],
                    bool(config["bidirectional"]), float(config["dropout"]), rng=rng)


@dataclass
class Detector:
    """A loaded model with everything inference needs."""

    model: SEDModel
    labels: list
    features: FeatureConfig
    normalizer: Normalizer
    window: int
    threshold: float
    median_ms: float
    meta: dict

    def features_of(self, signal: np.ndarray) -> np.ndarray:
        return self.normalizer(logmel(signal, self.features))  # (T, D)


def load_sed(path) -> Detector:
    arrays, meta = modelfile.load_model(path, expect_task="sed")
    try:
        config, labels = meta["config"], list(meta["labels"])
        features = FeatureConfig.from_dict(meta["features"])
        normalizer = Normalizer.from_dict(meta["normalizer"])
        if len(normalizer.mean) != features.n_mels:
            raise ValueError(f"{len(normalizer.mean)} normalisation bands for {features.n_mels} mel bands")
        model = build_sed(config, features.n_mels, len(labels), rng=np.random.default_rng(0))
        decode = meta.get("decode") or {}
        window = int(config["window"])
    except (KeyError, TypeError, ValueError, UsageError, SeqtoolError) as e:
        raise SeqtoolError(f"{path} is not a valid sed model ({e})") from None
    params = {k: v for k, v in arrays.items() if not k.startswith(modelfile.OPTIM_PREFIX)}
    model.load_state_dict(params)
    return Detector(model.eval(), labels, features, normalizer, window,
                    float(decode.get("threshold", DEFAULTS["threshold"])),
                    float(decode.get("median_ms", DEFAULTS["median_ms"])), meta)


# ----------------------------------------------------------------------------- data


@dataclass
class Recording:
    name: str  # the annotation's filename column
    features: np.ndarray  # (T, D) float32 log-mel, normalised once the normaliser is fitted
    roll: np.ndarray  # (T, C) float32 0/1 targets
    duration: float  # seconds
    events: list


def _audio_path(audio_dir: str, fname: str) -> str | None:
    for candidate in (os.path.join(audio_dir, fname), os.path.join(audio_dir, os.path.basename(fname))):
        if os.path.isfile(candidate):
            return candidate
    return None


def load_recordings(audio_dir, annotations, cfg: FeatureConfig, labels=None, reporter=None):
    """(recordings, labels) for the files an annotation list names, with frame targets.

    labels=None takes the sorted labels of the annotations; given labels (a model's) make an
    unknown one an error naming the annotation line.
    """
    audio_dir = os.fspath(audio_dir)
    if not os.path.isdir(audio_dir):
        raise SeqtoolError(f"{audio_dir}: audio folder not found")
    numbered = read_events(annotations, with_lines=True)
    source = "<stdin>" if str(annotations) == "-" else str(annotations)
    if not numbered:
        raise SeqtoolError(f"{source}: no events")
    if labels is None:
        labels = sorted({e.label for _, e in numbered})
    else:
        check_labels(numbered, labels, source)
    by_file: dict[str, list] = {}
    first_line: dict[str, int] = {}
    for lineno, e in numbered:
        by_file.setdefault(e.filename, []).append(e)
        first_line.setdefault(e.filename, lineno)
    paths = {}
    for fname, lineno in first_line.items():
        path = _audio_path(audio_dir, fname)
        if path is None:
            raise SeqtoolError(f"{source}:{lineno}: audio file {fname} not found in {audio_dir}")
        paths[fname] = path
    recordings = []
    progress = reporter.progress("features", total=len(paths)) if reporter else None
    import contextlib

    with progress or contextlib.nullcontext() as bar:
        for fname in sorted(paths):
            x, _ = read_audio(paths[fname], target_sr=cfg.sr)
            feats = logmel(x, cfg)  # (T, D)
            events = sorted(by_file[fname], key=lambda e: (e.onset, e.offset, e.label))
            roll = events_to_roll(events, labels, len(feats), cfg.hop_s)
            recordings.append(Recording(fname, feats, roll, len(x) / cfg.sr, events))
            if bar is not None:
                bar.advance()
    return recordings, list(labels)


def split_recordings(recordings, val_frac: float, rng: np.random.Generator):
    """(train, val): a random val_frac of the recordings (at least one when there are two)."""
    n = len(recordings)
    n_val = int(round(n * val_frac))
    if val_frac > 0 and n >= 2:
        n_val = min(max(1, n_val), n - 1)
    else:
        n_val = 0
    order = rng.permutation(n)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [recordings[i] for i in train], [recordings[i] for i in val]


# ----------------------------------------------------------------------------- inference


def window_starts(n_frames: int, window: int) -> list[int]:
    """Starts of half-overlapping windows covering n_frames (the last one ends at the end)."""
    if n_frames <= window:
        return [0]
    hop = max(1, window // 2)
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def frame_logits(model: SEDModel, feats: np.ndarray, window: int) -> np.ndarray:
    """(T, C) float32 logits for one recording's normalised features (T, D)."""
    T = feats.shape[0]
    if T == 0:
        raise SeqtoolError("no feature frames")
    was_training = model.training
    model.eval()
    starts = window_starts(T, window)
    W = min(window, T)
    # triangular weights: a frame counts most from the window where it sits in the middle
    ramp = np.minimum(np.arange(1, W + 1), np.arange(W, 0, -1)).astype(np.float32)  # (W,)
    out = None
    weight = np.zeros(T, dtype=np.float32)
    try:
        with no_grad():
            for b in range(0, len(starts), _INFER_BATCH):
                chunk = starts[b:b + _INFER_BATCH]
                x = np.stack([feats[s:s + W] for s in chunk], axis=1)  # (W, n, D)
                logits = to_host(model(x).data).astype(np.float32, copy=False)  # (W, n, C)
                if out is None:
                    out = np.zeros((T, logits.shape[2]), dtype=np.float32)
                for j, s in enumerate(chunk):
                    out[s:s + W] += logits[:, j] * ramp[:, None]
                    weight[s:s + W] += ramp
    finally:
        model.train(was_training)
    return out / weight[:, None]


def sigmoid(x):
    return 0.5 + 0.5 * np.tanh(0.5 * np.asarray(x, dtype=np.float64))


def median_frames(median_ms: float, hop_s: float) -> int:
    """Median filter length in frames for median_ms (odd, so the filter is centred; >= 1)."""
    n = int(round(median_ms / 1000.0 / hop_s))
    return max(1, n if n % 2 else n + 1)


def detect(probs: np.ndarray, labels, hop_s: float, duration: float, threshold, median_ms: float,
           filename: str) -> list[Event]:
    """Events (clipped to the recording) from (T, C) probabilities."""
    events = roll_to_events(probs, labels, hop_s, threshold, median_frames(median_ms, hop_s), filename)
    out = []
    for e in events:
        off = min(e.offset, duration)
        if off > e.onset:
            out.append(Event(e.filename, round(e.onset, 6), round(off, 6), e.label))
    return out


def parse_thresholds(values, labels, default: float) -> np.ndarray:
    """Per-class thresholds from --threshold values: 'P' for every class, 'LABEL=P' for one."""
    thr = np.full(len(labels), float(default))
    index = {lab: i for i, lab in enumerate(labels)}
    for v in values or ():
        label, sep, num = str(v).rpartition("=")
        try:
            p = float(num)
        except ValueError:
            raise UsageError(f"--threshold {v!r}: expected P or LABEL=P with P a number") from None
        if not 0.0 <= p <= 1.0:
            raise UsageError(f"--threshold {v!r}: P must lie in [0, 1]")
        if sep:
            if label not in index:
                raise UsageError(f"--threshold {v!r}: unknown label {label!r} "
                                 f"(the model's labels: {', '.join(labels)})")
            thr[index[label]] = p
        else:
            thr[:] = p
    return thr


# ----------------------------------------------------------------------------- training task


def _bce_numpy(logits: np.ndarray, targets: np.ndarray) -> float:
    x = logits.astype(np.float64)
    return float(np.mean(np.maximum(x, 0) - x * targets + np.log1p(np.exp(-np.abs(x)))))


class SEDTask:
    """The trainer's view of sed: jittered, shuffled windows; frame-wise BCE; validation
    loss plus segment-based F1/ER of the decoded events."""

    name = "sed"

    def __init__(self, model: SEDModel, train, val, labels, features: FeatureConfig,
                 normalizer: Normalizer, batch: int, seq_len: int, threshold: float = 0.5,
                 median_ms: float = 100.0, tune_decoding: bool = False, augment: bool = False):
        if not train:
            raise SeqtoolError("no training recordings")
        self.model, self.train, self.val, self.labels = model, train, val, list(labels)
        self.features, self.normalizer = features, normalizer
        self.seq_len, self.batch = int(seq_len), int(batch)
        self.threshold, self.median_ms = float(threshold), float(median_ms)
        self.tune_decoding = bool(tune_decoding)
        self.augment = bool(augment)
        # (recording, base start) of every window; the epoch's jitter moves the base start
        self._windows = [(r, s) for r, rec in enumerate(train)
                         for s in window_starts(len(rec.features), self.seq_len)]
        self.n_batches = -(-len(self._windows) // self.batch)
        self.position = 0
        self.epoch_seed = None
        self._plan = None
        self.last_scores = None

    def _make_plan(self, seed: int):
        """[(recording, start)] of this epoch: shifted by up to half a window, shuffled."""
        g = np.random.default_rng(seed)
        jitter = g.integers(0, max(1, self.seq_len // 2), len(self._windows))
        plan = []
        for (r, s), j in zip(self._windows, jitter):
            n = len(self.train[r].features)
            plan.append((r, int(min(s + j, max(0, n - self.seq_len)))))
        return [plan[i] for i in g.permutation(len(plan))]

    def _batch(self, k: int):
        items = self._plan[k * self.batch:(k + 1) * self.batch]
        recs = self.train
        lengths = np.array([min(self.seq_len, len(recs[r].features) - s) for r, s in items], dtype=np.int64)
        L = int(lengths.max())
        D, C = recs[0].features.shape[1], len(self.labels)
        x = np.zeros((L, len(items), D), dtype=np.float32)  # (T, N, D)
        y = np.zeros((L, len(items), C), dtype=np.float32)  # (T, N, C)
        for j, (r, s) in enumerate(items):
            n = lengths[j]
            x[:n, j] = recs[r].features[s:s + n]
            y[:n, j] = recs[r].roll[s:s + n]
        if self.augment:
            self._augment(x, k)
        mask = None
        if lengths.min() < L:  # short recordings: padded frames carry no loss
            mask = (np.arange(L)[:, None] < lengths[None, :]).astype(np.float32)[:, :, None]  # (T, N, 1)
            mask = np.ascontiguousarray(np.broadcast_to(mask, y.shape))
        return x, y, lengths, mask

    def _augment(self, x: np.ndarray, k: int) -> None:
        """In place, per window: a gain of up to +-AUG_GAIN_DB and one band of up to
        AUG_MAX_BANDS mel bands set to the training mean (frequency masking, as SpecAugment).

        Drawn from (epoch seed, batch index), so a resumed run repeats them exactly.
        """
        g = np.random.default_rng([self.epoch_seed, k])
        D = x.shape[2]
        std = self.normalizer.std  # (D,) a gain in dB moves a standardised band by dB / std
        for j in range(x.shape[1]):
            x[:, j] += (g.uniform(-AUG_GAIN_DB, AUG_GAIN_DB) / std)[None, :].astype(np.float32)
            width = int(g.integers(0, min(AUG_MAX_BANDS, D - 1) + 1))
            start = int(g.integers(0, D - width + 1))
            x[:, j, start:start + width] = 0.0

    # ---- trainer protocol
    def train_batches(self, rng):
        self.model.rnn.dropout_rng = rng
        self.model.train()
        if self._plan is None:
            self.epoch_seed = int(rng.integers(2 ** 62))
            self._plan = self._make_plan(self.epoch_seed)
        while self.position < self.n_batches:
            k = self.position
            self.position += 1
            yield self._batch(k)
        self.position = 0
        self.epoch_seed = None
        self._plan = None

    def loss(self, batch):
        x, y, lengths, mask = batch
        logits = self.model(x, lengths)  # (T, N, C)
        if mask is None:
            return bce_with_logits(logits, y)
        return bce_with_logits(logits, y, weight=mask, reduction="sum") * (1.0 / float(mask.sum()))

    def batch_tokens(self, batch) -> int:
        return int(batch[2].sum())

    def split_batch(self, batch, parts: int) -> list:
        """The windows in `parts` slices (MPI ranks), each weighted by its valid frames (the
        loss averages frames x classes)."""
        from seqtool.distributed import split_items

        return [(p, int(p[2].sum())) for p in split_items(batch, (1, 1, 0, 1), parts)]

    def epoch_progress(self) -> float:
        return self.position / self.n_batches

    def evaluate(self):
        """Validation loss, and segment and event error rates and F1 after decoding. With
        tune_decoding the threshold and median filter with the lowest mean of the segment-based
        and event-based error rates become the model's defaults for predict and eval (segment ER
        alone favours no median filter, which splits events and doubles event insertions)."""
        if not self.val:
            return None
        total, frames, probs = 0.0, 0, []
        for rec in self.val:
            logits = frame_logits(self.model, rec.features, self.seq_len)
            total += _bce_numpy(logits, rec.roll) * len(logits)
            frames += len(logits)
            probs.append(sigmoid(logits))
        candidates = [(self.threshold, self.median_ms)]
        if self.tune_decoding:
            candidates += [(t, m) for t in TUNE_THRESHOLDS for m in TUNE_MEDIAN_MS]
        best = None
        for t, m in candidates:
            seg, evt = self.decoded_scores(probs, t, m)
            key = round(0.5 * (seg["error_rate"] + evt["error_rate"]), 9)
            if best is None or key < best[0]:
                best = (key, t, m, seg, evt)
        _, self.threshold, self.median_ms, seg, evt = best
        self.last_scores = {"segment_f1": round(seg["f1"], 4), "segment_er": round(seg["error_rate"], 4),
                            "event_f1": round(evt["f1"], 4), "event_er": round(evt["error_rate"], 4)}
        return {"loss": total / frames, **self.last_scores, "threshold": self.threshold,
                "median_ms": self.median_ms}

    def decoded_scores(self, probs, threshold, median_ms) -> tuple[dict, dict]:
        """(segment-based, event-based) scores of the validation recordings decoded this way."""
        from seqtool.sed_metrics import event_based, segment_based

        ref, est = [], []
        for rec, p in zip(self.val, probs):
            ref.extend(rec.events)
            est.extend(detect(p, self.labels, self.features.hop_s, rec.duration, threshold, median_ms, rec.name))
        return (segment_based(ref, est, self.labels, 1.0, {r.name: r.duration for r in self.val}),
                event_based(ref, est, self.labels))

    def on_validation(self, reporter) -> None:
        if self.last_scores:
            tuned = ", tuned on validation" if self.tune_decoding else ""
            sc = self.last_scores
            reporter.info(f"  validation: segment F1 {100 * sc['segment_f1']:.1f}% ER {sc['segment_er']:.3f}, "
                          f"event F1 {100 * sc['event_f1']:.1f}% ER {sc['event_er']:.3f} "
                          f"(threshold {self.threshold:g}, median {self.median_ms:g} ms{tuned})")

    def data_state(self) -> dict:
        return {"position": self.position, "epoch_seed": self.epoch_seed, "windows": len(self._windows),
                "batch": self.batch, "seq_len": self.seq_len}

    def load_data_state(self, state: dict) -> None:
        if (state.get("windows"), state.get("batch"), state.get("seq_len")) != (
                len(self._windows), self.batch, self.seq_len):
            raise SeqtoolError(
                "the checkpoint was trained on other data or another --batch/--seq-len "
                f"({state.get('windows')} windows, batch {state.get('batch')}, seq-len "
                f"{state.get('seq_len')}; now {len(self._windows)}, {self.batch}, {self.seq_len}); "
                "cannot resume exactly")
        self.position = int(state["position"])
        seed = state.get("epoch_seed")
        self.epoch_seed = None if seed is None else int(seed)
        self._plan = None if seed is None else self._make_plan(self.epoch_seed)

    def state_arrays(self) -> dict:
        return {}

    def load_state_arrays(self, arrays: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"task": "sed", "config": config_of(self.model, self.seq_len), "labels": self.labels,
                "features": self.features.to_dict(), "normalizer": self.normalizer.to_dict(),
                "decode": {"threshold": self.threshold, "median_ms": self.median_ms},
                "data": {"train_recordings": len(self.train), "val_recordings": len(self.val),
                         "train_frames": int(sum(len(r.features) for r in self.train)),
                         "train_seconds": round(sum(r.duration for r in self.train), 3)}}
