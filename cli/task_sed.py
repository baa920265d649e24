"""``seqtool train sed``: the options of a sound event detector. seqtool.tasks.sed does the work
(and serves predict and eval of sed models, and ``seqtool eval PREDICTED.tsv REFERENCE.tsv``).
"""

from __future__ import annotations

import re

import click

from seqtool.cli.options import FiniteRange, common_options, feature_options, train_options
from seqtool.cli.synth import EBR
from seqtool.cli.train import run_train


class Span(click.ParamType):
    """A whole number, or LOW:HIGH to draw one per scene (both at least 1)."""

    name = "n"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, int)):
            return value
        m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", str(value))
        if not m:
            self.fail(f"{value!r} is not a whole number or LOW:HIGH (e.g. 2, 1:5)", param, ctx)
        low, high = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= low <= high:
            self.fail(f"{value!r}: need 1 <= LOW <= HIGH", param, ctx)
        return (low, high)


def scene_options(f):
    """The options of training on scenes mixed from clips (all None unless given)."""
    for option in reversed([
        click.option("--clips", type=click.Path(file_okay=False), default=None, metavar="DIR",
                     help="Isolated event clips (as synth-scenes reads them): every epoch trains on new "
                          "scenes mixed from them."),
        click.option("--timeline", "timeline", multiple=True, type=click.Path(dir_okay=False), metavar="TSV",
                     help="--clips: a timeline to render every epoch with other clips (onset offset "
                          "label, or DCASE 4-column); repeatable."),
        click.option("--background", "background", multiple=True, metavar="FILE|white|pink|brown",
                     help="--clips: a background each scene may get (repeatable) [default: pink, brown, white]."),
        click.option("--ebr", type=EBR(), default=None, metavar="DB|LOW:HIGH",
                     help="--clips: event-to-background ratio, drawn per event [default: -6:6]."),
        click.option("--events-per-class", type=Span(), default=None, metavar="N|LOW:HIGH",
                     help="--clips: events of every class in a random timeline [default: 1:5]."),
        click.option("--polyphony", type=Span(), default=None, metavar="N|LOW:HIGH",
                     help="--clips: most events at once in a random timeline [default: 1:3]."),
        click.option("--scene-seconds", type=FiniteRange(min=0, min_open=True), default=None,
                     help="--clips: length of a scene [default: 120]."),
        click.option("--scenes", type=click.IntRange(min=0), default=None,
                     help="--clips: scenes on random timelines per epoch, besides one per --timeline "
                          "[default: as many as timelines, else 16]."),
    ]):
        f = option(f)
    return f


@click.command("sed")
@click.argument("audio_dir", type=click.Path(file_okay=False), required=False)
@click.argument("annotations", type=click.Path(dir_okay=False, allow_dash=True), required=False)
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
@scene_options
@train_options
@common_options
def train_sed(audio_dir, annotations, output, timeline, background, **options):
    """Train a sound event detector on the recordings in AUDIO_DIR, on scenes mixed from
    --clips, or on both.

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

    --clips DIR (a folder of clips named by class, or a dataset root with clips/ and clips.tsv):
    every epoch mixes new scenes, each --timeline once and --scenes random ones, with new clips,
    EBRs and backgrounds, and trains on them together with any recordings given. Validation is
    on the recordings' --val-frac, or without recordings on a fixed set of scenes (val-frac of
    an epoch's). The scene options are stored in MODEL: --resume needs none of them again.
    """
    if (audio_dir is None) != (annotations is None):
        raise click.UsageError("give both AUDIO_DIR and ANNOTATIONS, or neither (with --clips)")
    data = () if audio_dir is None else (audio_dir, annotations)
    run_train("sed", data, output, timelines=timeline, backgrounds=background, **options)
