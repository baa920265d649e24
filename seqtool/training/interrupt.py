"""Ctrl-C for long loops that call Numba kernels.

A ``KeyboardInterrupt`` raised while a Numba-compiled function runs surfaces as a ``SystemError``
("returned a result with an exception set") with a long traceback, so a loop cannot rely on
catching it. Inside ``deferred_interrupts()`` the first SIGINT only sets a flag the loop checks
between steps (finish the step, save, exit 130); a second SIGINT aborts the process at once with
exit status 130, leaving whatever complete files are on disk (model files are written atomically).

    with deferred_interrupts() as interrupts:
        for item in work:
            step(item)
            if interrupts.requested:
                save(); raise KeyboardInterrupt
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["Interrupts", "deferred_interrupts", "exit_on_interrupt", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C


_active = None  # the flag of the outermost deferred_interrupts block, while one runs


class Interrupts:
    """The flag a loop polls; ``requested`` turns True at the first Ctrl-C."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        """Ask the loop to stop as if Ctrl-C had been pressed (also used across MPI ranks)."""
        self.requested = True


def _say(text: str) -> None:
    # os.write, not print: a handler may run in the middle of a buffered write to sys.stderr,
    # and re-entering that buffer raises.
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


@contextlib.contextmanager
def deferred_interrupts(first_notice: str | None = "finishing the current step; Ctrl-C again to abort",
                        abort_notice: str = "interrupted again: aborted without saving",
                        ending_notice: str | None = None) -> Iterator[Interrupts]:
    """SIGINT sets ``.requested`` instead of raising, while the block runs.

    Nested blocks share the outermost block's flag (a command can cover its set-up and the
    library's loop then sees a Ctrl-C pressed during the set-up). Outside the main thread
    (signals cannot be handled there) and when SIGINT is ignored (a background job, ``nohup``),
    the handler is left alone and the flag simply never turns True.

    With ``ending_notice`` (for a command that exits 130 once the block has saved and ended), a
    Ctrl-C that came in the block leaves a handler behind that prints the notice and exits 130:
    a further Ctrl-C during the exit must not turn into a KeyboardInterrupt in the middle of it.
    """
    global _active
    if _active is not None:
        yield _active
        return
    flag = Interrupts()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield flag
        return

    def on_sigint(signum, frame):
        if flag.requested:
            abort(signum, frame)
        flag.request()
        if first_notice:
            _say(f"\nseqtool: {first_notice}\n")

    abort = _exit_handler(abort_notice)
    signal.signal(signal.SIGINT, on_sigint)
    _active = flag
    try:
        yield flag
    finally:
        _active = None
        signal.signal(signal.SIGINT, _exit_handler(ending_notice)
                      if flag.requested and ending_notice else previous)


def _exit_handler(notice: str):
    def on_sigint(signum, frame):
        _say(f"\nseqtool: {notice}\n")
        os._exit(EXIT_INTERRUPTED)
    return on_sigint


@contextlib.contextmanager
def exit_on_interrupt(message: str = "interrupted") -> Iterator[None]:
    """Ctrl-C ends the process at once: what was printed is flushed, one line on stderr, exit
    130. For commands with nothing to save (predict, eval, sample): it works wherever the signal
    lands, inside a compiled kernel (whose KeyboardInterrupt would come out as a SystemError) or
    a read blocked on stdin, because nothing is raised."""
    import sys

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return

    def on_sigint(signum, frame):
        with contextlib.suppress(Exception):  # a closed pipe, or a write the signal interrupted
            sys.stdout.flush()
        exit_now(signum, frame)

    exit_now = _exit_handler(message)
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
