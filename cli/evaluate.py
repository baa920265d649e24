"""``seqtool eval MODEL DATA...``: score a model on labelled data.

The model file's task picks the handler from EVALUATORS (task -> function, or "module:attr"
imported on use); a task without one is a one-line error. A handler gets the loaded file's path, its DATA arguments and the
Reporter and the task options given (TaskOptions), validates the number of DATA arguments
itself, and prints its metrics.
"""

from __future__ import annotations

import math
from typing import Callable

import click

from seqtool.cli.options import Reporter, common_options, given_options, task_handler, task_options
from seqtool.errors import SeqtoolError, UsageError


def _eval_charlm(model_path: str, data: tuple[str, ...], out: Reporter, opts) -> None:
    from seqtool.fileio import display_name, read_text
    from seqtool.sampling import load_charlm, text_loss, to_device

    opts.only("charlm")
    if len(data) != 1:
        raise UsageError("charlm eval takes one TEXT file (or '-')")
    lm = to_device(load_charlm(model_path), opts.device)
    text = read_text(data[0])
    loss, n = text_loss(lm, text, display_name(data[0]))
    if n == 0:
        raise SeqtoolError(f"{display_name(data[0])} has fewer than 2 {lm.unit}s: nothing to score")
    bpc = loss / math.log(2)
    if out.json_output:
        out.emit({"task": "charlm", "loss": loss, "bpc": bpc, "perplexity": math.exp(loss),
                  "tokens": n, "unit": lm.unit})
    else:
        click.echo(f"loss {loss:.6f} nats/{lm.unit}  {bpc:.6f} bits/{lm.unit}  "
                   f"perplexity {math.exp(loss):.4f}  ({n} {lm.unit}s scored)")


# task -> handler(model_path, data, reporter, options) or "module:attribute".
EVALUATORS: dict[str, Callable | str] = {
    "charlm": _eval_charlm,
    "seq2seq": "seqtool.cli.task_seq2seq:evaluate",
    "sed": "seqtool.cli.task_sed:evaluate",
    "genre": "seqtool.cli.task_genre:evaluate",
}


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True)
@click.option("--multi-ref", is_flag=True, default=False,
              help="seq2seq: translate each distinct source once and score it against all of "
                   "its targets (sacrebleu with several references).")
@task_options
@common_options
def evaluate(model, data, multi_ref, beam, length_penalty, max_len, show_attention, attention_png,
             threshold, median_ms, roll, png, json_output, quiet, device, seed):
    """Score a model on labelled data.

    charlm: DATA is one text file or '-'; prints the loss in nats and bits per char.

    sed: DATA is AUDIO_DIR REFERENCE.tsv (or AUDIO... REFERENCE.tsv); prints segment-based
    (1 s) and event-based (200 ms collars) F1 and error rate. Without a model, `seqtool eval
    PREDICTED.tsv REFERENCE.tsv` scores an event list ('-': stdin).
    """
    out = Reporter(quiet=quiet, json_output=json_output)
    from seqtool.device import use

    use(device)  # one-line error without a GPU
    opts = given_options(beam=beam, length_penalty=length_penalty, max_len=max_len,
                         show_attention=show_attention, attention_png=attention_png,
                         threshold=threshold, median_ms=median_ms, roll=roll, png=png,
                         multi_ref=multi_ref)
    opts.device = device
    from seqtool.cli.task_sed import evaluate_tables, is_event_table

    if is_event_table(model):  # seqtool eval PRED.tsv REF.tsv: sed scores without a model
        return evaluate_tables(model, tuple(data), out, opts)
    task_handler(EVALUATORS, "eval", model)(model, tuple(data), out, opts)
