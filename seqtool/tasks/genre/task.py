"""The trainer's view of the genre task (seqtool.training.trainer.Trainer protocol).

Training sees random crops of at most seq_len steps of each piece (a different crop every epoch),
grouped into batches of similar length so little of a batch is padding. Validation averages the
class probabilities over chunks covering each whole piece (chunk_probabilities).
"""

from __future__ import annotations

import numpy as np

from seqtool.errors import UsageError
from seqtool.core.losses import cross_entropy
from seqtool.tasks.base import PlannedEpochs
from seqtool.tasks.genre.inputs import InputSpec, Piece
from seqtool.tasks.genre.model import GenreNet, chunk_probabilities, config_of, pad_batch

__all__ = ["NAME", "GenreTask"]

NAME = "genre"  # the model file's task


class GenreTask(PlannedEpochs):
    """The trainer's view: random crops, length-bucketed batches, validation accuracy."""

    name = NAME

    def __init__(self, model: GenreNet, train: list[Piece], val: list[Piece], labels: list[str],
                 spec: InputSpec, normalizer, batch: int, seq_len: int, transpose: int = 0,
                 data_options: dict | None = None):
        self.model, self.train, self.val, self.labels = model, train, val, list(labels)
        self.data_options = data_options  # stored so --resume needs no repeated flags
        if transpose and spec.kind != "score":
            raise UsageError("--transpose applies to scores only")
        self.transpose = int(transpose)
        self.spec, self.normalizer = spec, normalizer
        self.batch, self.seq_len = int(batch), int(seq_len)
        index = {lab: i for i, lab in enumerate(self.labels)}
        self._y_train = np.array([index[p.label] for p in train], np.int64)
        self._y_val = np.array([index[p.label] for p in val], np.int64)
        self.n_batches = -(-len(train) // self.batch)
        self.position = 0
        self.epoch_seed = None
        self._plan = None
        self._last_accuracy = float("nan")

    def _make_plan(self, seed: int):
        """This epoch's batches: [(piece indices, crop starts)], drawn from `seed` alone so a
        resumed run rebuilds the same plan."""
        rng = np.random.default_rng(seed)
        n = len(self.train)
        order = rng.permutation(n)
        lens = np.array([min(len(self.train[i].features), self.seq_len) for i in order])
        starts = np.array([int(rng.integers(0, max(len(self.train[i].features) - self.seq_len, 0) + 1))
                           for i in order])
        shifts = rng.integers(-self.transpose, self.transpose + 1, n)  # semitones, per crop
        # buckets of 20 batches sorted by crop length: batches of similar lengths (little
        # padding) while the bucket contents stay random
        span = self.batch * 20
        batches = []
        for b0 in range(0, n, span):
            sl = slice(b0, b0 + span)
            o = np.argsort(lens[sl], kind="stable")
            idx, st, sh = order[sl][o], starts[sl][o], shifts[sl][o]
            for k in range(0, len(idx), self.batch):
                batches.append((idx[k:k + self.batch], st[k:k + self.batch], sh[k:k + self.batch]))
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]

    def _batch(self, k: int):
        idx, starts, shifts = self._plan[k]
        seqs = [self.train[i].features[s:s + self.seq_len] for i, s in zip(idx, starts)]
        x, lengths = pad_batch(seqs)
        if self.transpose:
            # the pitch column (0) is the only one a transposition changes (intervals and scale
            # degrees are relative); in normalised units a semitone is 1/12 / std
            step = 1.0 / (12.0 * float(self.normalizer.std[0]))
            x[:, :, 0] += np.where(np.arange(x.shape[0])[:, None] < lengths[None, :],
                                   shifts[None, :] * step, 0.0).astype(np.float32)
        return x, lengths, self._y_train[idx]

    def loss(self, batch):
        x, lengths, y = batch
        return cross_entropy(self.model(x, lengths), y)

    def batch_tokens(self, batch) -> int:
        return int(batch[1].sum())

    def split_batch(self, batch, parts: int) -> list:
        """The pieces in `parts` slices (MPI ranks), each with the items its loss averages."""
        from seqtool.training.distributed import split_items

        return [(p, len(p[2])) for p in split_items(batch, (1, 0, 0), parts)]

    def epoch_progress(self) -> float:
        return self.position / max(self.n_batches, 1)

    def evaluate(self):
        """Chunk-averaged validation: loss = mean -log p(true class), plus accuracy."""
        return self.adopt_validation(self.merge_validation([self.evaluate_part(0, 1)]))

    def evaluate_part(self, rank: int, size: int):
        """(sum of log p(true class), correct, pieces) over this rank's contiguous share of the
        validation pieces (near-equal in steps), or None without validation pieces."""
        from seqtool.training.distributed import split_weighted

        if not self.val:
            return None
        lo, hi = split_weighted([len(p.features) for p in self.val], size)[rank]
        if lo == hi:
            return 0.0, 0, 0
        probs = chunk_probabilities(self.model, [p.features for p in self.val[lo:hi]], self.seq_len)
        y = self._y_val[lo:hi]
        log_p = float(np.sum(np.log(np.maximum(probs[np.arange(hi - lo), y], 1e-12))))
        return log_p, int(np.sum(probs.argmax(axis=1) == y)), hi - lo

    def merge_validation(self, parts):
        if parts[0] is None:
            return None
        log_p, correct, n = parts[0]
        for lp, c, k in parts[1:]:
            log_p, correct, n = log_p + lp, correct + c, n + k
        return {"loss": float(-(log_p / n)), "val_accuracy": round(correct / n, 6)}

    def adopt_validation(self, result):
        if result is not None:
            self._last_accuracy = result["val_accuracy"]
        return result

    def on_validation(self, reporter) -> None:
        # the Trainer's line shows the loss; accuracy is what a classifier's user watches
        if self.val:
            reporter.info(f"  val accuracy {self._last_accuracy:.4f} ({len(self.val)} pieces)")

    def _data_units(self) -> tuple[str, int]:
        return "pieces", len(self.train)

    def _extra_data_state(self) -> dict:
        return {"transpose": self.transpose}

    def meta(self) -> dict:
        return {"task": NAME, "config": config_of(self.model, self.seq_len), "labels": self.labels,
                "input": self.spec.to_dict(), "normalizer": self.normalizer.to_dict(),
                "data": {"train_pieces": len(self.train), "val_pieces": len(self.val),
                         "train_steps": int(sum(len(p.features) for p in self.train))},
                "data_options": self.data_options}
