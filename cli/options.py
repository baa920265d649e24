"""Options shared by several commands, defined once and stacked as decorators.

    @click.command()
    @common_options          # json_output, quiet, device, seed
    @train_options           # cell, hidden, ..., val_frac (all None unless given)
    def charlm(..., json_output, quiet, device, seed, cell, hidden, ...):
        out = Reporter(quiet=quiet, json_output=json_output)

Human messages and progress go to stderr (progress only on a terminal); data and ``--json``
records go to stdout. rich is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from typing import Any, Callable, Iterator

import click

from seqtool.device import DEVICES

__all__ = [
    "common_options", "train_options", "DURATION", "make_console", "progress", "emit_json",
    "Reporter", "task_options", "feature_options", "print_records", "print_report",
]

CELLS = ("lstm", "gru", "rnn")
OPTIMIZERS = ("sgd", "adam", "adagrad", "adadelta", "rmsprop")
SCHEDULES = ("plateau", "cosine")  # seqtool.training.schedule's, without importing it at start-up


def _stack(*decorators: Callable) -> Callable:
    """Apply decorators so that --help lists the options in the order written."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


class Duration(click.ParamType):
    """Seconds, optionally with a unit: ``90``, ``90s``, ``2.5m``, ``1h``."""

    name = "seconds"
    _units = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([smh]?)\s*", str(value))
            if not m:
                self.fail(f"{value!r} is not a duration (e.g. 90, 90s, 5m, 1h)", param, ctx)
            seconds = float(m.group(1)) * self._units[m.group(2)]
        if not (seconds > 0 and math.isfinite(seconds)):
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


DURATION = Duration()


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (nan passes every comparison a range makes)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return value


_POSITIVE_INT = click.IntRange(min=1)
_POSITIVE_FLOAT = FiniteRange(min=0, min_open=True)


common_options = _stack(
    click.option("--json", "json_output", is_flag=True,
                 help="Print results as JSON Lines on stdout."),
    click.option("--quiet", "-q", is_flag=True, help="No progress or messages on stderr."),
    click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
                 help="Where the kernels run."),
    click.option("--seed", type=click.IntRange(min=0), default=None,
                 help="Random seed, for runs that repeat exactly."),
)

# Every default is None so each task fills in its own (a charlm wants other sizes than sed).
train_options = _stack(
    click.option("--cell", type=click.Choice(CELLS), default=None, help="Recurrent cell."),
    click.option("--hidden", type=_POSITIVE_INT, default=None, help="Hidden units per layer."),
    click.option("--layers", type=_POSITIVE_INT, default=None, help="Stacked recurrent layers."),
    click.option("--bidirectional/--no-bidirectional", default=None,
                 help="Also run each layer backwards in time."),
    click.option("--dropout", type=FiniteRange(0, 1, max_open=True), default=None,
                 help="Dropout between layers, in [0, 1)."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Optimizer."),
    click.option("--lr", type=_POSITIVE_FLOAT, default=None, help="Learning rate."),
    click.option("--clip-norm", type=FiniteRange(min=0), default=None,
                 help="Clip the gradient norm to this (0: no clipping)."),
    click.option("--lr-schedule", type=click.Choice(SCHEDULES), default=None,
                 help="plateau: halve the lr when validation stops improving; cosine: anneal it "
                      "to the end of the run (--steps, --epochs or --time-budget)."),
    click.option("--warmup", type=click.IntRange(min=0), default=None, metavar="STEPS",
                 help="Raise the lr linearly over the first STEPS steps."),
    click.option("--batch", type=_POSITIVE_INT, default=None, help="Sequences per batch."),
    click.option("--seq-len", type=_POSITIVE_INT, default=None,
                 help="Time steps per training sequence."),
    click.option("--epochs", type=_POSITIVE_INT, default=None, help="Stop after this many epochs."),
    click.option("--steps", type=_POSITIVE_INT, default=None,
                 help="Stop after this many optimizer steps."),
    click.option("--time-budget", type=DURATION, default=None, metavar="SECONDS",
                 help="Stop after this much training time (90, 90s, 5m, 1h)."),
    click.option("--patience", type=_POSITIVE_INT, default=None,
                 help="Stop after this many validations without improvement."),
    click.option("--checkpoint-every", type=_POSITIVE_INT, default=None, metavar="STEPS",
                 help="Write a checkpoint every this many steps."),
    click.option("--resume", type=click.Path(exists=True, dir_okay=False), default=None,
                 metavar="CHECKPOINT", help="Continue training from this checkpoint."),
    click.option("--val-frac", type=FiniteRange(0, 1, max_open=True), default=None,
                 help="Fraction of the data held out for validation, in [0, 1)."),
    click.option("--force", is_flag=True, default=None,
                 help="Replace an existing MODEL file even if it is not a seqtool model."),
)

def feature_options(prefix: str = "") -> Callable:
    """The log-mel feature options of the audio tasks (sed; genre on recordings), each help text
    starting with ``prefix``."""
    return _stack(
        click.option("--sr", type=click.IntRange(min=1000), default=None,
                     help=f"{prefix}{'s' if prefix else 'S'}ample rate the audio is resampled to [default: 16000]."),
        click.option("--win-ms", type=FiniteRange(min=0, min_open=True), default=None,
                     help=f"{prefix}STFT window, ms [default: 40]."),
        click.option("--hop-ms", type=FiniteRange(min=0, min_open=True), default=None,
                     help=f"{prefix}{'f' if prefix else 'F'}rame hop, ms [default: 20]."),
        click.option("--n-mels", type=click.IntRange(min=1), default=None,
                     help=f"{prefix}{'m' if prefix else 'M'}el bands [default: 64]."),
        click.option("--fmin", type=FiniteRange(min=0), default=None,
                     help=f"{prefix}{'l' if prefix else 'L'}owest mel frequency, Hz [default: 0]."),
        click.option("--fmax", type=FiniteRange(min=0, min_open=True), default=None,
                     help=f"{prefix}{'h' if prefix else 'H'}ighest mel frequency, Hz [default: sr/2]."),
    )


# Options of `seqtool predict` and `seqtool eval` that belong to one task or another. They all
# default to None/False; only those given reach the task (seqtool.tasks.TaskOptions), which
# rejects what it does not use with a usage error.
task_options = _stack(
    click.option("--beam", type=_POSITIVE_INT, default=None,
                 help="seq2seq: beam width (1: greedy) [default: 1]."),
    click.option("--length-penalty", type=FiniteRange(min=0), default=None,
                 help="seq2seq: beam scores divided by length**ALPHA [default: 1.0]."),
    click.option("--max-len", type=_POSITIVE_INT, default=None,
                 help="seq2seq: longest output, in tokens."),
    click.option("--show-attention", is_flag=True, default=False,
                 help="seq2seq: draw each sentence's attention map on stderr."),
    click.option("--attention-png", type=click.Path(file_okay=False), default=None, metavar="DIR",
                 help="seq2seq: write one attention-map PNG per sentence into DIR."),
    click.option("--threshold", multiple=True, metavar="[LABEL=]P",
                 help="sed: activity threshold, for all classes or LABEL=P for one (repeatable)."),
    click.option("--median-ms", type=FiniteRange(min=0), default=None,
                 help="sed: median filter length over frame decisions, in milliseconds."),
    click.option("--roll", is_flag=True, default=False,
                 help="sed: draw a per-class activity piano-roll on stderr."),
    click.option("--png", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                 help="sed: save the activity piano-roll as a PNG."),
)



# ----------------------------------------------------------------------------- output helpers


def make_console(quiet: bool = False):
    """A rich Console on stderr (stdout stays for data); ``quiet`` silences it."""
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


def _jsonable(obj: Any) -> Any:
    # numpy scalars/arrays and non-finite floats: JSON Lines readers (jq) reject NaN and Infinity.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalar or array
        return _jsonable(obj.tolist())
    return obj


def emit_json(obj: Any) -> None:
    """Write one JSON line to stdout and flush, so a reader downstream sees it at once."""
    click.echo(json.dumps(_jsonable(obj), ensure_ascii=False, allow_nan=False))
    sys.stdout.flush()


class _NoProgress:
    def advance(self, n: float = 1, **fields) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class _Progress:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1, **fields) -> None:
        self._progress.update(self._task, advance=n, **fields)

    def update(self, **fields) -> None:
        """Set ``completed``, ``total``, ``description`` or custom fields shown by the columns."""
        self._progress.update(self._task, **fields)


@contextlib.contextmanager
def progress(description: str = "", total: float | None = None, *, quiet: bool = False,
             console=None, transient: bool = False) -> Iterator[_NoProgress | _Progress]:
    """A progress bar on stderr, shown only on a terminal and not when quiet.

    Yields an object with ``advance(n=1, **fields)`` and ``update(**fields)``; when no bar is
    shown it does nothing, so callers need no branches.
    """
    console = console or make_console(quiet)
    if quiet or not console.is_terminal:
        yield _NoProgress()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    # redirect_stdout=False: otherwise rich captures stdout on a terminal and mangles the data.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  redirect_stdout=False, redirect_stderr=False, transient=transient) as bar:
        yield _Progress(bar, bar.add_task(description, total=total))


class Reporter:
    """Where a command's output goes: messages to stderr, records to stdout as JSON or text."""

    def __init__(self, quiet: bool = False, json_output: bool = False):
        self.quiet = quiet
        self.json_output = json_output
        self._console = None

    @property
    def console(self):
        if self._console is None:
            self._console = make_console(self.quiet)
        return self._console

    def info(self, msg: str) -> None:
        """A human message on stderr unless quiet; no rich markup, so [brackets] in names are safe."""
        if not self.quiet:
            self.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def warn(self, msg: str) -> None:
        """A warning on stderr, shown even when quiet."""
        click.echo(f"seqtool: warning: {msg}", err=True)

    def emit(self, obj: Any) -> None:
        """One JSON line on stdout (only with --json; text output is the command's own)."""
        if self.json_output:
            emit_json(obj)

    def progress(self, description: str = "", total: float | None = None, **kw):
        return progress(description, total, quiet=self.quiet, console=self.console, **kw)


def print_records(records, out: Reporter) -> None:
    """Each record as soon as it comes: its text line, or its JSON line with --json."""
    for record in records:
        if out.json_output:
            out.emit(record.data)
        else:
            click.echo(record.text)
            sys.stdout.flush()


def print_report(report, out: Reporter) -> None:
    """A task's report: its text, or one JSON object with --json."""
    if out.json_output:
        out.emit(report.data)
    else:
        click.echo(report.text)
