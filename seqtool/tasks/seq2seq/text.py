"""Text <-> tokens <-> ids for seq2seq: the tokenizer and each side's vocabulary.

Word units split text into words and punctuation; a token written without a space before it
carries the joiner mark (U+FFED), so detokenize(tokenize(s)) gives s back with single spaces.
Char units are the characters, whitespace runs counting as one space.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from seqtool.errors import SeqtoolError

__all__ = ["PAD", "UNK", "SOS", "EOS", "SPECIALS", "JOINER", "UNITS", "tokenize", "detokenize",
           "display_token", "Vocab"]

PAD, UNK, SOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")
JOINER = "\uffed"  # marks a token glued to the previous one (OpenNMT's joiner)
UNITS = ("word", "char")
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, unit: str) -> list[str]:
    """Tokens of one sentence; whitespace runs count as one space."""
    if unit == "char":
        return list(" ".join(text.split()))
    tokens = []
    prev_end = None
    for m in _WORD_RE.finditer(text):
        glued = prev_end is not None and m.start() == prev_end
        tokens.append(JOINER + m.group() if glued else m.group())
        prev_end = m.end()
    return tokens


def detokenize(tokens, unit: str) -> str:
    if unit == "char":
        return "".join(tokens)
    out = []
    for tok in tokens:
        if tok.startswith(JOINER) and out:
            out.append(tok[len(JOINER):])
        else:
            if out:
                out.append(" ")
            out.append(tok[len(JOINER):] if tok.startswith(JOINER) else tok)
    return "".join(out)


def display_token(tok: str) -> str:
    """A token as a person reads it (no joiner mark, visible space)."""
    tok = tok[len(JOINER):] if tok.startswith(JOINER) else tok
    return "\u2423" if tok == " " else tok


class Vocab:
    """Token <-> id for one side; ids 0..3 are the specials."""

    def __init__(self, tokens: list[str]):
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise SeqtoolError(f"a seq2seq vocabulary must start with {' '.join(SPECIALS)}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, sentences, min_count: int = 1) -> "Vocab":
        """Tokens seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(tok for toks in sentences for tok in toks)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens) -> np.ndarray:
        get = self.index.get
        return np.array([get(t, UNK) for t in tokens], dtype=np.int64)

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]
