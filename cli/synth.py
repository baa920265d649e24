"""``seqtool synth-scenes``: polyphonic sound scenes from isolated event clips, with ground truth."""

from __future__ import annotations

import re

import click

from seqtool.cli.options import FiniteRange, Reporter, common_options


class EBR(click.ParamType):
    """An event-to-background ratio in dB, or LOW:HIGH to draw one per event."""

    name = "db"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, float, int)):
            return value
        m = re.fullmatch(r"\s*(-?[0-9.]+)\s*(?::\s*(-?[0-9.]+)\s*)?", str(value))
        try:
            if m and m.group(2) is not None:
                lo, hi = float(m.group(1)), float(m.group(2))
                if lo > hi:
                    self.fail(f"{value!r}: LOW is above HIGH", param, ctx)
                return (lo, hi)
            if m:
                return float(m.group(1))
        except ValueError:
            pass
        self.fail(f"{value!r} is not a number of dB or LOW:HIGH (e.g. 0, -6:6)", param, ctx)


@click.command("synth-scenes")
@click.argument("clips", type=click.Path(file_okay=False, exists=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder for the scene WAVs and ground_truth.tsv (created if missing).")
@click.option("--timeline", "timelines", multiple=True, type=click.Path(dir_okay=False), metavar="TSV",
              help="Event timeline to render (onset offset label, or DCASE 4-column); repeatable, "
                   "used in turn. Without one, timelines are random.")
@click.option("--scenes", "-n", type=click.IntRange(min=1), default=None,
              help="Scenes to write [default: one per --timeline, else 10].")
@click.option("--duration", type=FiniteRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Scene length in seconds (a timeline may make it longer).")
@click.option("--events-per-class", type=click.IntRange(min=1), default=2, show_default=True,
              help="Random timelines: events of every class in a scene.")
@click.option("--polyphony", type=click.IntRange(min=1), default=2, show_default=True,
              help="Random timelines: most events sounding at once (1: no overlap).")
@click.option("--ebr", type=EBR(), default="0", show_default=True, metavar="DB|LOW:HIGH",
              help="Event-to-background ratio in dB, or a range to draw from per event.")
@click.option("--background", default="pink", show_default=True, metavar="FILE|white|pink|brown",
              help="Background recording (a random stretch is used, looped if short) or generated noise.")
@click.option("--labels", default=None, metavar="A,B,...", help="Random timelines: only these classes.")
@click.option("--pick", type=click.Choice(["random", "closest"]), default="random", show_default=True,
              help="Clip for each event: any of its class, or the one closest in length.")
@click.option("--sr", type=click.IntRange(min=1000), default=16000, show_default=True, help="Sample rate.")
@click.option("--prefix", default="scene", show_default=True, help="Scene file names: PREFIX_000.wav, ...")
@common_options
def synth_scenes(clips, out_dir, timelines, scenes, duration, events_per_class, polyphony, ebr, background,
                 labels, pick, sr, prefix, json_output, quiet, device, seed):
    """Mix sound scenes from the isolated event clips in CLIPS.

    CLIPS is a folder of clips named by class (cough012.wav, keysDrop003.wav) or a dataset root
    with clips/ and clips.tsv (filename, label). Each event is scaled to --ebr dB above the
    background's level over the event. Writes DIR/PREFIX_NNN.wav and DIR/ground_truth.tsv
    (filename onset offset event_label, with a header), ready for `seqtool train sed DIR
    DIR/ground_truth.tsv`.
    """
    from pathlib import Path

    from seqtool.errors import UsageError
    from seqtool.data.synth import NOISE_KINDS, synth_scenes_to_dir

    out = Reporter(quiet=quiet, json_output=json_output)
    if background not in NOISE_KINDS and not Path(background).is_file():
        raise UsageError(f"--background {background!r} is neither a file nor one of {', '.join(NOISE_KINDS)}")
    n = scenes if scenes is not None else (len(timelines) if timelines else 10)
    label_list = [s.strip() for s in labels.split(",") if s.strip()] if labels else None
    wavs, gt = synth_scenes_to_dir(out_dir, clips, n, duration=duration, ebr_db=ebr,
                                   events_per_class=events_per_class, max_polyphony=polyphony,
                                   background=background, timelines=list(timelines) or None, labels=label_list,
                                   seed=seed, sr=sr, pick=pick, prefix=prefix)
    out.emit({"event": "done", "scenes": [str(w) for w in wavs], "ground_truth": str(gt)})
    out.info(f"wrote {len(wavs)} scenes and {gt}")
