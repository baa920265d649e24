"""The four tasks behind one interface: train, load, predict, evaluate (see seqtool.tasks.base).

    from seqtool import tasks
    tasks.train("charlm", ["book.txt"], "book.model", steps=200)
    lm = tasks.load("book.model")
    for record in lm.predict(["chapter.txt"]):
        print(record.text)
    print(tasks.evaluate("book.model", ["held_out.txt"]).text)

A task's module is imported only when that task is used.
"""

from __future__ import annotations

import importlib

from seqtool.errors import SeqtoolError
from seqtool.io.modelfile import TASKS
from seqtool.tasks.base import Record, Report, TaskOptions, TrainRequest

__all__ = ["NAMES", "module", "prepare", "train", "load", "predict", "evaluate", "Record", "Report",
           "TaskOptions", "TrainRequest"]

NAMES = TASKS  # what a model file may name


def module(name: str):
    """The module implementing task ``name``."""
    if name not in NAMES:
        raise SeqtoolError(f"unknown task {name!r} (tasks: {', '.join(NAMES)})")
    return importlib.import_module(f"seqtool.tasks.{name}")


def prepare(name: str, data, output: str, *, resume=None, seed=None, device="cpu", reporter=None,
            **options):
    """A TrainJob for task ``name``: data read, model built, defaults and --resume merged."""
    request = TrainRequest(_paths(data), str(output), options, resume, seed, device, reporter)
    return module(name).from_options(request)


def train(name: str, data, output: str, **options) -> dict:
    """Train a model of task ``name`` on ``data`` (paths) into ``output``; returns the summary.

    ``options`` are the command line's, with underscores (hidden=64, time_budget=30.0, ...).
    """
    return prepare(name, data, output, **options).run()


def load(path, device: str = "cpu"):
    """The Predictor of a model file, whichever its task."""
    from seqtool.io.modelfile import read_meta

    return module(read_meta(path)["task"]).load(path, device)


def predict(path, inputs, device: str = "cpu", reporter=None, **options):
    """Records of a model file's predictions on ``inputs``."""
    strict = bool(options.pop("strict", False))
    opts = TaskOptions.given(**options)
    opts.strict = strict
    return load(path, device).predict(_paths(inputs), opts, reporter)


def evaluate(path, data, device: str = "cpu", reporter=None, **options) -> Report:
    """A Report of a model (or of a predicted sed event table) scored on labelled ``data``."""
    opts = TaskOptions.given(**options)
    sed = module("sed")
    if sed.is_event_table(path):  # seqtool eval PREDICTED.tsv REFERENCE.tsv: no model
        return sed.evaluate_tables(path, _paths(data), opts, reporter)
    return load(path, device).evaluate(_paths(data), opts, reporter)


def _paths(paths) -> tuple:
    """One path or several, as a tuple (a lone string is one path, not its characters)."""
    import os

    if isinstance(paths, (str, os.PathLike)):
        return (os.fspath(paths),)
    return tuple(os.fspath(p) for p in paths)
