"""Errors a user can act on.

Anything raised as SeqtoolError reaches the user as one line on stderr and exit status 1
(the CLI catches it); everything else is a bug and keeps its traceback.
"""


class SeqtoolError(Exception):
    """A problem with the user's data, model file or request: one line, exit 1."""


class UsageError(SeqtoolError):
    """Bad option values discovered after parsing (negative sizes, unknown names): exit 2."""


def warn(msg: str) -> None:
    """A library warning on stderr, in the CLI's format; readers take `warn=` to redirect it."""
    import sys

    print(f"seqtool: warning: {' '.join(str(msg).split())}", file=sys.stderr, flush=True)
