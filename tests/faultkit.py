"""Helpers of the fault suite (tests/test_faults_*.py): run seqtool as a real process on real
files and check what the contract promises for a failure.

    exit 1   data, model file or run-time problem: "seqtool: error: ..." as the one line on stderr
    exit 2   bad option: the same line for seqtool's own checks, click's usage block otherwise
    never    a traceback, a lost or half-written file, a leftover temporary file
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PYTHON = sys.executable
SEQTOOL = [PYTHON, "-m", "seqtool.cli.main"]
# One Numba thread: the suite runs beside other work on small machines; nothing here is timed.
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("NUMBA_ENABLE_CUDASIM", None)
TIMEOUT = 240


@dataclass
class Result:
    rc: int
    stdout: bytes
    stderr: str
    args: list

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    def __str__(self) -> str:
        return f"seqtool {' '.join(map(str, self.args))}: exit {self.rc}\nstderr: {self.stderr[-3000:]}"


def run(args, cwd, stdin: bytes | str | None = None, stdout=None, timeout: float = TIMEOUT) -> Result:
    """seqtool ARGS as a child process in `cwd`; `stdout` may be an open file (e.g. /dev/full)."""
    args = [str(a) for a in args]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    p = subprocess.run(SEQTOOL + args, cwd=cwd, input=data if data is not None else b"",
                       stdout=stdout if stdout is not None else subprocess.PIPE,
                       stderr=subprocess.PIPE, env=ENV, timeout=timeout)
    return Result(p.returncode, p.stdout or b"", p.stderr.decode("utf-8", "replace"), args)


def snapshot(*dirs) -> dict[str, str]:
    """{path: sha256} of every file (hidden ones too) under `dirs`."""
    found = {}
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    found[p] = hashlib.sha256(fh.read()).hexdigest()
    return found


def assert_files_kept(before: dict, after: dict, new_ok=(), changed_ok=()) -> None:
    """Every file in `before` is still there, byte-identical (unless its path is in changed_ok),
    and no file appeared except those in new_ok (paths or name suffixes)."""
    for p, h in before.items():
        assert p in after, f"{p} was removed"
        if p not in map(str, changed_ok):
            assert after[p] == h, f"{p} was changed"
    new = [p for p in after if p not in before]
    unexpected = [p for p in new if not any(p == str(ok) or p.endswith(str(ok)) for ok in new_ok)]
    assert not unexpected, f"unexpected new files: {unexpected}"


def assert_clean_error(r: Result, code: int, *needles: str, ours: bool | None = None) -> str:
    """Exit `code`, no traceback, and one message line; returns that line.

    `ours` (default: True for exit 1): the line is seqtool's "seqtool: error: ..."; for exit 2 it
    may instead be click's usage block ("Usage: ... Error: ..."), whose last line is the message.
    """
    assert r.rc == code, str(r)
    assert "Traceback" not in r.stderr, str(r)
    assert "Exception ignored" not in r.stderr, str(r)
    lines = r.err_lines
    ours = (code == 1) if ours is None else ours
    mine = [ln for ln in lines if ln.startswith("seqtool: error:")]
    if ours or mine:
        # Progress lines of a run that started may come first; the error is the last line.
        assert len(mine) == 1 and lines[-1] == mine[0], str(r)
        msg = mine[0]
    else:
        errors = [ln for ln in lines if ln.startswith("Error:")]
        assert len(errors) == 1, str(r)
        msg = errors[0]
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in {msg!r}"
    return msg


def run_fault(args, cwd, code: int, *needles, watch=(), stdin=None, new_ok=(), ours=None,
              stdout=None) -> Result:
    """Run, then check the error and that no file under `cwd` and `watch` changed or appeared."""
    before = snapshot(cwd, *watch)
    r = run(args, cwd, stdin=stdin, stdout=stdout)
    assert_clean_error(r, code, *needles, ours=ours)
    assert_files_kept(before, snapshot(cwd, *watch), new_ok=new_ok)
    return r


# ----------------------------------------------------------------------------- bad model files


def _header_len(blob: bytes) -> int:
    return int.from_bytes(blob[:8], "little")


def _with_header(blob: bytes, header: bytes) -> bytes:
    n = _header_len(blob)
    return len(header).to_bytes(8, "little") + header + blob[8 + n:]


def _set_meta(blob: bytes, **changes) -> bytes:
    import json

    n = _header_len(blob)
    header = json.loads(blob[8:8 + n])
    meta = json.loads(header["__metadata__"]["seqtool"])
    meta.update(changes)
    header["__metadata__"]["seqtool"] = json.dumps(meta)
    return _with_header(blob, json.dumps(header).encode())


def _flip_tensor_byte(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[-5] ^= 0x40
    return bytes(b)


def _no_meta(blob: bytes) -> bytes:
    import json

    n = _header_len(blob)
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__")
    return _with_header(blob, json.dumps(header).encode())


def _bad_offsets(blob: bytes) -> bytes:
    import json

    n = _header_len(blob)
    header = json.loads(blob[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 10 ** 12]
    return _with_header(blob, json.dumps(header).encode())


# name -> (good model bytes -> bad bytes, words the error must contain)
BAD_MODELS = {
    "empty": (lambda b: b"", "empty"),
    "random-bytes": (lambda b: np.random.default_rng(0).bytes(5000), "not a seqtool model"),
    "text": (lambda b: b"hello, this is not a model\n", "not a seqtool model"),
    "non-utf8-text": (lambda b: b"\xff\xfe\xfa caf\xe9\n" * 20, "not a seqtool model"),
    "four-bytes": (lambda b: b[:4], "too short"),
    "truncated-half": (lambda b: b[:len(b) // 2], "truncated"),
    "truncated-tail": (lambda b: b[:-3], "truncated"),
    "trailing-garbage": (lambda b: b + b"\0" * 16, "unexpected bytes"),
    "flipped-tensor-byte": (_flip_tensor_byte, "checksum"),
    "huge-header-length": (lambda b: (2 ** 62).to_bytes(8, "little") + b[8:], "not a seqtool model"),
    "header-not-json": (lambda b: _with_header(b, b'{"a": [1, 2' + b" " * 40), "not valid JSON"),
    "header-non-utf8": (lambda b: _with_header(b, b'{"\xff\xfe": 1}'), "not valid JSON"),
    "no-seqtool-metadata": (_no_meta, "not a seqtool model"),
    "future-version": (lambda b: _set_meta(b, format_version=99), "newer seqtool"),
    "unknown-task": (lambda b: _set_meta(b, task="transformer"), "unknown task"),
    "tensor-offsets-past-end": (_bad_offsets, "corrupted"),
    "gzip-of-model": (lambda b: __import__("gzip").compress(b), "not a seqtool model"),
}


def write_bad_model(dirpath: Path, good: Path, kind: str) -> tuple[Path, str]:
    make, needle = BAD_MODELS[kind]
    p = Path(dirpath) / f"{kind}.model"
    p.write_bytes(make(good.read_bytes()))
    return p, needle


# ----------------------------------------------------------------------------- data makers


def write_wav(path, seconds: float, sr: int = 16000, freq: float = 1000.0) -> Path:
    from seqtool.data.audio import write_wav as _write

    t = np.arange(int(seconds * sr)) / sr
    _write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return Path(path)


def seq2seq_pairs(n: int = 80) -> str:
    words = ["jump", "walk", "run", "look", "turn"]
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        a, b = rng.choice(words, 2)
        rows.append(f"{a} {b}\t{a.upper()} {b.upper()}")
    return "\n".join(rows) + "\n"


def genre_jsonl(n_per_class: int = 8) -> str:
    import json

    rng = np.random.default_rng(0)
    rows = []
    for label, step in (("steps", 1), ("leaps", 7)):
        for i in range(n_per_class):
            pitches = 60 + np.cumsum(rng.choice([-step, step], 24))
            notes = [[0.5 * k, 0.5, int(np.clip(p, 30, 100)), 0] for k, p in enumerate(pitches)]
            rows.append(json.dumps({"id": f"{label}{i}", "label": label, "notes": notes}))
    return "\n".join(rows) + "\n"
