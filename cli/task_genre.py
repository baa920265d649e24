"""``seqtool train genre``: the options of a sequence classifier; seqtool.tasks.genre does the work.

Predict and eval of genre models go through the generic ``seqtool predict`` / ``seqtool eval``
(seqtool.tasks.genre.Predictor).
"""

from __future__ import annotations

import click

from seqtool.cli.options import common_options, feature_options, train_options
from seqtool.cli.train import run_train


@click.command("genre")
@click.argument("data", type=click.Path(allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@click.option("--voices", type=click.Choice(["melody", "all"]), default=None,
              help="Scores: the top voice of the first part only (melody), or every note [default: melody].")
@click.option("--pool", type=click.Choice(["last", "mean", "attention"]), default=None,
              help="How the per-step outputs become one vector: final states, masked mean, or "
                   "additive attention over time [default: attention].")
@click.option("--proj", type=click.IntRange(min=0), default=None, metavar="SIZE",
              help="Linear+tanh projection of the input features before the RNN (0: none) [default: 0].")
@click.option("--transpose", type=click.IntRange(min=0, max=24), default=None, metavar="SEMITONES",
              help="Scores: shift each training crop by a random number of semitones in "
                   "[-SEMITONES, SEMITONES] (augmentation) [default: 5 for scores].")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Leave out files whose name or path matches GLOB (repeatable), e.g. for a held-out set.")
@click.option("--label-regex", default=None, metavar="REGEX",
              help="Class of a listed file = group 1 (or the match) of REGEX searched in its file name, "
                   "e.g. '^(\\d+)_' for 7_jackson_3.wav [default: the parent folder's name].")
@click.option("--strict", is_flag=True, help="Stop at the first file that cannot be read (default: list and skip it).")
@feature_options("Audio: ")
@train_options
@common_options
def train_genre(data, output, **options):
    """Train a sequence classifier (genre of a score, class of a recording) on DATA.

    DATA: a folder with one subfolder per class holding MIDI (.mid) or audio (.wav .flac .ogg)
    files; a JSONL of note lists ({"id", "label", "notes": [[onset, duration, pitch, part], ...]});
    or a list of paths, one per line ('-': stdin), each optionally followed by TAB and the label
    (else the parent folder's name, or --label-regex). Files that cannot be read are listed and
    skipped (--strict: error).

    Scores become one row per note (pitch, interval, duration and inter-onset time relative to
    the piece's median, rest, voice); audio becomes log-mel frames. Features are standardised
    with training statistics stored in MODEL. Default model: 2 bidirectional LSTM layers
    (scores: 64 units, dropout 0.5; audio: 128, dropout 0.2), attention pooling, softmax over the
    classes; each epoch trains on a random crop of --seq-len steps (scores: 32 notes, transposed
    by up to +-5 semitones; audio: 200 frames) of every piece. A stratified --val-frac of the
    pieces (default 0.1) is held out; validation averages the class probabilities over chunks
    covering each whole piece and reports loss and accuracy. Without
    a stopping rule it trains for 30 epochs; with --patience the best validation weights are kept.
    """
    run_train("genre", data, output, **options)
