"""The ``seqtool`` command: a group whose subcommands are imported only when run.

``seqtool --help`` therefore never imports numpy-heavy or numba modules, and a subcommand whose
module is missing or broken does not affect the others. Errors are turned into exit codes here,
once, for every command:

    SeqtoolError          "seqtool: error: <message>" on stderr, exit 1
    seqtool UsageError    same, exit 2 (click's own usage errors also exit 2)
    KeyboardInterrupt     "seqtool: interrupted", exit 130
    broken stdout pipe    (``seqtool sample M | head``) quiet, exit 141 like a SIGPIPE'd tool
    full disk on stdout   (``seqtool sample M > /dev/full``) "seqtool: error: cannot write to
                          stdout: No space left on device", exit 1
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import sys

import click

from seqtool import __version__
from seqtool.errors import SeqtoolError, UsageError

# name -> (module, attribute, short help). The help is here so listing commands imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("seqtool.cli.train", "train", "Train a model (one subcommand per task)."),
    "sample": ("seqtool.cli.sample", "sample", "Generate text from a charlm model."),
    "predict": ("seqtool.cli.predict", "predict", "Run a model on new inputs."),
    "eval": ("seqtool.cli.evaluate", "evaluate", "Score a model on labelled data."),
    "info": ("seqtool.cli.info", "info", "Show what a model file holds."),
    "bench": ("seqtool.cli.bench", "bench", "Measure kernel training-step throughput."),
    "check": ("seqtool.cli.check", "check", "Self-test the kernels on this machine."),
    "synth-scenes": ("seqtool.cli.synth", "synth_scenes",
                     "Write synthetic sound scenes for trying sed."),
}

SIGPIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
# Write errors of a full or failing disk. Files seqtool writes itself turn them into a
# SeqtoolError naming the file (seqtool.io.fileio); what is left is stdout redirected to a file.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF}


class _ClosedStdout:
    """Stands in for sys.stdout when the shell closed it (``seqtool sample M >&-``): writing
    data is an error (EBADF) rather than silently lost; a command that prints nothing is fine."""

    encoding = "utf-8"

    @property
    def buffer(self):
        return self

    def write(self, data):
        if data:
            raise OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")
        return 0

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _silence_stdout() -> None:
    # From the Python docs on SIGPIPE: point stdout at devnull so the interpreter's final flush
    # does not raise a second BrokenPipeError with "Exception ignored" noise.
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (e.g. CliRunner)
        sys.stdout = open(os.devnull, "w")
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


class LazyGroup(click.Group):
    """A click Group that imports a subcommand's module only when that subcommand is used."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str, str]] | None = None, **kw):
        super().__init__(*args, **kw)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        # find_spec only looks for the file: lists what is installed without importing it.
        lazy = [n for n, (mod, _, _) in self.lazy_commands.items() if _module_exists(mod)]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx, name):
        if name in self.commands or name not in self.lazy_commands:
            return super().get_command(ctx, name)
        module, attr, _ = self.lazy_commands[name]
        if not _module_exists(module):
            return None  # click reports "No such command" (exit 2)
        cmd = getattr(importlib.import_module(module), attr)
        self.commands[name] = cmd  # later lookups (and help of nested groups) reuse it
        return cmd

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            # Lazy commands always list the map's help, loaded or not, so the listing does not
            # depend on which commands ran earlier in the process.
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][2]))
            else:
                cmd = self.commands.get(name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(formatter.width - 6)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        if sys.stdout is None:
            sys.stdout = _ClosedStdout()
        try:
            rv = super().invoke(ctx)
            # Surface a closed pipe here rather than at interpreter exit ("Exception ignored").
            sys.stdout.flush()
            return rv
        except UsageError as e:
            click.echo(f"seqtool: error: {_one_line(e)}", err=True)
            raise click.exceptions.Exit(2) from None
        except SeqtoolError as e:
            click.echo(f"seqtool: error: {_one_line(e)}", err=True)
            raise click.exceptions.Exit(1) from None
        except KeyboardInterrupt:
            # Commands that train save their checkpoint before re-raising; nothing left to do.
            click.echo("\nseqtool: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(SIGPIPE_EXIT) from None
        except OSError as e:
            if e.errno not in _WRITE_ERRNOS:
                raise
            where = e.filename or "stdout"
            _silence_stdout()  # the data that did not fit must not fail again at exit
            click.echo(f"seqtool: error: cannot write to {where}: {e.strerror or e}", err=True)
            raise click.exceptions.Exit(1) from None


@click.group(
    "seqtool",
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", "-V", prog_name="seqtool",
                      message="%(prog)s %(version)s")
def cli():
    """Recurrent neural networks on sequences, with fused Numba kernels.

    Run 'seqtool COMMAND --help' for a command's options. Results go to stdout,
    messages and progress to stderr. Exit status: 0 ok, 1 error, 2 usage, 130 interrupted.
    """


if __name__ == "__main__":  # pragma: no cover
    cli()
