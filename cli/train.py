"""``seqtool train TASK ...``: one subcommand per task, each a thin wrapper over seqtool.train.

charlm lives here; the other tasks' subcommands live in ``seqtool.cli.task_<name>`` (with that
task's predict and eval handlers) and are listed in TRAIN_COMMANDS, imported only when used.
A subcommand uses ``@train_options``/``@common_options``, builds the task object inside the
callback (heavy imports there, so ``--help`` stays instant) and hands it to ``run_training``.
"""

from __future__ import annotations

import os

import click

from seqtool.cli.main import LazyGroup
from seqtool.cli.options import Reporter, common_options, train_options

# Training options that are not architecture: used from the checkpoint when resuming.
_STOP_KEYS = ("epochs", "steps", "time_budget", "patience", "checkpoint_every")


def check_output(path: str) -> None:
    """Fail before any training when the model could not be written at the end."""
    from seqtool.errors import SeqtoolError

    directory = os.path.dirname(os.path.abspath(path))
    shown = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise SeqtoolError(f"cannot write {path}: directory {shown} does not exist")
    if os.path.isdir(path):
        raise SeqtoolError(f"cannot write {path}: it is a directory")
    if not os.access(directory, os.W_OK):
        raise SeqtoolError(f"cannot write {path}: permission denied")


def run_training(task, output: str, settings, rng, out: Reporter, resume, device: str = "cpu") -> None:
    """Train `task` on `device` (its model moves there; the file written is device-neutral)."""
    from seqtool.distributed import current_world
    from seqtool.interrupt import deferred_interrupts
    from seqtool.train import Trainer, TrainingInterrupted

    notice = "finishing the current step; Ctrl-C again to abort" if current_world().is_root else None
    try:
        with deferred_interrupts(first_notice=notice):  # a Ctrl-C from here on still saves a model
            trainer = Trainer(task, output, settings, rng=rng, reporter=out, resume=resume, device=device)
            n = sum(p.size for p in trainer.params)
            out.info(f"training {task.name}: {n:,} parameters -> {output}")
            trainer.run()
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
    rank failing later stops all with a line naming it (see seqtool.distributed)."""

    def invoke(self, ctx):
        from seqtool.distributed import launched_by_mpi

        if not launched_by_mpi():
            return super().invoke(ctx)
        from seqtool.distributed import PeerFailure, StartupFailure, silent_unless, start_world

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
def charlm(text, output, unit, embed, cell, hidden, layers, bidirectional, dropout, optimizer, lr,
           clip_norm, batch, seq_len, epochs, steps, time_budget, patience, checkpoint_every, resume,
           val_frac, json_output, quiet, device, seed):
    """Train a character language model on TEXT files ('-' for stdin).

    The last --val-frac of the (concatenated) text is held out for validation. Without a stopping
    rule it trains for 10 epochs. Checkpoints go to MODEL; --resume MODEL continues exactly.

    Defaults: 2 x LSTM 128, embedding 64, no dropout, Adam 2e-3, batch 32 x 64 steps. With a
    --time-budget of 20 minutes or more the network defaults to 2 x LSTM 256 with dropout 0.25
    (a long run gives the small one more passes than it can use); options given always win.
    """
    import numpy as np

    from seqtool import modelfile
    from seqtool.data.text import load_corpus
    from seqtool.errors import UsageError
    from seqtool.tasks.charlm import CharLMTask, build_charlm, config_of, defaults_for
    from seqtool.train import TrainSettings

    out = Reporter(quiet=quiet, json_output=json_output)
    from seqtool.device import require

    require(device)  # before reading any data: one-line error without a GPU
    if bidirectional:
        raise UsageError("a language model cannot be bidirectional (it would see the future)")
    check_output(output)

    given = {"cell": cell, "hidden": hidden, "layers": layers, "embed": embed, "dropout": dropout,
             "unit": unit}
    training = {"optimizer": optimizer, "lr": lr, "clip_norm": clip_norm}
    data_opts = {"batch": batch, "seq_len": seq_len, "val_frac": val_frac}
    tokens = None
    if resume:
        meta = modelfile.read_meta(resume, expect_task="charlm")
        config, saved = meta.get("config") or {}, meta.get("training") or {}
        for k, v in given.items():
            if v is not None and config.get(k) != v:
                raise UsageError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {config.get(k)}")
        given = {k: config.get(k) for k in given}
        tokens = (meta.get("vocab") or {}).get("tokens")
        training = {k: saved.get(k) if v is None else v for k, v in training.items()}
        data_opts = {k: (meta.get("data_options") or {}).get(k) if v is None else v
                     for k, v in data_opts.items()}
    DEFAULTS = defaults_for(time_budget)
    cfg = {k: DEFAULTS.get(k, "char") if v is None else v for k, v in given.items()}
    training = {k: DEFAULTS[k] if v is None else v for k, v in training.items()}
    data_opts = {k: DEFAULTS[k] if v is None else v for k, v in data_opts.items()}
    if epochs is None and steps is None and time_budget is None:
        epochs = 10

    corpus = load_corpus(text, cfg["unit"], data_opts["val_frac"], tokens=tokens)
    rng = np.random.default_rng(seed)
    model = build_charlm({**cfg, "reset_after": True, "nonlinearity": "tanh"}, len(corpus.tokens), rng)
    task = CharLMTask(model, corpus, data_opts["batch"], data_opts["seq_len"],
                      sample_chars=0 if quiet or json_output else 120)
    if task.batch != data_opts["batch"]:
        out.warn(f"text is short: using --batch {task.batch} instead of {data_opts['batch']}")
    base_meta = task.meta

    def meta():  # remember data options so --resume needs no repeated flags
        return {**base_meta(), "data_options": {**data_opts, "batch": task.batch}}

    task.meta = meta
    # About 3 validations per epoch (a full pass over the validation text costs a few seconds
    # on 1 MB), at least 25 steps apart, at most 500.
    val_every = int(min(500, max(25, task.chunks // 3)))
    settings = TrainSettings(optimizer=training["optimizer"], lr=training["lr"],
                             clip_norm=training["clip_norm"], epochs=epochs, steps=steps,
                             time_budget=time_budget, val_every=val_every, patience=patience,
                             checkpoint_every=checkpoint_every)
    out.info(f"{len(corpus.train):,} training and {len(corpus.val):,} validation tokens, "
             f"vocabulary {len(corpus.tokens)}; {config_of(model, cfg['unit'])}")
    run_training(task, output, settings, rng, out, resume, device)
