"""``seqtool train sed``: the options of a sound event detector. seqtool.tasks.sed does the work
(and serves predict and eval of sed models, and ``seqtool eval PREDICTED.tsv REFERENCE.tsv``).
"""

from __future__ import annotations

import click

from seqtool.cli.options import common_options, feature_options, train_options
from seqtool.cli.train import run_train


@click.command("sed")
@click.argument("audio_dir", type=click.Path(file_okay=False))
@click.argument("annotations", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=False),
              metavar="MODEL", help="Model file to write (also the checkpoint).")
@feature_options()
@click.option("--tune-decoding/--no-tune-decoding", default=True, show_default=True,
              help="Pick the threshold and median filter with the lowest mean of the segment- and "
                   "event-based error rates on the validation recordings as the model's defaults "
                   "for predict and eval.")
@click.option("--augment/--no-augment", default=None,
              help="Vary each training window's level (+-6 dB) and blank a random band of up to 8 mel "
                   "bands [default: on].")
@train_options
@common_options
def train_sed(audio_dir, annotations, output, **options):
    """Train a sound event detector on the recordings in AUDIO_DIR.

    ANNOTATIONS is a DCASE event list (filename onset offset event_label, tab separated, header
    line optional; '-' for stdin); every file it names must be in AUDIO_DIR (paths relative
    to it), and recordings it does not name are not used. Features are
    log-mel energies (--sr --win-ms --hop-ms --n-mels --fmin --fmax), standardised with the
    training statistics, all stored in MODEL. Default model: 4 stacked bidirectional LSTM
    layers of 64 units and a sigmoid per class, trained on windows of --seq-len frames with
    frame-wise binary cross-entropy. A random --val-frac of the recordings (default 0.1) is
    held out; each validation prints the loss and the segment-based F1 and error rate, and
    (--tune-decoding) picks the threshold and median filter that predict and eval use by
    default. Without a stopping rule it trains for 30 epochs.
    """
    run_train("sed", (audio_dir, annotations), output, **options)
