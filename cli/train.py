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
    _run_saving_on_interrupt(job)


def _run_saving_on_interrupt(job) -> None:
    """Run a training job; a first Ctrl-C finishes the step and saves (exit 130), a second aborts."""
    from seqtool.training.distributed import current_world
    from seqtool.training.interrupt import deferred_interrupts
    from seqtool.training.trainer import TrainingInterrupted

    notice = "finishing the current step; Ctrl-C again to abort" if current_world().is_root else None
    try:
        # A Ctrl-C from here on still saves a model; one after the save only hurries the exit.
        with deferred_interrupts(first_notice=notice, ending_notice="interrupted again: exiting"):
            job.run()
    except TrainingInterrupted as e:
        if current_world().is_root:
            click.echo(f"\nseqtool: {e}", err=True)
        raise click.exceptions.Exit(130) from None


# name -> (module, attribute, short help), as in seqtool.cli.main.COMMANDS.
TRAIN_COMMANDS: dict[str, tuple[str, str, str]] = {
    "seq2seq": ("seqtool.cli.task_seq2seq", "train_seq2seq",
                "Train an encoder-decoder (with attention) on source<TAB>target pairs."),
    "sed": ("seqtool.cli.task_sed", "train_sed",
            "Train a sound event detector on audio and DCASE annotations."),
    "genre": ("seqtool.cli.task_genre", "train_genre",
              "Train a sequence classifier on scores (MIDI/JSONL) or audio."),
}


class _TrainGroup(LazyGroup):
    """Under mpiexec each rank runs the command: set-up errors are reported once by rank 0, a
    rank failing later stops all with a line naming it (see seqtool.training.distributed)."""

    def invoke(self, ctx):
        from seqtool.training.distributed import launched_by_mpi

        if not launched_by_mpi():
            return super().invoke(ctx)
        from seqtool.training.distributed import PeerFailure, StartupFailure, silent_unless, start_world

        world = start_world()
        with silent_unless(world.is_root):
            try:  # click's own invoke: LazyGroup's would turn errors into exits before we see them
                return click.Group.invoke(self, ctx)
            except click.exceptions.Exit:
                raise
            except StartupFailure as e:
                failure = e
            except BaseException as e:  # noqa: BLE001 - every failure must reach the other ranks
                failure = world.after_failure(*_describe(e), name_self=not isinstance(e, PeerFailure))
        if world.is_root:
            click.echo(f"seqtool: error: {failure}", err=True)
        raise click.exceptions.Exit(failure.code)


def _describe(e: BaseException) -> tuple[str, int]:
    """(one-line message, exit status) as seqtool.cli.main would report `e`."""
    from seqtool.errors import SeqtoolError, UsageError

    if isinstance(e, UsageError):
        return str(e), 2
    if isinstance(e, click.ClickException):
        return e.format_message(), e.exit_code
    if isinstance(e, (KeyboardInterrupt, click.Abort)):
        return "interrupted", 130
    text = str(e) if isinstance(e, SeqtoolError) else f"{type(e).__name__}: {e}"
    return " ".join(text.split()), 1


@click.group("train", cls=_TrainGroup, lazy_commands=TRAIN_COMMANDS)
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
