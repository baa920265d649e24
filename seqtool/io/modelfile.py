"""Model and checkpoint files: one safetensors container with seqtool's JSON metadata.

Layout (https://github.com/huggingface/safetensors): 8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the tensor bytes. The header's
``__metadata__`` holds one key, ``"seqtool"``, whose value is a JSON string::

    {
      "format_version": 1,                 # bumped when old readers could misread a file
      "task": "charlm" | "genre" | "seq2seq" | "sed",
      "config":   {...},                   # everything needed to rebuild the model
      "vocab":    {...}, "labels": {...}, "features": {...},   # free-form, task-defined
      "history":  {...},                   # suggested: steps, epochs, seconds, best_val_loss,
                                           # best_step, train_loss/val_loss as [[step, loss], ...]
      "training_state": {...},             # checkpoints only: optimizer scalars, RNG state, ...
      "sha256": "..."                      # over the tensors and the rest of this JSON
    }

Arrays may have any names; optimizer state lives under the ``optim/`` prefix so a checkpoint is
a model file with extra arrays (``info`` and model loading ignore them). Loading parses JSON and
raw little-endian numbers only: no pickle, nothing is executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from seqtool.errors import SeqtoolError
from seqtool.io.fileio import atomic_write_bytes
from seqtool.core.xp import is_device_array, to_host

__all__ = [
    "FORMAT_VERSION", "TASKS", "OPTIM_PREFIX", "save_model", "load_model", "read_meta",
    "Checkpoint", "save_checkpoint", "load_checkpoint", "rng_state", "rng_from_state",
    "parameter_count",
]

FORMAT_VERSION = 1
TASKS = ("charlm", "genre", "seq2seq", "sed")
OPTIM_PREFIX = "optim/"
META_KEY = "seqtool"

# dtypes safetensors stores natively; object, string and complex arrays are rejected.
_DTYPES = {
    np.dtype(t) for t in (
        "float16", "float32", "float64", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "bool",
    )
}
_ST_DTYPE_SIZES = {
    "F16": 2, "F32": 4, "F64": 8, "BF16": 2, "I8": 1, "I16": 2, "I32": 4, "I64": 8,
    "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
}
# A header this large is not one of ours; guards against reading gigabytes on a garbage length.
_MAX_HEADER = 100 * 1024 * 1024
# Bit generators whose state may be restored; the name comes from the file, so no getattr on it.
_BIT_GENERATORS = {
    "PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "Philox": np.random.Philox,
    "SFC64": np.random.SFC64, "MT19937": np.random.MT19937,
}


# ----------------------------------------------------------------------------- hashing


def _digest(arrays: dict[str, np.ndarray], meta_without_hash: dict) -> str:
    """SHA-256 over names, dtypes, shapes, bytes (sorted by name) and the canonical metadata JSON.

    Computed from values, not file layout, so it does not depend on how safetensors orders or
    pads the data, and it catches flipped bytes that still parse.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())  # tobytes is C order whatever the layout
    h.update(json.dumps(meta_without_hash, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- save


def _prepare_arrays(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> numpy array, not {type(arrays).__name__}")
    out = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name or name == "__metadata__" or not name.isprintable():
            raise ValueError(f"invalid array name {name!r}")
        if is_device_array(a):  # model files are device-neutral: GPU arrays are saved from the host
            a = to_host(a)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"array {name!r} is a {type(a).__name__}, not a numpy array")
        if a.dtype.newbyteorder("=") not in _DTYPES:
            raise ValueError(f"array {name!r} has dtype {a.dtype}, which a model file cannot hold")
        # Native little-endian, contiguous: what safetensors writes and what _digest hashes.
        out[name] = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")
    return out


def _prepare_meta(meta: dict) -> dict:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict, not {type(meta).__name__}")
    if meta.get("task") not in TASKS:
        raise ValueError(f"meta['task'] must be one of {', '.join(TASKS)}, not {meta.get('task')!r}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError("meta['config'] must be a dict")
    out = {k: v for k, v in meta.items() if k != "sha256"}
    out["format_version"] = FORMAT_VERSION
    # Round-trip through JSON now so a non-serializable value fails here, not after training,
    # and so the hash is over exactly what a reader will parse.
    try:
        return json.loads(json.dumps(out, default=_json_default))
    except (TypeError, ValueError) as e:
        raise TypeError(f"model metadata is not JSON-serializable: {e}") from None


def _json_default(obj):
    # numpy scalars and small arrays (e.g. an MT19937 key) turn up in configs and RNG states.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def save_model(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` atomically.

    ``meta`` needs ``task`` and ``config``; ``format_version`` and ``sha256`` are filled in.
    Bad names, dtypes or metadata raise ValueError/TypeError (caller bugs, not user errors).
    """
    from safetensors.numpy import save

    arrays = _prepare_arrays(arrays)
    meta = _prepare_meta(meta)
    meta["sha256"] = _digest(arrays, meta)
    blob = save(arrays, metadata={META_KEY: json.dumps(meta, ensure_ascii=False)})
    atomic_write_bytes(path, blob)


# ----------------------------------------------------------------------------- load


def _read_header(path: str) -> tuple[dict, int, int]:
    """Parse and check the safetensors header: returns (header, header_len, file_size)."""
    if os.path.isdir(path):
        raise SeqtoolError(f"cannot read {path}: it is a directory")
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SeqtoolError(f"cannot read {path}: no such file") from None
    except PermissionError:
        raise SeqtoolError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        raise SeqtoolError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if size == 0:
            raise SeqtoolError(f"{path} is empty, not a seqtool model file")
        if len(head) < 8:
            raise SeqtoolError(f"{path} is not a seqtool model file (too short; truncated?)")
        (n,) = struct.unpack("<Q", head)
        peek = f.read(2)
        # Every safetensors header is a JSON object starting '{"'; anything else is some other file.
        if not peek.startswith(b"{") or n < 2 or n > _MAX_HEADER:
            raise SeqtoolError(f"{path} is not a seqtool model file")
        if 8 + n > size:
            raise SeqtoolError(
                f"{path} is truncated: its header needs {8 + n} bytes, the file has {size}"
            )
        raw = peek + f.read(n - len(peek))
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (UnicodeDecodeError, ValueError):
        raise SeqtoolError(f"{path} is corrupted: its header is not valid JSON") from None
    return header, n, size


def _check_layout(path: str, header: dict, n: int, size: int) -> None:
    """The byte ranges in the header must tile the data section exactly."""
    end = 0
    try:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, stop = info["data_offsets"]
            count = int(np.prod(info["shape"], dtype=np.int64))
            if stop - begin != count * _ST_DTYPE_SIZES[info["dtype"]] or begin < 0:
                raise ValueError(name)
            end = max(end, stop)
    except (KeyError, TypeError, ValueError):
        raise SeqtoolError(f"{path} is corrupted: its header describes invalid tensors") from None
    have = size - 8 - n
    if have < end:
        raise SeqtoolError(f"{path} is truncated: expected {8 + n + end} bytes, found {size}")
    if have > end:
        raise SeqtoolError(f"{path} is corrupted: {have - end} unexpected bytes after the tensors")


def _parse_meta(path: str, header: dict) -> dict:
    raw = header.get("__metadata__")
    if not isinstance(raw, dict) or META_KEY not in raw:
        raise SeqtoolError(f"{path} is a safetensors file but not a seqtool model file")
    try:
        meta = json.loads(raw[META_KEY])
        if not isinstance(meta, dict):
            raise ValueError
    except (TypeError, ValueError):
        raise SeqtoolError(f"{path} is corrupted: its seqtool metadata is not valid JSON") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SeqtoolError(f"{path} is corrupted: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise SeqtoolError(
            f"{path} has format version {version}, written by a newer seqtool "
            f"(this one reads up to {FORMAT_VERSION}); upgrade seqtool"
        )
    if meta.get("task") not in TASKS:
        raise SeqtoolError(f"{path} is corrupted: unknown task {meta.get('task')!r}")
    return meta


def _check_task(path: str, meta: dict, expect_task) -> None:
    if expect_task is None:
        return
    wanted = (expect_task,) if isinstance(expect_task, str) else tuple(expect_task)
    if meta["task"] not in wanted:
        need = " or ".join(wanted)
        raise SeqtoolError(f"{path} is a {meta['task']} model; this command needs a {need} model")


def read_meta(path, expect_task: str | Iterable[str] | None = None) -> dict:
    """Only the metadata (header checks, no tensor bytes read, no checksum)."""
    path = os.fspath(path)
    header, n, size = _read_header(path)
    _check_layout(path, header, n, size)
    meta = _parse_meta(path, header)
    _check_task(path, meta, expect_task)
    return meta


def load_model(path, expect_task: str | Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a model file: ``(arrays, meta)``. Every problem is a one-line SeqtoolError.

    ``expect_task`` is a task name or several; a model of another task is refused.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    header, n, size = _read_header(path)
    _check_layout(path, header, n, size)
    meta = _parse_meta(path, header)
    # Task before checksum: the user's mistake is the likelier explanation and costs no read.
    _check_task(path, meta, expect_task)
    try:
        with safe_open(path, framework="np") as f:
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise SeqtoolError(f"{path} is corrupted: {str(e).splitlines()[0] if str(e) else e}") from None
    stored = meta.pop("sha256", None)
    if stored is None or _digest(arrays, meta) != stored:
        raise SeqtoolError(
            f"{path} is corrupted: checksum mismatch (the file changed after seqtool wrote it)"
        )
    return arrays, meta


def parameter_count(arrays: dict[str, np.ndarray]) -> int:
    """Number of model parameters: all array elements except optimizer state."""
    return int(sum(a.size for name, a in arrays.items() if not name.startswith(OPTIM_PREFIX)))


# ----------------------------------------------------------------------------- checkpoints


def rng_state(rng: np.random.Generator) -> dict:
    """The generator's state as JSON-able data (PCG64 state is two big ints)."""
    return json.loads(json.dumps(rng.bit_generator.state, default=_json_default))


def rng_from_state(state: dict) -> np.random.Generator:
    """A Generator continuing exactly where ``rng_state`` left off."""
    try:
        bit_gen = _BIT_GENERATORS[state["bit_generator"]]()
        if state["bit_generator"] == "MT19937":  # its key comes back from JSON as a list
            state = {**state, "state": {**state["state"],
                                        "key": np.asarray(state["state"]["key"], dtype=np.uint32)}}
        bit_gen.state = state
    except (KeyError, TypeError, ValueError) as e:
        raise SeqtoolError(f"checkpoint has an invalid random generator state ({e})") from None
    return np.random.Generator(bit_gen)


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns; ``optim_arrays`` keys have the ``optim/`` prefix removed."""

    arrays: dict[str, np.ndarray]
    meta: dict
    optim_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    optim_state: dict = field(default_factory=dict)
    rng: np.random.Generator | None = None

    @property
    def training_state(self) -> dict:
        return self.meta.get("training_state") or {}

    @property
    def optimizer_state_dict(self) -> dict:
        """In the shape ``seqtool.optim.Optimizer.load_state_dict`` takes."""
        return {"scalars": self.optim_state, "arrays": self.optim_arrays}


def save_checkpoint(
    path,
    arrays: dict[str, np.ndarray],
    meta: dict,
    optim_arrays: dict[str, np.ndarray] | None = None,
    optim_state: dict | None = None,
    rng: np.random.Generator | None = None,
    training_state: dict | None = None,
) -> None:
    """A model file plus what ``--resume`` needs to continue exactly.

    ``optim_arrays`` (moments etc.) are stored as ``optim/<name>``; ``optim_state`` (JSON scalars:
    step counts, learning rate; ``Optimizer.state_dict()`` gives both as "arrays" and "scalars"),
    ``training_state`` (step, epoch, data position, best loss, ...) and the RNG state go into
    ``meta["training_state"]``.
    """
    all_arrays = dict(arrays)
    for name, a in (optim_arrays or {}).items():
        all_arrays[OPTIM_PREFIX + name] = a
    state = dict(meta.get("training_state") or {})
    state.update(training_state or {})
    state["optim"] = dict(optim_state or {})
    if rng is not None:
        state["rng"] = rng_state(rng)
    save_model(path, all_arrays, {**meta, "training_state": state})


def load_checkpoint(path, expect_task: str | Iterable[str] | None = None) -> Checkpoint:
    """Read what ``save_checkpoint`` wrote (a plain model file gives empty optimizer state)."""
    arrays, meta = load_model(path, expect_task)
    params = {k: v for k, v in arrays.items() if not k.startswith(OPTIM_PREFIX)}
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in arrays.items() if k.startswith(OPTIM_PREFIX)}
    state = meta.get("training_state") or {}
    rng = rng_from_state(state["rng"]) if isinstance(state.get("rng"), dict) else None
    return Checkpoint(params, meta, optim, dict(state.get("optim") or {}), rng)
