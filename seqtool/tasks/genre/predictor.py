"""A loaded genre model: class probabilities of pieces, `seqtool predict` records and the
`seqtool eval` report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtool.io import modelfile
from seqtool.errors import SeqtoolError, UsageError
from seqtool.tasks.base import Record, Report, TaskOptions
from seqtool.tasks.genre.inputs import InputSpec, Piece, prediction_records, read_data
from seqtool.tasks.genre.metrics import format_report, metrics
from seqtool.tasks.genre.model import GenreNet, build_genre, chunk_probabilities
from seqtool.tasks.genre.task import NAME

__all__ = ["Predictor", "load_genre", "load"]


@dataclass
class Predictor:
    """A loaded genre model with everything prediction needs."""

    model: GenreNet
    labels: list[str]
    spec: InputSpec
    normalizer: object
    seq_len: int
    meta: dict

    def probabilities(self, features_list) -> np.ndarray:
        """(P, C) chunk-averaged class probabilities of raw (unnormalised) feature arrays."""
        return chunk_probabilities(self.model, [self.normalizer(f) for f in features_list], self.seq_len)

    def classify(self, pieces: list[Piece]) -> np.ndarray:
        return self.probabilities([p.features for p in pieces])

    def predict(self, inputs: tuple, options: TaskOptions, reporter=None):
        """A Record per piece of ``inputs`` (files, folders, JSONL of scores, '-' for paths on
        stdin): path, predicted label, then P(class) per class in the model's label order
        (stated on stderr). Records come one at a time as the inputs are read."""
        from seqtool.training.trainer import NullReporter

        options.only(NAME)
        reporter = reporter or NullReporter()
        if not reporter.json_output:  # JSON names its fields
            columns = ", ".join(f"P({lab})" for lab in self.labels)
            reporter.info(f"# columns: path, predicted label, {columns}")
        return prediction_records(inputs, self.spec, self._record, options.strict)

    def _record(self, name: str, features: np.ndarray) -> Record:
        p = self.probabilities([features])[0]
        label = self.labels[int(np.argmax(p))]
        return Record({"input": name, "label": label,
                       "probabilities": {lab: round(float(x), 6) for lab, x in zip(self.labels, p)}},
                      "\t".join([name, label] + [f"{x:.4f}" for x in p]))

    def evaluate(self, data: tuple, options: TaskOptions, reporter=None) -> Report:
        """Accuracy, per-class precision/recall/F1 and the confusion matrix on labelled DATA
        (one class folder, JSONL or list of paths)."""
        options.only(NAME)
        if len(data) != 1:
            raise UsageError("genre eval takes one DATA: a class folder, a JSONL or a list of paths ('-')")
        pieces, _ = read_data(data[0], self.spec, reporter=reporter)
        index = {lab: i for i, lab in enumerate(self.labels)}
        unknown = sorted({p.label for p in pieces if p.label not in index})
        if unknown:
            raise SeqtoolError(f"{data[0]}: class {unknown[0]!r} is not one the model knows "
                               f"({', '.join(self.labels)})")
        y_true = np.array([index[p.label] for p in pieces])
        m = metrics(y_true, self.classify(pieces).argmax(axis=1), self.labels)
        return Report({"task": NAME, **m}, format_report(m))


def load_genre(path) -> Predictor:
    """The genre model in file ``path``, on the host."""
    from seqtool.data.audio import FeatureConfig, Normalizer

    arrays, meta = modelfile.load_model(path, expect_task=NAME)
    try:
        config, labels = meta["config"], [str(x) for x in meta["labels"]]
        spec = InputSpec.from_dict(meta["input"])
        if spec.kind == "audio":
            FeatureConfig.from_dict(spec.features)  # validates
        normalizer = Normalizer.from_dict(meta["normalizer"])
        if len(normalizer.mean) != int(config["input_size"]) or spec.input_size != int(config["input_size"]):
            raise ValueError("feature sizes disagree")
        model = build_genre(config, len(labels), rng=np.random.default_rng(0))
        seq_len = int(config["seq_len"])
    except (KeyError, TypeError, ValueError, UsageError, SeqtoolError) as e:
        raise SeqtoolError(f"{path} is not a valid genre model ({e})") from None
    params = {k: v for k, v in arrays.items() if not k.startswith(modelfile.OPTIM_PREFIX)}
    model.load_state_dict(params)
    return Predictor(model.eval(), labels, spec, normalizer, seq_len, meta)


def load(path, device: str = "cpu") -> Predictor:
    """The genre model in file ``path`` with its weights on ``device``."""
    from seqtool.device import module_to

    predictor = load_genre(path)
    module_to(predictor.model, device)
    return predictor
