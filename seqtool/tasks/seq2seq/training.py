"""Training a seq2seq model: ``seqtool train seq2seq`` as a TrainJob (from_options), and the
Trainer's view of the data (Seq2SeqTask: length-bucketed batches, validation loss and greedy
exact match / BLEU on held-out pairs).
"""

from __future__ import annotations


import numpy as np

from seqtool.io import modelfile
from seqtool.core.autograd import no_grad
from seqtool.data.pairs import read_pairs
from seqtool.errors import SeqtoolError, UsageError
from seqtool.core.losses import cross_entropy
from seqtool.tasks.base import (describe, TRAINING_KEYS, TrainJob, TrainRequest, check_output, fill_defaults,
                                merge_given, reporter_of,
                                stored_or_given, train_settings, validation_interval)
from seqtool.tasks.seq2seq.decode import EVAL_BATCH, Translator
from seqtool.tasks.seq2seq.defaults import DEFAULTS, READ_OFF_DATA, from_data
from seqtool.tasks.seq2seq.model import (CONFIG_KEYS, OLDER_FILE_CONFIG, Seq2Seq, build_seq2seq,
                                         config_of)
from seqtool.tasks.seq2seq.text import EOS, PAD, SOS, Vocab, detokenize, tokenize

__all__ = ["DEFAULTS", "from_options", "Seq2SeqTask", "make_batches"]

DATA_KEYS = ("batch", "val_frac", "min_count", "teacher_forcing", "reverse")
DEFAULT_EPOCHS = 10
_VAL_DECODE = 500  # validation pairs decoded greedily for exact match / BLEU at each validation


def _pad(seqs, prefix=None, suffix=None) -> np.ndarray:
    """Time-major (T, N) int64 batch padded with <pad>."""
    extra = (prefix is not None) + (suffix is not None)
    T = max(len(s) for s in seqs) + extra
    out = np.full((T, len(seqs)), PAD, np.int64)
    for i, s in enumerate(seqs):
        row = ([prefix] if prefix is not None else []) + list(s) + ([suffix] if suffix is not None else [])
        out[:len(row), i] = row
    return out


def make_batches(src_ids, tgt_ids, indices, batch: int) -> list[np.ndarray]:
    """Index groups of `batch` pairs of similar lengths (little padding); fixed for a data set."""
    tie = np.random.default_rng(0).random(len(indices))  # same order on every run: resumable
    order = sorted(range(len(indices)), key=lambda k: (len(src_ids[indices[k]]),
                                                        len(tgt_ids[indices[k]]), tie[k]))
    idx = np.asarray(indices, np.int64)[order]
    return [idx[i:i + batch] for i in range(0, len(idx), batch)]


class Seq2SeqTask:
    """The Trainer's view of seq2seq: length-bucketed batches in a fresh order each epoch."""

    name = "seq2seq"

    def __init__(self, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, src_tokens, tgt_tokens,
                 unit: str, data_options: dict, references: list[str] | None = None):
        """``data_options`` (batch, val_frac, min_count, teacher_forcing, reverse) go into the
        model file, so --resume and eval need no repeated flags."""
        self.model, self.src_vocab, self.tgt_vocab, self.unit = model, src_vocab, tgt_vocab, unit
        self.data_options = dict(data_options)
        self.teacher_forcing = float(data_options["teacher_forcing"])
        val_frac = data_options["val_frac"]
        self.src_ids = [src_vocab.encode(t) for t in src_tokens]
        self.tgt_ids = [tgt_vocab.encode(t) for t in tgt_tokens]
        n = len(self.src_ids)
        n_val = int(round(n * val_frac)) if n > 1 else 0
        perm = np.random.default_rng(0).permutation(n)  # independent of --seed: resume finds the same split
        self.val_idx = np.sort(perm[:n_val])
        self.train_idx = np.sort(perm[n_val:])
        if len(self.train_idx) == 0:
            raise SeqtoolError("no training pairs left after holding out validation pairs; lower --val-frac")
        self.batch = int(data_options["batch"])
        self.batches = make_batches(self.src_ids, self.tgt_ids, self.train_idx, self.batch)
        self.val_batches = (make_batches(self.src_ids, self.tgt_ids, self.val_idx, EVAL_BATCH)
                            if n_val else [])
        self.references = references  # detokenized targets, for validation BLEU
        self.max_target_len = int(max(len(t) for t in self.tgt_ids))
        self.position = 0
        self.order = None
        self.order_seed = None
        self._rng = None

    def _batch(self, idx):
        src = _pad([self.src_ids[i] for i in idx])
        lengths = np.array([len(self.src_ids[i]) for i in idx], np.int64)
        tgt = [self.tgt_ids[i] for i in idx]
        return src, lengths, _pad(tgt, prefix=SOS), _pad(tgt, suffix=EOS)

    # ---- trainer protocol
    def train_batches(self, rng):
        self._rng = rng
        self.model.dropout_rng = rng
        self.model.encoder.dropout_rng = rng
        self.model.decoder.dropout_rng = rng
        self.model.train()
        if self.order is None:
            self.order_seed = int(rng.integers(2**31))
            self.order = np.random.default_rng(self.order_seed).permutation(len(self.batches))
        while self.position < len(self.batches):
            k = self.order[self.position]
            self.position += 1
            yield self._batch(self.batches[k])
        self.position, self.order, self.order_seed = 0, None, None

    def loss(self, batch):
        src, lengths, tgt_in, tgt_out = batch
        logits = self.model(src, lengths, tgt_in, self.teacher_forcing, self._rng)
        return cross_entropy(logits, tgt_out, ignore_index=PAD)

    def batch_tokens(self, batch) -> int:
        return int((batch[3] != PAD).sum())

    def split_batch(self, batch, parts: int) -> list:
        """The pairs in `parts` slices (MPI ranks), each with the target tokens its loss averages."""
        from seqtool.training.distributed import split_items

        return [(p, int((p[3] != PAD).sum())) for p in split_items(batch, (1, 0, 1, 1), parts)]

    def epoch_progress(self) -> float:
        return self.position / len(self.batches)

    def evaluate(self):
        """Teacher-forced loss on the validation pairs, and greedy exact match / BLEU on up to
        _VAL_DECODE of them; None without validation pairs."""
        return self.adopt_validation(self.merge_validation([self.evaluate_part(0, 1)]))

    def evaluate_part(self, rank: int, size: int):
        """This rank's contiguous share of the validation batches and of the decoded batches:
        {"loss": [(summed loss, target tokens) per batch], "decoded": [(exact, text) per pair]}.
        Batches are the same whatever the split, so the merge equals one process exactly."""
        from seqtool.training.distributed import split_bounds

        if not self.val_batches:
            return None
        lo, hi = split_bounds(len(self.val_batches), size)[rank]
        model = self.model
        was_training = model.training
        model.eval()
        sums = []
        with no_grad():
            for idx in self.val_batches[lo:hi]:
                src, lengths, tgt_in, tgt_out = self._batch(idx)
                logits = model(src, lengths, tgt_in)
                sums.append((float(cross_entropy(logits, tgt_out, ignore_index=PAD, reduction="sum").data),
                             int((tgt_out != PAD).sum())))
        decoded = self._decode_part(rank, size)
        model.train(was_training)
        return {"loss": sums, "decoded": decoded}

    def merge_validation(self, parts):
        if parts[0] is None:
            return None
        total, count = 0.0, 0
        for part in parts:
            for t, c in part["loss"]:
                total, count = total + t, count + c
        decoded = [d for part in parts for d in part["decoded"]]
        return {"loss": total / count, **self._decode_scores(decoded)}

    def adopt_validation(self, result):
        if result is not None:
            self.last_scores = {k: v for k, v in result.items() if k != "loss"}
        return result

    def on_validation(self, reporter) -> None:
        scores = getattr(self, "last_scores", None)
        if scores and not getattr(reporter, "quiet", True):
            shown = [f"exact match {100 * scores['val_exact']:.2f}%"]
            if "val_bleu" in scores:
                shown.append(f"BLEU {scores['val_bleu']:.2f}")
            reporter.info(f"  greedy on {min(len(self.val_idx), _VAL_DECODE)} validation pairs: "
                          + ", ".join(shown))

    def _decode_part(self, rank: int, size: int) -> list:
        """(exact match, detokenized text or None) of this rank's share of the greedy batches
        over the first _VAL_DECODE validation pairs."""
        from seqtool.training.distributed import split_bounds

        pick = self.val_idx[:_VAL_DECODE]
        lo, hi = split_bounds(-(-len(pick) // EVAL_BATCH), size)[rank]
        translator = Translator(self.model, self.unit, self.src_vocab, self.tgt_vocab, self.max_target_len)
        out = []
        for k in range(lo * EVAL_BATCH, min(hi * EVAL_BATCH, len(pick)), EVAL_BATCH):
            part = pick[k:k + EVAL_BATCH]
            for h, i in zip(translator.greedy([self.src_ids[i] for i in part]), part):
                text = translator.text(h.ids) if self.references is not None else None
                out.append((h.ids == self.tgt_ids[i].tolist(), text))
        return out

    def _decode_scores(self, decoded: list) -> dict:
        """Greedy exact match (and BLEU when sacrebleu is there) of the decoded pairs, in order."""
        scores = {"val_exact": round(float(np.mean([exact for exact, _ in decoded])), 4)}
        if self.references is not None:
            try:
                import sacrebleu
            except ImportError:
                return scores
            refs = [self.references[i] for i in self.val_idx[:len(decoded)]]
            scores["val_bleu"] = round(sacrebleu.corpus_bleu([t for _, t in decoded], [refs]).score, 2)
        return scores

    def data_state(self) -> dict:
        return {"position": self.position, "order_seed": self.order_seed,
                "batches": len(self.batches), "batch": self.batch}

    def load_data_state(self, state: dict) -> None:
        if (state.get("batches"), state.get("batch")) != (len(self.batches), self.batch):
            raise SeqtoolError(
                f"the checkpoint was trained on other data or another --batch ({state.get('batches')} "
                f"batches of {state.get('batch')}, now {len(self.batches)} of {self.batch}); "
                f"cannot resume exactly")
        self.position = int(state["position"])
        seed = state.get("order_seed")
        self.order_seed = None if seed is None else int(seed)
        self.order = (None if seed is None
                      else np.random.default_rng(self.order_seed).permutation(len(self.batches)))

    def state_arrays(self) -> dict:
        return {}

    def load_state_arrays(self, arrays: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"task": "seq2seq", "config": config_of(self.model, self.unit),
                "vocab": {"unit": self.unit, "source": self.src_vocab.tokens,
                          "target": self.tgt_vocab.tokens},
                "data": {"train_pairs": int(len(self.train_idx)), "val_pairs": int(len(self.val_idx)),
                         "max_target_len": self.max_target_len},
                "data_options": self.data_options}


# ----------------------------------------------------------------------------- from options


def merged_options(request: TrainRequest) -> tuple[dict, dict, dict, dict | None]:
    """(config, training, data options, stored vocabulary or None): the options given, on
    --resume checked against and completed from the checkpoint, then the fixed defaults. The
    data options read off the pairs (defaults.from_data) are still None where not given."""
    config = request.given(CONFIG_KEYS)
    training = request.given(TRAINING_KEYS)
    data_options = {**request.given(DATA_KEYS), "reverse": request.get("reverse") or None}
    vocab = None
    if request.resume:
        meta = modelfile.read_meta(request.resume, expect_task="seq2seq")
        config = merge_given(config, {**OLDER_FILE_CONFIG, **(meta.get("config") or {})})
        training = stored_or_given(training, meta.get("training") or {})
        data_options = stored_or_given(data_options, meta.get("data_options") or {})
        vocab = meta.get("vocab") or None
    fixed = {k: v for k, v in DEFAULTS.items() if k not in READ_OFF_DATA}
    return (fill_defaults(config, DEFAULTS), fill_defaults(training, DEFAULTS),
            fill_defaults(data_options, fixed), vocab)


def build_task(pairs, config: dict, data_options: dict, vocab: dict | None, rng, reporter=None
               ) -> Seq2SeqTask:
    """Tokens, the options read off them, vocabularies (the checkpoint's on --resume), a fresh
    model and the task."""
    unit = config["unit"]
    src_tokens = [tokenize(s, unit) for s in pairs.sources]
    tgt_tokens = [tokenize(t, unit) for t in pairs.targets]
    chosen, why = from_data(src_tokens, tgt_tokens)
    if any(data_options[k] is None for k in chosen) and reporter is not None:
        reporter.info(f"from the data: {why}")
    data_options = fill_defaults(data_options, chosen)
    if vocab:
        src_vocab, tgt_vocab = Vocab(vocab["source"]), Vocab(vocab["target"])
    else:
        src_vocab = Vocab.build(src_tokens, data_options["min_count"])
        tgt_vocab = Vocab.build(tgt_tokens, data_options["min_count"])
    model = build_seq2seq(config, len(src_vocab), len(tgt_vocab), rng)
    references = [detokenize(t, unit) for t in tgt_tokens]
    return Seq2SeqTask(model, src_vocab, tgt_vocab, src_tokens, tgt_tokens, unit, data_options,
                       references=references)


def from_options(request: TrainRequest) -> TrainJob:
    """``seqtool train seq2seq PAIRS``: a random --val-frac of the pairs (the same ones on every
    run) is held out; without a stopping rule it trains for DEFAULT_EPOCHS epochs."""
    reporter = reporter_of(request)
    if request.options.get("seq_len") is not None:
        raise UsageError("--seq-len does not apply to seq2seq (each pair is one sequence)")
    if len(request.data) != 1:
        raise UsageError("seq2seq trains on one PAIRS.tsv file (or '-')")
    check_output(request.output, request.data, request.options.get("force"))
    config, training, data_options, vocab = merged_options(request)
    pairs = read_pairs(request.data[0], reverse=bool(data_options["reverse"]),
                       strict=bool(request.get("strict")))
    if pairs.bad_count:
        reporter.warn(pairs.bad_message())
    rng = np.random.default_rng(request.seed)
    task = build_task(pairs, config, data_options, vocab, rng, reporter)
    # About two validations per epoch, at least 25 and at most 500 steps apart.
    val_every = validation_interval(len(task.batches), per_epoch=2, lowest=25)
    settings = train_settings(request, training, val_every, DEFAULT_EPOCHS)
    reporter.info(f"{len(task.train_idx):,} training and {len(task.val_idx):,} validation pairs "
                  f"from {pairs.name}; vocabulary {len(task.src_vocab):,} source / "
                  f"{len(task.tgt_vocab):,} target {task.unit}s; {describe(config_of(task.model, task.unit))}")
    return TrainJob(task, settings, rng, request)
