"""A loaded detector behind the task protocol: events of new recordings (predict) and scores
against a reference (evaluate)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from seqtool.data.events import Event, check_labels, read_events
from seqtool.errors import UsageError
from seqtool.tasks.base import Record, Report, TaskOptions, each_input, reporter_of
from seqtool.tasks.sed.data import audio_inputs, match_recordings, source_name
from seqtool.tasks.sed.decoding import Detector, load_sed
from seqtool.tasks.sed.evaluation import score_report
from seqtool.tasks.sed.model import NAME
from seqtool.tasks.sed.roll import draw_roll, roll_image

__all__ = ["Predictor", "load", "event_record"]

PREDICT_OPTIONS = ("threshold", "median_ms", "roll", "png", "force")
EVAL_OPTIONS = ("threshold", "median_ms")


def event_record(e: Event) -> Record:
    """One detected event: a DCASE TSV line (times to the millisecond) or its JSON object."""
    return Record({"filename": e.filename, "onset": e.onset, "offset": e.offset, "event_label": e.label},
                  f"{e.filename}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}")


class Predictor:
    """A sed model file, loaded: ``predict`` yields events, ``evaluate`` scores them."""

    def __init__(self, detector: Detector):
        self.detector = detector

    @property
    def labels(self) -> list:
        return self.detector.labels

    def predict(self, inputs: tuple, options: TaskOptions, reporter=None) -> Iterator[Record]:
        """Events of each input (audio files, folders of them, '-'), input by input.

        --roll draws each input's activity on stderr after its events; --png writes all of them
        to one image at the end. Options are checked before any input is read.
        """
        strict = getattr(options, "strict", False)
        options = TaskOptions(options).only(NAME, PREDICT_OPTIONS)
        options.strict = strict
        if options.get("png") == "-":
            raise UsageError("--png needs a file name: stdout carries the events")
        if options.get("png"):
            from seqtool.io.fileio import check_output

            check_output(options["png"], inputs, kind="png", force=options.get("force"), option="--png")
        decoding = self.detector.decoding(options)
        return self._records(audio_inputs(inputs), decoding, options, reporter_of(reporter))

    def _records(self, paths: list, decoding: tuple, options: TaskOptions, reporter) -> Iterator[Record]:
        from seqtool.io.fileio import display_name

        det, rolls = self.detector, []

        def one(path):
            probs, duration = det.analyse(path)
            yield from map(event_record, det.events(probs, duration, decoding, path))
            if options.get("roll"):
                # asked for by name, so shown even with --quiet, like the events
                print("\n".join(draw_roll(probs, det.labels, det.features.hop_s, display_name(path))),
                      file=sys.stderr, flush=True)
            if options.get("png"):
                rolls.append(probs)

        yield from each_input(paths, one, options.strict)
        if options.get("png") and rolls:
            from seqtool.io.png import write_png

            write_png(options["png"], roll_image(rolls))
            reporter.info(f"piano-roll ({', '.join(det.labels)} from top) written to {options['png']}")

    def evaluate(self, data: tuple, options: TaskOptions, reporter=None) -> Report:
        """DATA: AUDIO_DIR REFERENCE.tsv (the files the reference names) or AUDIO... REFERENCE.tsv."""
        options = TaskOptions(options).only(NAME, EVAL_OPTIONS)
        if len(data) < 2:
            raise UsageError("sed eval takes AUDIO_DIR REFERENCE.tsv, or AUDIO_FILE... REFERENCE.tsv")
        *audio, ref_path = data
        numbered = read_events(ref_path, with_lines=True)
        source = source_name(ref_path)
        check_labels(numbered, self.labels, source)
        jobs, ref = match_recordings([str(a) for a in audio], numbered, source)
        decoding = self.detector.decoding(options)
        est, durations = [], {}
        with reporter_of(reporter).progress("detecting", total=len(jobs)) as bar:
            for fname, path in jobs:
                probs, durations[fname] = self.detector.analyse(path)
                est.extend(self.detector.events(probs, durations[fname], decoding, fname))
                bar.advance()
        return score_report(ref, est, self.labels, len(jobs), durations)


def load(path, device: str = "cpu") -> Predictor:
    """The Predictor of a sed model file, its network on ``device``."""
    from seqtool.device import module_to

    detector = load_sed(path)
    module_to(detector.model, device)
    return Predictor(detector)
