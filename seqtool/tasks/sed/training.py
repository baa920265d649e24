"""The trainer's view of sed (seqtool.training.trainer.Trainer's task protocol).

Training cuts every recording into windows of `window` frames that overlap by half; each epoch
shifts them by a random jitter and shuffles them. With a SceneMaker (train sed --clips) every epoch
also mixes new scenes from the clips, drawn from the epoch's seed (kept in the checkpoint), and
cuts them the same way; only the current epoch's scenes are held. Validation decodes whole recordings as predict
does and scores them; with tune_decoding it also picks the decoding settings stored in the model.
"""

from __future__ import annotations

import numpy as np

from seqtool.data.audio import FeatureConfig, Normalizer
from seqtool.errors import SeqtoolError
from seqtool.core.losses import bce_with_logits
from seqtool.metrics.sed import event_based, segment_based
from seqtool.tasks.base import PlannedEpochs
from seqtool.tasks.sed.decoding import detect, frame_logits, probabilities, window_starts
from seqtool.tasks.sed.model import NAME, SEDModel, config_of
from seqtool.tasks.sed.scenes import TRAIN

__all__ = ["SEDTask", "AUG_GAIN_DB", "AUG_MAX_BANDS", "TUNE_THRESHOLDS", "TUNE_MEDIAN_MS"]

# Training augmentation (train sed --augment): level changes and frequency masking.
AUG_GAIN_DB = 6.0
AUG_MAX_BANDS = 8
# Decoding settings tried on the validation recordings (train sed --tune-decoding).
TUNE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
TUNE_MEDIAN_MS = (0.0, 60.0, 100.0, 200.0, 300.0)


def _bce_numpy(logits: np.ndarray, targets: np.ndarray) -> float:
    x = logits.astype(np.float64)
    return float(np.mean(np.maximum(x, 0) - x * targets + np.log1p(np.exp(-np.abs(x)))))


class SEDTask(PlannedEpochs):
    """The trainer's view of sed: jittered, shuffled windows; frame-wise BCE; validation
    loss plus segment-based F1/ER of the decoded events."""

    name = NAME

    def __init__(self, model: SEDModel, train, val, labels, features: FeatureConfig,
                 normalizer: Normalizer, batch: int, seq_len: int, threshold: float = 0.5,
                 median_ms: float = 100.0, tune_decoding: bool = False, augment: bool = False,
                 data_options: dict | None = None, scenes=None, scene_layout=()):
        if not train and not scene_layout:
            raise SeqtoolError("no training recordings")
        self.model, self.train, self.val, self.labels = model, train, val, list(labels)
        self.features, self.normalizer = features, normalizer
        self.seq_len, self.batch = int(seq_len), int(batch)
        self.threshold, self.median_ms = float(threshold), float(median_ms)
        self.tune_decoding = bool(tune_decoding)
        self.augment = bool(augment)
        self.data_options = dict(data_options or {})  # stored, so --resume needs no repeated flags
        self.scenes, self.scene_layout = scenes, list(scene_layout)
        self._fresh, self._fresh_seed = [], None  # the epoch's scenes, after the recordings
        # frames of every training item (recordings, then the epoch's scenes: known before mixing)
        self._frames = [len(r.features) for r in train] + (scenes.frames(self.scene_layout) if scenes else [])
        # (item, base start) of every window; the epoch's jitter moves the base start
        self._windows = [(r, s) for r, n in enumerate(self._frames) for s in window_starts(n, self.seq_len)]
        self.n_batches = -(-len(self._windows) // self.batch)
        self.position = 0
        self.epoch_seed = None
        self._plan = None
        self.last_scores = None

    def _make_plan(self, seed: int):
        """[(item, start)] of this epoch: shifted by up to half a window, shuffled; the epoch's
        scenes mixed (again, when a resumed run or a rollback asks for the same seed)."""
        if self.scenes is not None and self._fresh_seed != seed:
            self._fresh = []  # the previous epoch's scenes go before the new ones are mixed
            self._fresh = self.scenes.render(self.scene_layout, seed, TRAIN, self.normalizer)
            self._fresh_seed = seed
        g = np.random.default_rng(seed)
        jitter = g.integers(0, max(1, self.seq_len // 2), len(self._windows))
        plan = []
        for (r, s), j in zip(self._windows, jitter):
            plan.append((r, int(min(s + j, max(0, self._frames[r] - self.seq_len)))))
        return [plan[i] for i in g.permutation(len(plan))]

    def _item(self, r: int):
        return self.train[r] if r < len(self.train) else self._fresh[r - len(self.train)]

    def _batch(self, k: int):
        items = self._plan[k * self.batch:(k + 1) * self.batch]
        recs = [self._item(r) for r, _ in items]
        lengths = np.array([min(self.seq_len, self._frames[r] - s) for r, s in items], dtype=np.int64)
        L = int(lengths.max())
        D, C = recs[0].features.shape[1], len(self.labels)
        x = np.zeros((L, len(items), D), dtype=np.float32)  # (T, N, D)
        y = np.zeros((L, len(items), C), dtype=np.float32)  # (T, N, C)
        for j, ((_, s), rec) in enumerate(zip(items, recs)):
            n = lengths[j]
            x[:n, j] = rec.features[s:s + n]
            y[:n, j] = rec.roll[s:s + n]
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
        from seqtool.training.distributed import split_items

        return [(p, int(p[2].sum())) for p in split_items(batch, (1, 1, 0, 1), parts)]

    def epoch_progress(self) -> float:
        return self.position / self.n_batches

    def evaluate(self):
        """Validation loss, and segment and event error rates and F1 after decoding. With
        tune_decoding the threshold and median filter with the lowest mean of the segment-based
        and event-based error rates become the model's defaults for predict and eval (segment ER
        alone favours no median filter, which splits events and doubles event insertions)."""
        return self.adopt_validation(self.merge_validation([self.evaluate_part(0, 1)]))

    def _candidates(self) -> list[tuple[float, float]]:
        """(threshold, median ms) decodings scored at a validation: the current one first."""
        candidates = [(self.threshold, self.median_ms)]
        if self.tune_decoding:
            candidates += [(t, m) for t in TUNE_THRESHOLDS for m in TUNE_MEDIAN_MS]
        return candidates

    def evaluate_part(self, rank: int, size: int):
        """This rank's contiguous share of the validation recordings (near-equal in frames),
        each decoded whole: {"loss": [(summed BCE, frames) per recording], "events": [events
        per candidate]}. Recordings are scored alike on any rank, so the merge is exact."""
        from seqtool.training.distributed import split_weighted

        if not self.val:
            return None
        lo, hi = split_weighted([len(r.features) for r in self.val], size)[rank]
        losses, probs = [], []
        for rec in self.val[lo:hi]:
            logits = frame_logits(self.model, rec.features, self.seq_len)
            losses.append((_bce_numpy(logits, rec.roll) * len(logits), len(logits)))
            probs.append(probabilities(logits))
        events = [[e for rec, p in zip(self.val[lo:hi], probs)
                   for e in detect(p, self.labels, self.features.hop_s, rec.duration, t, m, rec.name)]
                  for t, m in self._candidates()]
        return {"loss": losses, "events": events}

    def merge_validation(self, parts):
        if parts[0] is None:
            return None
        total, frames = 0.0, 0
        for part in parts:
            for t, n in part["loss"]:
                total, frames = total + t, frames + n
        ref = [e for rec in self.val for e in rec.events]
        durations = {r.name: r.duration for r in self.val}
        best = None
        for k, (t, m) in enumerate(self._candidates()):
            est = [e for part in parts for e in part["events"][k]]
            seg = segment_based(ref, est, self.labels, 1.0, durations)
            evt = event_based(ref, est, self.labels)
            key = round(0.5 * (seg["error_rate"] + evt["error_rate"]), 9)
            if best is None or key < best[0]:
                best = (key, t, m, seg, evt)
        _, threshold, median_ms, seg, evt = best
        return {"loss": total / frames, "segment_f1": round(seg["f1"], 4),
                "segment_er": round(seg["error_rate"], 4), "event_f1": round(evt["f1"], 4),
                "event_er": round(evt["error_rate"], 4), "threshold": threshold, "median_ms": median_ms}

    def adopt_validation(self, result):
        """The chosen decoding becomes the task's (and the model file's) on every rank."""
        if result is not None:
            self.threshold, self.median_ms = result["threshold"], result["median_ms"]
            self.last_scores = {k: result[k] for k in ("segment_f1", "segment_er", "event_f1", "event_er")}
        return result

    def decoded_scores(self, probs, threshold, median_ms) -> tuple[dict, dict]:
        """(segment-based, event-based) scores of the validation recordings decoded this way."""
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

    def _scene_meta(self) -> dict:
        if self.scenes is None:
            return {}
        return {"scenes_per_epoch": len(self.scene_layout), "scene_seconds_per_epoch":
                round(sum(self.scenes.recipe.seconds(t) for t in self.scene_layout), 3)}

    def _data_units(self) -> tuple[str, int]:
        return "windows", len(self._windows)

    def meta(self) -> dict:
        return {"task": NAME, "config": config_of(self.model, self.seq_len), "labels": self.labels,
                "features": self.features.to_dict(), "normalizer": self.normalizer.to_dict(),
                "decode": {"threshold": self.threshold, "median_ms": self.median_ms},
                "data": {"train_recordings": len(self.train), "val_recordings": len(self.val),
                         "train_frames": int(sum(len(r.features) for r in self.train)),
                         "train_seconds": round(sum(r.duration for r in self.train), 3),
                         **self._scene_meta()},
                "data_options": self.data_options}
