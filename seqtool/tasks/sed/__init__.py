"""Sound event detection (being split into modules)."""

from seqtool.tasks.sed.model import *  # noqa: F401,F403
from seqtool.tasks.sed.model import (AUG_GAIN_DB, AUG_MAX_BANDS, TUNE_MEDIAN_MS, TUNE_THRESHOLDS, _audio_path,  # noqa: F401
                                     config_of, sigmoid, split_recordings, window_starts)
