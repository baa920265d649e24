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
           "check_given_match", "check_output", "describe", "each_input", "reporter_of", "PlannedEpochs"]

# Options that stop or checkpoint a run: never stored with the architecture, never merged.
STOP_KEYS = ("epochs", "steps", "time_budget", "patience", "checkpoint_every")
TRAINING_KEYS = ("optimizer", "lr", "clip_norm", "lr_schedule", "warmup")


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
    """The predict/eval options a user gave (name -> value); a task rejects the ones it ignores.

    ``strict`` (predict --strict): stop at the first input that fails instead of going on.
    """

    strict = False

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


def check_output(path: str, inputs=(), force: bool = False) -> None:
    """Fail before any training when the model could not be written at the end, or would
    destroy an input or a file that is not a model (unless ``force``)."""
    from seqtool.io.fileio import check_output as check

    check(path, inputs=[p for p in inputs if p != "-"], kind="model", force=bool(force))


def describe(config: dict) -> str:
    """A model config for a message: 'cell lstm, hidden 8, layers 1, ...' (not a Python dict)."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in config.items())


def each_input(items, work, strict: bool = False):
    """Yield from ``work(item)`` for each of ``items`` (read lazily: endless stdin streams).

    A failing item (a SeqtoolError that is not a usage error) is reported on stderr and the next
    one is tried; at the end a SeqtoolError says how many failed. With ``strict`` the first error
    stops everything; so does the error of a lone item (one message, not two).
    """
    failed, first, count = [], None, 0
    for item in items:
        count += 1
        if count == 2 and first is not None:
            _print_error(first)  # there are several inputs after all
        try:
            yield from work(item)
        except UsageError:
            raise
        except SeqtoolError as e:
            if strict:
                raise
            failed.append(str(item[0] if isinstance(item, tuple) else item))
            if count == 1:
                first = e
            else:
                _print_error(e)
    if failed and count == 1:
        raise first
    if failed:
        shown = ", ".join(failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise SeqtoolError(f"{len(failed)} of {count} inputs failed ({shown}); the others were "
                           f"predicted (--strict stops at the first)")


def _print_error(e: Exception) -> None:
    import sys

    print(f"seqtool: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)


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


def validation_interval(batches_per_epoch: int, per_epoch: int, lowest: int, highest: int = 500,
                        cost_in_steps: float = 0.0) -> int:
    """Steps between validations: ``per_epoch`` a pass over the data, within [lowest, highest].

    ``cost_in_steps``: what one validation costs, in training steps. The interval is then at
    least 20 times that, so validating takes at most ~5% of a run (unless ``highest`` caps it).
    """
    share_floor = math.ceil(20 * cost_in_steps)
    return int(min(highest, max(lowest, batches_per_epoch // per_epoch, share_floor)))


def train_settings(request: TrainRequest, training: dict, val_every: int, default_epochs: int,
                   **extra):
    """TrainSettings from the merged training options and the request's stopping rules; without a
    stopping rule a task trains for ``default_epochs``."""
    from seqtool.training.trainer import TrainSettings

    stop = request.stopping()
    if stop["epochs"] is None and stop["steps"] is None and stop["time_budget"] is None:
        stop["epochs"] = default_epochs
    if stop["patience"] is not None and request.options.get("val_frac") == 0:
        raise UsageError("--patience needs validation data; it cannot be used with --val-frac 0")
    given = [f"--{k.replace('_', '-')} {stop[k]:g}" for k in ("epochs", "steps", "time_budget")
             if stop[k] is not None]
    if len(given) > 1:
        reporter_of(request).info(f"{' and '.join(given)} given: training stops at whichever "
                                  f"is reached first")
    # a task without a schedule of its own, and checkpoints from before schedules: plateau
    schedule = {"lr_schedule": training.get("lr_schedule") or "plateau",
                "warmup": int(training.get("warmup") or 0)}
    return TrainSettings(optimizer=training["optimizer"], lr=training["lr"],
                         clip_norm=training["clip_norm"], val_every=val_every, **schedule, **stop,
                         **extra)


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

        import contextlib

        from seqtool.io.fileio import output_lock
        from seqtool.training.distributed import launched_by_mpi

        r = self.request
        reporter = reporter_of(r)
        # A second run writing the same model is refused. Under mpiexec every rank runs this and
        # only rank 0 writes; a refusal on one rank would leave the others waiting, so no lock.
        lock = contextlib.nullcontext() if launched_by_mpi() else output_lock(r.output)
        with lock:
            trainer = Trainer(self.task, r.output, self.settings, rng=self.rng, reporter=reporter,
                              resume=r.resume, device=r.device)
            n = sum(p.size for p in trainer.params)
            reporter.info(f"training {self.task.name}: {n:,} parameters -> {r.output}")
            return trainer.run()


def finite_or_none(x: float):
    return x if math.isfinite(x) else None
