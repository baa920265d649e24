"""``seqtool train seq2seq``: the options; seqtool.tasks.seq2seq does the work (and predicts and
evaluates seq2seq models for ``seqtool predict`` / ``seqtool eval``)."""

from __future__ import annotations

import click

from seqtool.cli.options import FiniteRange, common_options, train_options
from seqtool.cli.train import run_train


@click.command("seq2seq")
@click.argument("pairs", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@click.option("--attention", type=click.Choice(["none", "dot", "general", "additive"]), default=None,
              help="Decoder attention: none (fixed vector), dot / general (Luong), additive "
                   "(Bahdanau) [default: general].")
@click.option("--input-feeding/--no-input-feeding", default=None,
              help="With attention: feed the previous attentional vector into the decoder "
                   "(Luong's input feeding), one decoder step at a time; without it the decoder "
                   "and the attention run over the whole target at once (faster) "
                   "[default: off].")
@click.option("--unit", type=click.Choice(["word", "char"]), default=None,
              help="Token unit on both sides [default: word].")
@click.option("--embed", type=click.IntRange(min=1), default=None, help="Embedding size [default: 128].")
@click.option("--teacher-forcing", type=FiniteRange(0, 1), default=None, metavar="RATIO",
              help="Probability of feeding the gold previous token instead of the model's own "
                   "prediction [default: 1.0].")
@click.option("--min-count", type=click.IntRange(min=1), default=None,
              help="Rarer tokens become <unk> [default: 1].")
@click.option("--reverse", is_flag=True, default=False,
              help="Swap the columns: the file is target<TAB>source.")
@click.option("--strict", is_flag=True, default=False,
              help="Fail on a bad line (no tab, empty side) instead of skipping it.")
@train_options
@common_options
def train_seq2seq(pairs, output, **options):
    """Train an encoder-decoder on PAIRS ('-' for stdin): one source<TAB>target pair per line.

    A random --val-frac of the pairs (the same ones on every run) is held out; each validation
    reports the loss and the greedy exact match (and BLEU) on up to 500 of them. Without a
    stopping rule it trains for 10 epochs. --resume MODEL continues exactly.
    """
    run_train("seq2seq", pairs, output, **options)
