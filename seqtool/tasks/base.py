"""What every task shares: the training request, option merging, records and reports.

A task module (seqtool.tasks.charlm, .genre, .seq2seq, .sed) implements the same small protocol::

    NAME                                     the model file's task
    from_options(request) -> TrainJob        defaults, --resume merging, data, model, settings
    load(path, device="cpu") -> Predictor    a model file ready to use
    Predictor.predict(inputs, options, reporter)  -> iterator of Record
    Predictor.evaluate(data, options, reporter)   -> Report

A Record is one output line (TSV or plain text) and its JSON Lines form; a Report is a block of
metrics as text and as one JSON object. The CLI only chooses which form to print.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqtool.errors import SeqtoolError, UsageError

__all__ = ["Record", "Report", "TrainRequest", "TrainJob", "TaskOptions", "merge_given",
           "fill_defaults", "stored_or_given", "validation_interval", "train_settings",
           "check_given_match", "check_output", "reporter_of", "PlannedEpochs"]

# Options that stop or checkpoint a run: never stored with the architecture, never merged.
STOP_KEYS = ("epochs", "steps", "time_budget", "patience", "checkpoint_every")
TRAINING_KEYS = ("optimizer", "lr", "clip_norm")


@dataclass
class Record:
    """One prediction: ``text`` is the printed line, ``data`` the JSON Lines object."""

    data: dict
    text: str


@dataclass
class Report:
    """Evaluation metrics: ``text`` for a person, ``data`` for --json."""

    data: dict
    text: str


class TaskOptions(dict):
    """The predict/eval options a user gave (name -> value); a task rejects the ones it ignores."""

    def only(self, task: str, allowed: tuple[str, ...] = ()) -> "TaskOptions":
        extra = [k for k in self if k not in allowed]
        if extra:
            raise UsageError(f"--{extra[0].replace('_', '-')} does not apply to {task} models")
        return self

    @classmethod
    def given(cls, **values) -> "TaskOptions":
        """Only the options given (not None, not an unset flag or empty multiple)."""
        # by identity: 0 and 0.0 (e.g. --median-ms 0) are values given, not unset flags
        return cls({k: v for k, v in values.items() if v is not None and v is not False and v != ()})


@dataclass
class TrainRequest:
    """What a user asked of ``seqtool train TASK``: every option a task may read, None when not
    given. ``data`` holds the positional inputs (paths or '-'), ``options`` the task's own."""

    data: tuple
    output: str
    options: dict = field(default_factory=dict)
    resume: str | None = None
    seed: int | None = None
    device: str = "cpu"
    reporter: Any = None

    def get(self, key: str, default=None):
        value = self.options.get(key)
        return default if value is None else value

    def given(self, keys) -> dict:
        """{key: value or None} for ``keys``."""
        return {k: self.options.get(k) for k in keys}

    def stopping(self) -> dict:
        return {k: self.options.get(k) for k in STOP_KEYS}


def check_output(path: str) -> None:
    """Fail before any training when the model could not be written at the end."""
    directory = os.path.dirname(os.path.abspath(path))
    shown = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise SeqtoolError(f"cannot write {path}: directory {shown} does not exist")
    if os.path.isdir(path):
        raise SeqtoolError(f"cannot write {path}: it is a directory")
    if not os.access(directory, os.W_OK):
        raise SeqtoolError(f"cannot write {path}: permission denied")


def reporter_of(request_or_reporter):
    """The reporter given, or one that says nothing (Python users need not pass one)."""
    from seqtool.training.trainer import NullReporter

    reporter = getattr(request_or_reporter, "reporter", request_or_reporter)
    return reporter if reporter is not None else NullReporter()


def check_given_match(given: dict, stored: dict, what: str = "the checkpoint's") -> None:
    """A given option that differs from the stored value is a usage error (architecture, data)."""
    for key, value in given.items():
        if value is not None and stored.get(key) != value:
            raise UsageError(f"--{key.replace('_', '-')} {value} differs from {what} {stored.get(key)}")


def merge_given(given: dict, stored: dict) -> dict:
    """Architecture on --resume: options must match the checkpoint, which then supplies them all."""
    check_given_match(given, stored)
    return {k: stored.get(k) for k in given}


def stored_or_given(given: dict, stored: dict) -> dict:
    """Training and data options on --resume: a given one wins, else the checkpoint's."""
    return {k: stored.get(k) if v is None else v for k, v in given.items()}


def fill_defaults(values: dict, defaults: dict) -> dict:
    """Options not given (None) take the task's default."""
    return {k: defaults.get(k) if v is None else v for k, v in values.items()}


def validation_interval(batches_per_epoch: int, per_epoch: int, lowest: int, highest: int = 500) -> int:
    """Steps between validations: ``per_epoch`` a pass over the data, within [lowest, highest]."""
    return int(min(highest, max(lowest, batches_per_epoch // per_epoch)))


def train_settings(request: TrainRequest, training: dict, val_every: int, default_epochs: int,
                   **extra):
    """TrainSettings from the merged training options and the request's stopping rules; without a
    stopping rule a task trains for ``default_epochs``."""
    from seqtool.training.trainer import TrainSettings

    stop = request.stopping()
    if stop["epochs"] is None and stop["steps"] is None and stop["time_budget"] is None:
        stop["epochs"] = default_epochs
    return TrainSettings(optimizer=training["optimizer"], lr=training["lr"],
                         clip_norm=training["clip_norm"], val_every=val_every, **stop, **extra)


class PlannedEpochs:
    """Trainer protocol for tasks whose epoch is a plan of batches drawn from one seed (genre,
    sed): a resumed run rebuilds the same plan from the stored seed and continues at its position.

    The task sets ``position``, ``epoch_seed``, ``_plan``, ``n_batches``, ``batch``, ``seq_len`` and
    ``model`` (with ``.rnn``), and defines ``_make_plan(seed)``, ``_batch(k)`` and
    ``_data_units() -> (name, count)`` (what a plan is made of, checked on resume).
    """

    def train_batches(self, rng):
        self.model.rnn.dropout_rng = rng  # dropout draws from the checkpointed generator
        self.model.train()
        if self._plan is None:
            self.epoch_seed = int(rng.integers(2 ** 62))
            self._plan = self._make_plan(self.epoch_seed)
        while self.position < self.n_batches:
            k = self.position
            self.position += 1
            yield self._batch(k)
        self.position, self.epoch_seed, self._plan = 0, None, None

    def _extra_data_state(self) -> dict:
        return {}

    def data_state(self) -> dict:
        unit, count = self._data_units()
        return {"position": self.position, "epoch_seed": self.epoch_seed, unit: count,
                "batch": self.batch, "seq_len": self.seq_len, **self._extra_data_state()}

    def load_data_state(self, state: dict) -> None:
        unit, count = self._data_units()
        if (state.get(unit), state.get("batch"), state.get("seq_len")) != (count, self.batch, self.seq_len):
            raise SeqtoolError(
                "the checkpoint was trained on other data or another --batch/--seq-len "
                f"({state.get(unit)} {unit}, batch {state.get('batch')}, seq-len "
                f"{state.get('seq_len')}; now {count}, {self.batch}, {self.seq_len}); "
                "cannot resume exactly")
        self.position = int(state["position"])
        seed = state.get("epoch_seed")
        self.epoch_seed = None if seed is None else int(seed)
        self._plan = None if seed is None else self._make_plan(self.epoch_seed)

    def state_arrays(self) -> dict:
        return {}  # nothing is carried from one batch to the next

    def load_state_arrays(self, arrays: dict) -> None:
        pass


@dataclass
class TrainJob:
    """A task ready to train: run() trains through the shared Trainer and returns its summary."""

    task: Any
    settings: Any
    rng: np.random.Generator
    request: TrainRequest

    def run(self) -> dict:
        from seqtool.training.trainer import Trainer

        r = self.request
        reporter = reporter_of(r)
        trainer = Trainer(self.task, r.output, self.settings, rng=self.rng, reporter=reporter,
                          resume=r.resume, device=r.device)
        n = sum(p.size for p in trainer.params)
        reporter.info(f"training {self.task.name}: {n:,} parameters -> {r.output}")
        return trainer.run()


def finite_or_none(x: float):
    return x if math.isfinite(x) else None
