"""``seqtool predict MODEL [INPUT...|-]``: run a model on new inputs.

The model file's task picks the handler from PREDICTORS (task -> function, or "module:attr"
imported on use); a task without one is a one-line error. A handler gets the model path, the
INPUT arguments, the Reporter and the task options given (TaskOptions; it rejects the ones it
does not use). Handlers stream: each result is printed (and flushed) as soon as
it is computed, so ``seqtool predict m - | head`` works on endless input.
"""

from __future__ import annotations

import math
import sys
from typing import Callable

import click

from seqtool.cli.options import Reporter, common_options, given_options, task_handler, task_options
from seqtool.errors import SeqtoolError


def _predict_charlm(model_path: str, inputs: tuple[str, ...], out: Reporter, opts) -> None:
    """One loss (nats per token, teacher-forced within the line) per input line. A line is
    scored with its newline, so a 1-character line still has one prediction; a line with
    nothing to predict prints nan (null with --json)."""
    from seqtool.fileio import display_name, open_input
    from seqtool.sampling import load_charlm, text_loss, to_device

    opts.only("charlm")
    lm = to_device(load_charlm(model_path), opts.device)
    for path in inputs or ("-",):
        name = display_name(path)
        with open_input(path) as f:
            lineno = 0
            while True:
                try:
                    line = f.readline()
                except UnicodeDecodeError as e:
                    raise SeqtoolError(f"{name} line {lineno + 1} is not valid UTF-8 "
                                       f"({e.reason})") from None
                if not line:
                    break
                lineno += 1
                loss, n = text_loss(lm, line, f"{name} line {lineno}")
                if out.json_output:
                    out.emit({"input": name, "line": lineno, "loss": loss,
                              "bpc": loss / math.log(2), "tokens": n})
                else:
                    click.echo("nan" if n == 0 else f"{loss:.6f}")
                    sys.stdout.flush()


# task -> handler(model_path, inputs, reporter, options) or "module:attribute".
PREDICTORS: dict[str, Callable | str] = {
    "charlm": _predict_charlm,
    "seq2seq": "seqtool.cli.task_seq2seq:predict",
    "sed": "seqtool.cli.task_sed:predict",
    "genre": "seqtool.cli.task_genre:predict",
}


@click.command("predict")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1)
@task_options
@common_options
def predict(model, inputs, beam, length_penalty, max_len, show_attention, attention_png, threshold,
            median_ms, roll, png, json_output, quiet, device, seed):
    """Run a model on new inputs.

    INPUT files default to '-' (stdin).

    charlm: the loss in nats per character of each input line, one number per line.
    """
    out = Reporter(quiet=quiet, json_output=json_output)
    from seqtool.device import use

    use(device)  # one-line error without a GPU
    opts = given_options(beam=beam, length_penalty=length_penalty, max_len=max_len,
                         show_attention=show_attention, attention_png=attention_png,
                         threshold=threshold, median_ms=median_ms, roll=roll, png=png)
    opts.device = device
    task_handler(PREDICTORS, "predict", model)(model, tuple(inputs), out, opts)
