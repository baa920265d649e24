"""Character (or byte, or word) language model: the task protocol (see seqtool.tasks.base).

    model.py     the network (embedding, stacked RNN, head), its defaults, config and vocabulary
    training.py  the Trainer's view: truncated-BPTT batches, loss, validation
    sampler.py   generation (compiled sampling loop) and scoring of text
    here         from_options (train), load -> Predictor (predict: loss per line; evaluate: loss)
"""

from __future__ import annotations

import math

import numpy as np

from seqtool.errors import SeqtoolError, UsageError
from seqtool.tasks.base import (describe, each_input, Record, Report, TrainJob, TrainRequest, check_output, fill_defaults,
                                merge_given, reporter_of, stored_or_given, train_settings,
                                validation_interval)
from seqtool.tasks.charlm.model import CharLM, build_charlm, config_of, defaults_for

__all__ = ["NAME", "from_options", "load", "Predictor", "CharLM"]

NAME = "charlm"
ARCHITECTURE_KEYS = ("cell", "hidden", "layers", "embed", "dropout", "unit")
DATA_KEYS = ("batch", "seq_len", "val_frac")
_UNITS = ("char", "byte", "word")
DEFAULT_EPOCHS = 10


# ----------------------------------------------------------------------------- training


def _merged_options(request: TrainRequest) -> tuple[dict, dict, dict, list | None]:
    """(architecture, training, data options, stored tokens) after --resume and defaults."""
    from seqtool.io import modelfile
    from seqtool.tasks.base import TRAINING_KEYS

    given = request.given(ARCHITECTURE_KEYS)
    training, data_opts = request.given(TRAINING_KEYS), request.given(DATA_KEYS)
    tokens = None
    if request.resume:
        meta = modelfile.read_meta(request.resume, expect_task=NAME)
        given = merge_given(given, meta.get("config") or {})
        tokens = (meta.get("vocab") or {}).get("tokens")
        training = stored_or_given(training, meta.get("training") or {})
        data_opts = stored_or_given(data_opts, meta.get("data_options") or {})
    defaults = {"unit": "char", **defaults_for(request.options.get("time_budget"))}
    return (fill_defaults(given, defaults), fill_defaults(training, defaults),
            fill_defaults(data_opts, defaults), tokens)


def from_options(request: TrainRequest) -> TrainJob:
    """Read the text, build (or rebuild, for --resume) the model: a job ready to train."""
    from seqtool.data.text import load_corpus
    from seqtool.tasks.charlm.training import CharLMTask

    out = reporter_of(request)
    if request.options.get("bidirectional"):
        raise UsageError("a language model cannot be bidirectional (it would see the future)")
    check_output(request.output, request.data, request.options.get("force"))
    cfg, training, data_opts, tokens = _merged_options(request)
    corpus = load_corpus(request.data, cfg["unit"], data_opts["val_frac"], tokens=tokens)
    rng = np.random.default_rng(request.seed)
    model = build_charlm({**cfg, "reset_after": True, "nonlinearity": "tanh"}, len(corpus.tokens), rng)
    quiet = getattr(out, "quiet", True) or getattr(out, "json_output", False)
    task = CharLMTask(model, corpus, data_opts["batch"], data_opts["seq_len"],
                      sample_chars=0 if quiet else 120, data_options=data_opts)
    if task.batch != data_opts["batch"]:
        out.warn(f"text is short: using --batch {task.batch} instead of {data_opts['batch']}")
    # About 3 validations per epoch, at least 25 steps apart, at most 500, and far enough apart
    # that validating costs ~5% of the run: scoring a token (forward only) costs about a third
    # of training on it (tinyshakespeare: 0.43 s a validation against 27 ms a step of 2,500).
    val_cost = len(corpus.val) / (3 * task.batch * task.seq_len)
    settings = train_settings(request, training,
                              validation_interval(task.chunks, 3, 25, cost_in_steps=val_cost),
                              DEFAULT_EPOCHS)
    out.info(f"{len(corpus.train):,} training and {len(corpus.val):,} validation tokens, "
             f"vocabulary {len(corpus.tokens)}; {describe(config_of(model, cfg['unit']))}")
    return TrainJob(task, settings, rng, request)


# ----------------------------------------------------------------------------- using a model


class Predictor:
    """A trained charlm ready to use: the network (eval mode) and its vocabulary.

    The sampler reads the weights through the properties below, so they follow the network
    to whichever device it is moved to.
    """

    def __init__(self, model: CharLM, unit: str, tokens: list, path: str = "<model>"):
        self.model, self.unit, self.tokens, self.path = model.eval(), unit, tokens, path
        self.index = {t: i for i, t in enumerate(tokens)}
        rnn = model.rnn
        self.cell, self.layers, self.hidden = model.cell, rnn.num_layers, rnn.hidden_size
        self.reset_after, self.relu = bool(rnn.reset_after), rnn.nonlinearity == "relu"

    rnn = property(lambda self: self.model.rnn)
    embed = property(lambda self: self.model.embed.weight.data)  # (V, E)
    head_w = property(lambda self: self.model.head.weight.data)  # (V, H)
    head_b = property(lambda self: self.model.head.bias.data)  # (V,)
    vocab_size = property(lambda self: len(self.tokens))

    def zero_state(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros((self.layers, self.hidden), np.float32)
        return z, z.copy()

    def to(self, device: str) -> "Predictor":
        from seqtool.device import module_to

        module_to(self.model, device)
        return self

    def predict(self, inputs: tuple, options, reporter=None):
        """One Record per input line: its loss in nats per token, teacher-forced within the
        line. A line is scored with its newline, so a 1-character line still has one
        prediction; a line with nothing to predict gives nan (null with --json)."""
        from seqtool.io.fileio import display_name, numbered_lines, open_input

        options.only(NAME)

        def lines(path):
            name = display_name(path)
            with open_input(path) as f:
                for lineno, line in numbered_lines(f, name):
                    yield self._line_record(name, lineno, line)

        yield from each_input(inputs or ("-",), lines, options.strict)

    def _line_record(self, name: str, lineno: int, line: str) -> Record:
        from seqtool.tasks.charlm.sampler import text_loss

        loss, n = text_loss(self, line, f"{name} line {lineno}")
        data = {"input": name, "line": lineno, "loss": loss, "bpc": loss / math.log(2), "tokens": n}
        return Record(data, "nan" if n == 0 else f"{loss:.6f}")

    def evaluate(self, data: tuple, options, reporter=None) -> Report:
        """Loss in nats, bits per token and perplexity over one text (a file or '-')."""
        from seqtool.io.fileio import display_name, read_text
        from seqtool.tasks.charlm.sampler import text_loss

        options.only(NAME)
        if len(data) != 1:
            raise UsageError("charlm eval takes one TEXT file (or '-')")
        loss, n = text_loss(self, read_text(data[0]), display_name(data[0]))
        if n == 0:
            raise SeqtoolError(f"{display_name(data[0])} has fewer than 2 {self.unit}s: nothing to score")
        bpc, unit = loss / math.log(2), self.unit
        text = (f"loss {loss:.6f} nats/{unit}  {bpc:.6f} bits/{unit}  "
                f"perplexity {math.exp(loss):.4f}  ({n} {unit}s scored)")
        return Report({"task": NAME, "loss": loss, "bpc": bpc, "perplexity": math.exp(loss),
                       "tokens": n, "unit": unit}, text)


def _corrupt(path: str, what: str) -> SeqtoolError:
    return SeqtoolError(f"{path} is not a usable charlm model: {what}")


def _check_vocab(vocab: dict, path: str) -> tuple[str, list]:
    unit, tokens = vocab.get("unit", "char"), vocab.get("tokens")
    if unit not in _UNITS or not isinstance(tokens, list) or not tokens:
        raise _corrupt(path, "missing or invalid vocabulary")
    if unit == "byte":
        if not all(isinstance(t, int) and 0 <= t <= 255 for t in tokens):
            raise _corrupt(path, "byte vocabulary entries must be integers 0-255")
    elif not all(isinstance(t, str) for t in tokens):
        raise _corrupt(path, f"{unit} vocabulary entries must be strings")
    return unit, tokens


def _check_shapes(arrays: dict, cfg: dict, vocab_size: int, path: str) -> None:
    """Every array the network needs, with the shape the config implies."""
    from seqtool.tasks.charlm.sampler import GATES

    try:
        L, H = int(cfg["layers"]), int(cfg["hidden"])
    except (KeyError, TypeError, ValueError):
        raise _corrupt(path, "config lacks layers/hidden") from None
    need = ["embed.weight", "head.weight", "head.bias"] + [
        f"rnn.{p}_l{k}" for k in range(L) for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    missing = [n for n in need if n not in arrays]
    if missing:
        raise _corrupt(path, f"missing arrays {', '.join(missing[:4])}")
    V, G, embed = vocab_size, GATES[cfg["cell"]], arrays["embed.weight"]
    if embed.ndim != 2 or embed.shape[0] != V or arrays["head.weight"].shape != (V, H) \
            or arrays["head.bias"].shape != (V,):
        raise _corrupt(path, f"embedding/head shapes do not match {V} tokens and hidden size {H}")
    for k in range(L):
        shapes = {"weight_ih": (G * H, embed.shape[1] if k == 0 else H), "weight_hh": (G * H, H),
                  "bias_ih": (G * H,), "bias_hh": (G * H,)}
        for p, shape in shapes.items():
            if arrays[f"rnn.{p}_l{k}"].shape != shape:
                raise _corrupt(path, f"rnn.{p}_l{k} has shape {arrays[f'rnn.{p}_l{k}'].shape}, "
                                     f"expected {shape}")


def from_arrays(arrays: dict, meta: dict, path: str = "<model>") -> Predictor:
    """A Predictor from a model file's arrays and metadata, checking every shape."""
    cfg = dict(meta.get("config") or {})
    if cfg.get("cell") not in ("lstm", "gru", "rnn"):
        raise _corrupt(path, f"unknown cell {cfg.get('cell')!r}")
    unit, tokens = _check_vocab(meta.get("vocab") or {}, path)
    _check_shapes(arrays, cfg, len(tokens), path)
    cfg["nonlinearity"] = cfg.get("nonlinearity") or "tanh"
    if cfg["nonlinearity"] not in ("tanh", "relu"):
        raise _corrupt(path, f"unknown nonlinearity {cfg['nonlinearity']!r}")
    cfg["embed"] = arrays["embed.weight"].shape[1]
    cfg["dropout"] = float(cfg.get("dropout") or 0.0)
    model = build_charlm(cfg, len(tokens), rng=np.random.default_rng(0))
    from seqtool.io.modelfile import OPTIM_PREFIX

    model.load_state_dict({k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX)})
    return Predictor(model, unit, tokens, path)


def load(path, device: str = "cpu") -> Predictor:
    """A charlm model file on ``device``; wrong task, truncated or tampered files raise SeqtoolError."""
    from seqtool.io.modelfile import load_model

    arrays, meta = load_model(path, expect_task=NAME)
    return from_arrays(arrays, meta, str(path)).to(device)
