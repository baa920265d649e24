"""Encoder-decoder translation with attention, behind the task protocol (seqtool.tasks.base)::

    NAME = "seq2seq"
    from_options(request) -> TrainJob     training.py: defaults, --resume, pairs, model
    load(path, device) -> Predictor       predictor.py: predict (translations), evaluate (BLEU)

The parts, each readable alone: text.py (tokenizer, vocabulary), model.py (the network, built
from the layers in seqtool.nn: recurrent layers, Attention, cell_step), decode.py (greedy and
beam search, the model file loader), training.py (the Trainer's task), metrics.py (BLEU and
exact match by source length).

    from seqtool import tasks
    tasks.train("seq2seq", "pairs.tsv", "mt.model", steps=500, hidden=64)
    for record in tasks.predict("mt.model", ["sentences.txt"], beam=4):
        print(record.text)
    print(tasks.evaluate("mt.model", ["test.tsv"]).text)
"""

from __future__ import annotations

from seqtool.tasks.seq2seq.decode import Hypothesis, Translator, load_seq2seq
from seqtool.tasks.seq2seq.model import OLDER_FILE_CONFIG, Seq2Seq, build_seq2seq, config_of
from seqtool.tasks.seq2seq.predictor import Predictor, draw_attention
from seqtool.tasks.seq2seq.text import (EOS, JOINER, PAD, SOS, SPECIALS, UNK, Vocab, detokenize,
                                        display_token, tokenize)
from seqtool.tasks.seq2seq.training import DEFAULTS, Seq2SeqTask, from_options

__all__ = [
    "NAME", "from_options", "load", "Predictor", "PAD", "UNK", "SOS", "EOS", "SPECIALS", "JOINER",
    "DEFAULTS", "OLDER_FILE_CONFIG", "Vocab", "tokenize", "detokenize", "display_token", "Seq2Seq",
    "Seq2SeqTask", "build_seq2seq", "config_of", "load_seq2seq", "Translator", "Hypothesis",
    "draw_attention",
]  # fmt: skip

NAME = "seq2seq"


def load(path, device: str = "cpu") -> Predictor:
    """The Predictor of a seq2seq model file, its model on ``device``."""
    from seqtool.device import module_to

    translator = load_seq2seq(path)
    module_to(translator.model, device)
    return Predictor(translator)
