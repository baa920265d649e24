"""Sequence classification (many-to-one): genre from a score or a recording, digit from speech.

The task protocol of seqtool.tasks.base::

    from seqtool import tasks
    tasks.train("genre", "midi_by_style/", "style.model", steps=200)
    clf = tasks.load("style.model")          # a seqtool.tasks.genre.Predictor
    for record in tasks.predict("style.model", ["piece.mid"]):
        print(record.text)                   # path, label, P(class)...
    print(tasks.evaluate("style.model", ["held_out/"]).text)

Modules: model (GenreNet, chunk-averaged probabilities), inputs (class folders, JSONL of scores,
lists of paths -> Pieces of feature rows), task (the trainer's view: crops, batches, validation),
training (defaults, --resume merging, split, normaliser: from_options), metrics (accuracy,
per-class F1, confusion matrix), predictor (a loaded model: predict records, evaluate report).

Model file: task "genre"; config {"cell", "hidden", "layers", "bidirectional", "dropout", "proj",
"pool", "attention", "input_size", "seq_len"}; meta["labels"] = class names (column order of the
probabilities); meta["input"] = {"kind": "score" | "audio", "voices": ..., "features": FeatureConfig
dict (audio only), "label_regex": ...}; meta["normalizer"] = per-feature mean/std of the training
data; meta["data_options"] = batch, seq_len, val_frac and transpose of the run (for --resume).
"""

from seqtool.tasks.genre.predictor import Predictor, load
from seqtool.tasks.genre.task import NAME
from seqtool.tasks.genre.training import from_options

__all__ = ["NAME", "from_options", "load", "Predictor"]
