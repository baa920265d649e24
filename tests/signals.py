"""Real Ctrl-C for the tests: children that take SIGINT as a terminal's foreground job does."""

import os
import signal
import threading
import time


def default_sigint():
    """preexec_fn: a background job of a non-interactive shell starts with SIGINT ignored; a
    terminal's foreground job does not, so give the child the terminal's situation."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_file(path, proc, timeout=120):
    """Until ``path`` exists (the child's first checkpoint); fails if the child ends first."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert os.path.exists(path), proc.stderr.read() if proc.poll() is not None else "timeout"


def ctrl_c(proc, times=1, gap=0.3, timeout=120, again_after=None) -> str:
    """Send SIGINT ``times`` times, ``gap`` seconds apart (two at once reach Python's handler as
    one), or each further one as soon as the child's stderr shows ``again_after``; returns the
    child's stderr. The child is killed if it does not end within ``timeout``."""
    if again_after is not None:
        return _ctrl_c_on_cue(proc, times, again_after, timeout)
    try:
        for i in range(times):
            if i:
                time.sleep(gap)
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return err


def _ctrl_c_on_cue(proc, times, cue, timeout) -> str:
    lines, seen = [], threading.Condition()

    def read():
        for line in proc.stderr:
            with seen:
                lines.append(line)
                seen.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for i in range(times):
            if i:
                with seen:  # the n-th cue, so a repeated notice is not taken for the next one
                    seen.wait_for(lambda: "".join(lines).count(cue) >= i, timeout=timeout)
            os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=timeout)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return "".join(lines)
