"""``seqtool train TASK ...``: one subcommand per task; each parses its options and hands them to
seqtool.tasks, which owns the defaults, --resume merging, data and model (``run_train``).

charlm's subcommand lives here; the other tasks' live in ``seqtool.cli.task_<name>`` and are
listed in TRAIN_COMMANDS, imported only when used.
"""

from __future__ import annotations

import click

from seqtool.cli.main import LazyGroup
from seqtool.cli.options import Reporter, common_options, train_options


def run_train(task: str, data, output: str, *, json_output: bool, quiet: bool, device: str,
              seed, resume, **options) -> None:
    """Train task ``task`` with the options a subcommand parsed (None where not given)."""
    from seqtool import tasks
    from seqtool.device import require

    out = Reporter(quiet=quiet, json_output=json_output)
    require(device)  # before reading any data: one-line error without a GPU
    job = tasks.prepare(task, data, output, resume=resume, seed=seed, device=device, reporter=out,
                        **options)
    job.run()


# name -> (module, attribute, short help), as in seqtool.cli.main.COMMANDS.
TRAIN_COMMANDS: dict[str, tuple[str, str, str]] = {
    "seq2seq": ("seqtool.cli.task_seq2seq", "train_seq2seq",
                "Train an encoder-decoder (with attention) on source<TAB>target pairs."),
    "sed": ("seqtool.cli.task_sed", "train_sed",
            "Train a sound event detector on audio and DCASE annotations."),
    "genre": ("seqtool.cli.task_genre", "train_genre",
              "Train a sequence classifier on scores (MIDI/JSONL) or audio."),
}


@click.group("train", cls=LazyGroup, lazy_commands=TRAIN_COMMANDS)
def train():
    """Train a model (one subcommand per task)."""


@train.command("charlm")
@click.argument("text", nargs=-1, required=True, type=click.Path(allow_dash=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@click.option("--unit", type=click.Choice(["char", "byte", "word"]), default=None,
              help="Token unit [default: char].")
@click.option("--embed", type=click.IntRange(min=1), default=None,
              help="Embedding size [default: 64].")
@train_options
@common_options
def charlm(text, output, **options):
    """Train a character language model on TEXT files ('-' for stdin).

    The last --val-frac of the (concatenated) text is held out for validation. Without a stopping
    rule it trains for 10 epochs. Checkpoints go to MODEL; --resume MODEL continues exactly.

    Defaults: 2 x LSTM 128, embedding 64, no dropout, Adam 2e-3, batch 32 x 64 steps. With a
    --time-budget of 20 minutes or more the network defaults to 2 x LSTM 256 with dropout 0.25
    (a long run gives the small one more passes than it can use); options given always win.
    """
    run_train("charlm", text, output, **options)
