"""``seqtool eval MODEL DATA...``: score a model on labelled data (the task computes the report)."""

from __future__ import annotations

import click

from seqtool.cli.options import Reporter, common_options, print_report, task_options


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", nargs=-1, required=True)
@click.option("--multi-ref", is_flag=True, default=False,
              help="seq2seq: translate each distinct source once and score it against all of "
                   "its targets (sacrebleu with several references).")
@task_options
@common_options
def evaluate(model, data, json_output, quiet, device, seed, **options):
    """Score a model on labelled data.

    \b
    charlm:  DATA is one text file or '-'; loss in nats and bits per token.
    genre:   DATA is a class folder, a JSONL or a list of paths; accuracy, per-class
             precision/recall/F1 and the confusion matrix.
    seq2seq: DATA is a source<TAB>target file; BLEU (sacrebleu), exact match, by length.
    sed:     DATA is AUDIO_DIR REFERENCE.tsv (or AUDIO... REFERENCE.tsv); segment-based
             (1 s) and event-based (200 ms collars) F1 and error rate. Without a model,
             `seqtool eval PREDICTED.tsv REFERENCE.tsv` scores an event list ('-': stdin).
    """
    from seqtool import tasks
    from seqtool.device import use
    from seqtool.training.interrupt import exit_on_interrupt

    out = Reporter(quiet=quiet, json_output=json_output)
    use(device)  # one-line error without a GPU
    with exit_on_interrupt():
        print_report(tasks.evaluate(model, data, device, out, **options), out)
