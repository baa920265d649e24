"""Text corpora for language models: read, validate, build a vocabulary, encode, split.

Units: ``char`` (UTF-8 code points), ``byte`` (raw bytes, the 256 values; any file works) and
``word`` (words, single punctuation marks and single whitespace characters, so that joining the
tokens gives the text back; rare words beyond ``max_words`` become ``<unk>``).
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass

import numpy as np

from seqtool.errors import SeqtoolError, UsageError
from seqtool.io.fileio import decode_error_message, display_name, open_input

__all__ = ["UNITS", "UNK", "Corpus", "read_text_files", "tokenize", "build_vocab", "encode",
           "split_validation", "load_corpus"]

UNITS = ("char", "byte", "word")
UNK = "<unk>"
_WORD_RE = re.compile(r"\w+|\s|[^\w\s]")
# C0 controls other than \t \n \v \f \r (and ESC, which ANSI-coloured text has), and DEL.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_SNIFF = 1 << 16  # characters inspected for "mostly non-printable"


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise UsageError(f"unknown unit {unit!r}; choose one of: {', '.join(UNITS)}")


def _read_bytes(path) -> bytes:
    name = display_name(path)
    with open_input(path, binary=True) as f:
        try:
            data = f.read()
        except OSError as e:
            raise SeqtoolError(f"cannot read {name}: {e.strerror or e}") from None
    return data.encode("utf-8") if isinstance(data, str) else data  # stdin replaced by text


def _decode(name: str, data: bytes) -> str:
    if b"\x00" in data:
        raise SeqtoolError(f"{name} looks like a binary file (it contains NUL bytes); "
                           f"use --unit byte to model raw bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SeqtoolError(decode_error_message(name, e) + ", or use --unit byte") from None
    sample = text[:_SNIFF]
    if sample and len(_CONTROL_RE.findall(sample)) > 0.1 * len(sample):
        raise SeqtoolError(f"{name} looks like a binary file (mostly non-printable characters); "
                           f"use --unit byte to model raw bytes")
    return text


def read_text_files(paths, unit: str = "char") -> str | bytes:
    """The files (``"-"`` is stdin, at most once) concatenated: bytes for ``byte``, else str."""
    _check_unit(unit)
    paths = list(paths)
    if not paths:
        raise UsageError("no input files given")
    if sum(str(p) == "-" for p in paths) > 1:
        raise UsageError("'-' (stdin) can be given only once")
    parts = []
    for p in paths:
        data = _read_bytes(p)
        parts.append(data if unit == "byte" else _decode(display_name(p), data))
    out = (b"" if unit == "byte" else "").join(parts)
    if len(out) == 0:
        names = ", ".join(display_name(p) for p in paths)
        raise SeqtoolError(f"no text to train on: {names} {'is' if len(paths) == 1 else 'are'} empty")
    return out


def tokenize(data, unit: str):
    """str -> list of chars / words; bytes stay bytes (indexing gives ints)."""
    _check_unit(unit)
    if unit == "byte":
        return data if isinstance(data, (bytes, bytearray)) else str(data).encode("utf-8")
    if unit == "word":
        return _WORD_RE.findall(data)
    return data


def build_vocab(data, unit: str, max_words: int = 10000) -> list:
    """Sorted token list (ids are positions): all 256 byte values for ``byte``."""
    _check_unit(unit)
    if unit == "byte":
        return list(range(256))
    if unit == "char":
        return sorted(set(data))
    counts = collections.Counter(tokenize(data, "word"))
    if len(counts) <= max_words:
        return sorted(counts)
    # Ties broken by the token itself so the vocabulary does not depend on file order.
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max_words - 1]
    return sorted([t for t, _ in kept] + [UNK])


def encode(data, tokens: list, unit: str, unknown: str = "error") -> np.ndarray:
    """int32 ids of ``data``; ``unknown``: "error" (SeqtoolError), "skip", or "unk" (words)."""
    _check_unit(unit)
    if unit == "byte":
        return np.frombuffer(tokenize(data, "byte"), dtype=np.uint8).astype(np.int32)
    index = {t: i for i, t in enumerate(tokens)}
    seq = tokenize(data, unit)
    if unit == "char":
        # Code points through a lookup table: vectorized, far faster than a dict per char.
        cps = np.frombuffer(seq.encode("utf-32-le"), dtype=np.uint32)
        if cps.size == 0:
            return np.zeros(0, np.int32)
        top = int(cps.max()) + 1
        table = np.full(top, -1, np.int32)
        for t, i in index.items():
            if ord(t) < top:
                table[ord(t)] = i
        ids = table[cps]
        missing = ids < 0
        if missing.any():
            if unknown == "skip":
                return ids[~missing]
            bad = chr(int(cps[np.argmax(missing)]))
            raise SeqtoolError(f"character {bad!r} is not in the model's vocabulary")
        return ids
    unk = index.get(UNK)
    out = []
    for w in seq:
        i = index.get(w, unk)
        if i is None:
            if unknown == "skip":
                continue
            raise SeqtoolError(f"word {w!r} is not in the model's vocabulary")
        out.append(i)
    return np.asarray(out, dtype=np.int32)


def split_validation(ids: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): validation is the LAST ``val_frac`` of the sequence (no leakage by shuffling)."""
    if not 0.0 <= val_frac < 1.0:
        raise UsageError(f"--val-frac must be in [0, 1), got {val_frac}")
    n_val = int(round(len(ids) * val_frac))
    if val_frac > 0 and n_val < 2:
        raise SeqtoolError(f"text too short for a validation split: {len(ids)} tokens, "
                           f"--val-frac {val_frac} leaves {n_val}; use more text or --val-frac 0")
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


@dataclass
class Corpus:
    unit: str
    tokens: list  # id -> token (str, or int for bytes)
    train: np.ndarray  # (L_train,) int32
    val: np.ndarray  # (L_val,) int32, may be empty
    ids: np.ndarray  # the whole text, train followed by val


def load_corpus(paths, unit: str = "char", val_frac: float = 0.1, tokens: list | None = None) -> Corpus:
    """Read, check, encode and split. ``tokens`` (a model's vocabulary) is kept when given."""
    data = read_text_files(paths, unit)
    if tokens is None:
        tokens = build_vocab(data, unit)
    ids = encode(data, tokens, unit, unknown="unk" if unit == "word" else "error")
    train, val = split_validation(ids, val_frac)
    return Corpus(unit, list(tokens), train, val, ids)
