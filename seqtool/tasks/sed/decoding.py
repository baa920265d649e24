"""From a recording to events: windowed inference, class probabilities, thresholds and median
filtering, and the loaded detector that holds what they need.

Inference runs the training windows over a whole recording (batched, so a long file is one wide
kernel call per layer) and blends the overlapping halves with triangular weights, so every frame
is judged with context on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtool.io import modelfile
from seqtool.data.audio import FeatureConfig, Normalizer, logmel, read_audio
from seqtool.core.autograd import no_grad
from seqtool.data.events import Event, roll_to_events
from seqtool.errors import SeqtoolError, UsageError
from seqtool.tasks.sed.model import DEFAULTS, NAME, SEDModel, build_sed
from seqtool.core.xp import expit, to_host

__all__ = ["Detector", "load_sed", "window_starts", "frame_logits", "probabilities", "median_frames",
           "detect", "parse_thresholds"]

_INFER_BATCH = 64  # windows per kernel call at inference (bounds the saved-gates memory)


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


def probabilities(logits: np.ndarray) -> np.ndarray:
    """(T, C) float64 class activities of frame logits."""
    return expit(np.asarray(logits, dtype=np.float64))


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

    def analyse(self, path) -> tuple[np.ndarray, float]:
        """(class activities (T, C), duration in seconds) of one audio file ('-': stdin)."""
        x, _ = read_audio(path, target_sr=self.features.sr)
        return probabilities(frame_logits(self.model, self.features_of(x), self.window)), len(x) / self.features.sr

    def decoding(self, options) -> tuple[np.ndarray, float]:
        """(per-class thresholds, median filter ms): the options given, else the model's."""
        return (parse_thresholds(options.get("threshold"), self.labels, self.threshold),
                options.get("median_ms", self.median_ms))

    def events(self, probs: np.ndarray, duration: float, decoding: tuple, filename: str) -> list[Event]:
        threshold, median_ms = decoding
        return detect(probs, self.labels, self.features.hop_s, duration, threshold, median_ms, filename)


def load_sed(path) -> Detector:
    arrays, meta = modelfile.load_model(path, expect_task=NAME)
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
