"""Sound event detection: log-mel frames -> stacked bidirectional LSTM -> per-class sigmoid ->
thresholded, median-filtered events (DCASE TSV: filename onset offset event_label).

The task protocol (seqtool.tasks.base): ``from_options`` (train), ``load`` -> ``Predictor``
(predict, evaluate), and ``is_event_table`` / ``evaluate_tables`` for scoring an event list
without a model. The parts:

    model       the network, its config and the task's DEFAULTS
    data        recordings, annotations, the validation split, predict/eval inputs
    decoding    windowed inference, thresholds, median filter, the loaded Detector
    training    SEDTask, the trainer's view (windows, augmentation, validation, tuning)
    scenes      SceneMaker: scenes mixed from clips every epoch (train sed --clips)
    job         from_options: defaults and --resume merged, data read, model built
    evaluation  scores as a report; event tables scored without a model
    roll        the terminal piano-roll and the PNG of class activity
    predictor   Predictor and load
"""

from seqtool.tasks.sed.data import Recording, load_recordings, split_recordings
from seqtool.tasks.sed.decoding import (Detector, detect, frame_logits, load_sed, median_frames,
                                        parse_thresholds, probabilities, window_starts)
from seqtool.tasks.sed.evaluation import evaluate_tables, is_event_table, score_report
from seqtool.tasks.sed.job import from_options
from seqtool.tasks.sed.model import DEFAULTS, NAME, SEDModel, build_sed, config_of
from seqtool.tasks.sed.predictor import Predictor, load
from seqtool.tasks.sed.roll import draw_roll, roll_image
from seqtool.tasks.sed.training import AUG_GAIN_DB, AUG_MAX_BANDS, TUNE_MEDIAN_MS, TUNE_THRESHOLDS, SEDTask

__all__ = ["NAME", "DEFAULTS", "from_options", "load", "Predictor", "is_event_table", "evaluate_tables",
           "SEDModel", "SEDTask", "Detector", "Recording", "build_sed", "config_of", "load_sed",
           "load_recordings", "split_recordings", "window_starts", "frame_logits", "probabilities",
           "median_frames", "detect", "parse_thresholds", "score_report", "draw_roll", "roll_image",
           "AUG_GAIN_DB", "AUG_MAX_BANDS", "TUNE_THRESHOLDS", "TUNE_MEDIAN_MS"]
