"""``seqtool predict MODEL [INPUT...|-]``: run a model on new inputs.

The model file's task does the work (seqtool.tasks); this prints each record as soon as it is
computed (text/TSV, or JSON Lines with --json), so ``seqtool predict m - | head`` works on
endless input.
"""

from __future__ import annotations

import click

from seqtool.cli.options import Reporter, common_options, print_records, task_options


@click.command("predict")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1)
@click.option("--strict", is_flag=True, default=False,
              help="Stop at the first input that cannot be read (default: report it on stderr, "
                   "go on with the others, exit 1 at the end).")
@click.option("--force", is_flag=True, default=False,
              help="sed: replace an existing --png file even if it is not a PNG.")
@task_options
@common_options
def predict(model, inputs, json_output, quiet, device, seed, **options):
    """Run a model on new inputs (INPUT files default to '-', stdin).

    \b
    charlm:  the loss in nats per token of each input line, one number per line.
    genre:   per file (or folder of files, or JSONL of scores): path, label, P(class)...
    seq2seq: one translation per input line (--beam, --max-len, --length-penalty).
    sed:     TSV events per recording: filename, onset, offset, event_label
             (--threshold, --median-ms, --roll, --png).
    """
    from seqtool import tasks
    from seqtool.device import use
    from seqtool.training.interrupt import exit_on_interrupt

    out = Reporter(quiet=quiet, json_output=json_output)
    use(device)  # one-line error without a GPU
    with exit_on_interrupt():
        print_records(tasks.predict(model, inputs, device, out, **options), out)
