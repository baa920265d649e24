"""Opening input and writing output files with errors a user can act on.

Outputs are written atomically: a temporary file in the target's directory, flushed and fsynced,
then renamed over the target with ``os.replace``. A crash or an exception midway leaves the old
file (if any) untouched and no temporary file behind.

A process killed midway (SIGKILL, power loss) can leave its temporary file, ``.NAME.PID.N.tmp``;
the next write of NAME removes those whose PID no longer runs. ``output_lock`` keeps a second
process from writing the same output while one is at it, and ``check_output`` refuses to write
over an input or over a file of another kind.

Inputs accept ``"-"`` for stdin. Missing files, directories and unreadable files become one-line
``SeqtoolError`` messages instead of tracebacks.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import sys
from typing import IO, Iterator

from seqtool.errors import SeqtoolError

__all__ = ["atomic_open", "atomic_write_bytes", "open_input", "read_text", "display_name",
           "numbered_lines", "remove_stale_temps", "output_lock", "check_output", "OUTPUT_KINDS"]


def display_name(path_or_dash) -> str:
    """How a path appears in messages: ``<stdin>`` for ``"-"``."""
    return "<stdin>" if str(path_or_dash) == "-" else os.fspath(path_or_dash)


# ----------------------------------------------------------------------------- output


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _check_writable_target(path: str) -> str:
    """Return the target's directory, or raise a SeqtoolError saying why we cannot write there."""
    directory = os.path.dirname(os.path.abspath(path))
    shown_dir = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        raise SeqtoolError(f"cannot write {path}: directory {shown_dir} does not exist")
    if not os.path.isdir(directory):
        raise SeqtoolError(f"cannot write {path}: {shown_dir} is not a directory")
    if os.path.isdir(path):
        raise SeqtoolError(f"cannot write {path}: it is a directory")
    return directory


_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<n>\d+)\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or a number we cannot ask about): keep it
    return True


def remove_stale_temps(path) -> list[str]:
    """Remove the temporary files of `path` whose writer is gone; returns the removed paths.

    A temporary file of a live process (another writer at work) is left alone.
    """
    path = os.fspath(path)
    directory, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.fullmatch(entry.name)
        if not m or m["name"] != name or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(entry.path)
    return removed


def _open_temp(directory: str, name: str) -> tuple[int, str]:
    # os.open with mode 0o666 lets the umask decide permissions, as a plain open() would;
    # tempfile.mkstemp would leave the final file 0600.
    for attempt in range(100):
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{attempt}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise SeqtoolError(f"cannot write {name}: could not create a temporary file in {directory}")


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; not possible everywhere (e.g. Windows), so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Open ``path`` for writing so that it appears complete or not at all.

    ``mode`` is ``"w"`` (text, ``encoding``) or ``"wb"``. ``"-"`` writes to stdout, which cannot be
    atomic and is not closed. On an exception inside the ``with`` block the temporary file is
    removed, the target is left as it was, and the exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', not {mode!r}")
    if str(path) == "-":
        if mode == "wb":
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        else:
            yield sys.stdout
            sys.stdout.flush()
        return

    path = os.fspath(path)
    directory = _check_writable_target(path)
    remove_stale_temps(path)
    f, tmp = _open_temp_file(path, directory, mode, encoding)
    try:
        with f:
            try:
                yield f
            except OSError as exc:
                # A full or read-only disk surfaces in the caller's write(); say which file.
                if exc.errno in _DISK_ERRNOS:
                    raise SeqtoolError(f"cannot write {path}: {exc.strerror}") from exc
                raise
            _flush_to_disk(f, path)
        _replace_keeping_mode(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _open_temp_file(path: str, directory: str, mode: str, encoding: str) -> tuple[IO, str]:
    """(open file, its name): a new temporary file beside ``path``."""
    try:
        fd, tmp = _open_temp(directory, os.path.basename(path))
    except PermissionError:
        raise SeqtoolError(f"cannot write {path}: permission denied") from None
    except OSError as e:
        raise SeqtoolError(f"cannot write {path}: {e.strerror}") from None
    try:
        if mode == "wb":
            return os.fdopen(fd, "wb"), tmp
        return os.fdopen(fd, "w", encoding=encoding, newline=""), tmp
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise


def _flush_to_disk(f, path: str) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    except OSError as exc:
        raise SeqtoolError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _replace_keeping_mode(tmp: str, path: str) -> None:
    """Rename the finished temporary file over ``path``, with the permissions of the file it
    replaces (e.g. a model made group-readable)."""
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    except FileNotFoundError:
        pass
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise SeqtoolError(f"cannot write {path}: {exc.strerror or exc}") from exc


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_open``)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


# ----------------------------------------------------------------------------- one writer


def _lock_path(path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.lock")


@contextlib.contextmanager
def output_lock(path) -> Iterator[None]:
    """Hold an advisory lock (flock) on `path` while a long job writes it, e.g. a training run
    and its checkpoints; a second process asking for the same path gets a SeqtoolError at once.

    The lock is a hidden ``.NAME.lock`` beside the output (the output itself is replaced on
    every write, so it cannot carry the lock), removed on release. "-" needs no lock.
    """
    if str(path) == "-":
        yield
        return
    import fcntl

    path = os.fspath(path)
    lock = _lock_path(path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise SeqtoolError(f"cannot write {path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SeqtoolError(f"{path} is being written by another seqtool process (lock "
                               f"{os.path.basename(lock)}); wait for it or choose another output") from None
        # The previous holder may have removed the lock file between our open and flock:
        # then we hold a lock nobody else can see, so start over on the new file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


# ----------------------------------------------------------------------------- what may be replaced


def _is_model(path: str) -> bool:
    from seqtool.io.modelfile import read_meta

    try:
        read_meta(path)
    except SeqtoolError:
        return False
    return True


def _starts_with(magic: bytes):
    def check(path: str) -> bool:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    return check


# kind -> (description, test that an existing file is of that kind and may be replaced)
OUTPUT_KINDS = {
    "model": ("a seqtool model file", _is_model),
    "png": ("a PNG image", _starts_with(b"\x89PNG\r\n\x1a\n")),
    "wav": ("a WAV file", _starts_with(b"RIFF")),
}


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(path, inputs=(), kind: str = "model", force: bool = False, option: str = "-o") -> None:
    """Refuse, before any work, an output that would destroy something: one of `inputs`
    (UsageError, even with `force`), or an existing file that is not of `kind` (a key of
    OUTPUT_KINDS; UsageError unless `force`). A directory that is missing or not writable is a
    SeqtoolError. "-" (stdout) always passes.
    """
    if str(path) == "-":
        return
    path = os.fspath(path)
    directory = _check_writable_target(path)
    if not os.access(directory, os.W_OK):
        raise SeqtoolError(f"cannot write {path}: permission denied")
    from seqtool.errors import UsageError

    for inp in inputs:
        if str(inp) != "-" and os.path.exists(inp) and _same_file(path, os.fspath(inp)):
            raise UsageError(f"{option} {path} is also an input: writing it would destroy the "
                             f"input; choose another output")
    if force or not os.path.exists(path):
        return
    what, is_kind = OUTPUT_KINDS[kind]
    try:
        ok = is_kind(path)
    except OSError:
        ok = False
    if not ok:
        raise UsageError(f"{option} {path} exists and is not {what}; use --force to replace it "
                         f"or choose another output")


# ----------------------------------------------------------------------------- input


class _NonClosing:
    """Proxy for stdin: ``with`` and ``close()`` leave the real stream open for later readers."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __iter__(self):
        return iter(self._stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self) -> None:
        pass


class _StdinTextWrapper(io.TextIOWrapper):
    """UTF-8 text view of stdin's bytes that never closes stdin (even when garbage collected)."""

    def close(self) -> None:
        # detach() instead of close(): the wrapper is done, the underlying stdin stays usable.
        with contextlib.suppress(ValueError):
            self.detach()

    def __del__(self) -> None:
        self.close()


def _input_error(path: str, exc: OSError) -> SeqtoolError:
    if isinstance(exc, FileNotFoundError):
        return SeqtoolError(f"cannot read {path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return SeqtoolError(f"cannot read {path}: it is a directory")
    if isinstance(exc, PermissionError):
        return SeqtoolError(f"cannot read {path}: permission denied")
    return SeqtoolError(f"cannot read {path}: {exc.strerror or exc}")


def open_input(path_or_dash, binary: bool = False, encoding: str = "utf-8") -> IO:
    """Open a file for reading; ``"-"`` is stdin (which closing leaves open).

    Text mode decodes with ``encoding`` strictly; use ``read_text`` to get a message with the byte
    offset of a decoding error.
    """
    if str(path_or_dash) == "-":
        stdin_bytes = getattr(sys.stdin, "buffer", None)
        if binary:
            if stdin_bytes is None:
                raise SeqtoolError("cannot read binary data from <stdin>")
            return _NonClosing(stdin_bytes)
        if stdin_bytes is None:  # already a text stream (e.g. replaced in tests)
            return _NonClosing(sys.stdin)
        return _StdinTextWrapper(stdin_bytes, encoding=encoding)
    path = os.fspath(path_or_dash)
    # open() succeeds on a directory on some platforms and fails later; check first.
    if os.path.isdir(path):
        raise SeqtoolError(f"cannot read {path}: it is a directory")
    try:
        if binary:
            return open(path, "rb")
        return open(path, "r", encoding=encoding)
    except OSError as e:
        raise _input_error(path, e) from None


def decode_error_message(name: str, exc: UnicodeDecodeError, encoding: str = "utf-8") -> str:
    """One line naming the first undecodable byte, its offset, and what to do about it."""
    bad = exc.object[exc.start:exc.start + 1]
    byte = f"byte 0x{bad[0]:02x} " if bad else ""
    return (
        f"{name} is not valid {encoding.upper()}: {byte}at offset {exc.start}; "
        f"convert it first (e.g. iconv -f latin1 -t utf-8)"
    )


def read_text(path_or_dash, encoding: str = "utf-8") -> str:
    """The whole file (or stdin for ``"-"``) as text. Newlines are kept as they are in the file."""
    with open_input(path_or_dash, binary=True) as f:
        try:
            data = f.read()
        except OSError as e:
            raise _input_error(display_name(path_or_dash), e) from None
    if isinstance(data, str):  # stdin replaced by a text-only stream
        return data
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise SeqtoolError(decode_error_message(display_name(path_or_dash), e, encoding)) from None


def numbered_lines(stream, name: str):
    """(line number, line) of a text stream, read lazily (endless stdin works); a line that is
    not UTF-8 is a one-line error naming it."""
    lineno = 0
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError as e:
            raise SeqtoolError(f"{name} line {lineno + 1} is not valid UTF-8 ({e.reason})") from None
        if not line:
            return
        lineno += 1
        yield lineno, line
