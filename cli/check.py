"""``seqtool check``: run the kernels' self-test (naive reference + float64 gradchecks) here."""

from __future__ import annotations

import sys

import click

from seqtool.cli.options import Reporter, common_options

HEADER = ("variant", "direction", "lengths", "forward max err", "grad max rel err", "ok")


def _cells(row) -> tuple[str, ...]:
    return (row.variant, "reverse" if row.reverse else "forward", "ragged" if row.ragged else "full",
            f"{row.forward_err:.2e}", f"{row.grad_err:.2e}", "ok" if row.ok else "FAIL")


def _record(row) -> dict:
    return {"variant": row.variant, "direction": "reverse" if row.reverse else "forward",
            "lengths": "ragged" if row.ragged else "full", "forward_err": float(row.forward_err),
            "grad_err": float(row.grad_err), "ok": bool(row.ok)}


def _plain_table(rows) -> list[str]:
    table = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    numeric = {3, 4}  # right-aligned columns
    return ["  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                      for i, (c, w) in enumerate(zip(line, widths))).rstrip()
            for line in table]


def _print_rich_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="seqtool kernel self-check")
    for i, name in enumerate(HEADER):
        table.add_column(name, justify="right" if i in (3, 4) else "left")
    for r in rows:
        cells = _cells(r)
        table.add_row(*cells[:-1], "[green]ok[/]" if r.ok else "[bold red]FAIL[/]")
    Console().print(table)  # stdout: the table is this command's output


@click.command("check")
@common_options
def check(json_output, quiet, device, seed):
    """Self-test the kernels on this machine.

    Every cell variant (lstm, gru, gru-classic, rnn-tanh, rnn-relu) x direction x (full or
    ragged lengths) is run in float64 and compared with a naive NumPy reference (forward max
    absolute error) and with central differences for every input's gradient (max relative
    error). Prints one row per case on stdout (with --json: one JSON line per case).
    Exit status 1 if any case fails.
    """
    from seqtool.device import use
    from seqtool.errors import SeqtoolError

    use(device)  # one-line error without a GPU

    from seqtool.diagnostics import selfcheck

    out = Reporter(quiet=quiet, json_output=json_output)
    out.info("checking the kernels against the naive reference and numeric gradients...")
    rows = selfcheck.run_all(device)
    if json_output:
        for r in rows:
            out.emit(_record(r))
    elif sys.stdout.isatty():
        _print_rich_table(rows)
    else:
        for line in _plain_table(rows):
            click.echo(line)
    failed = [r for r in rows if not r.ok]
    if failed:
        names = ", ".join(f"{c[0]}/{c[1]}/{c[2]}" for c in map(_cells, failed))
        raise SeqtoolError(f"{len(failed)} of {len(rows)} self-checks failed: {names}")
    out.info(f"all {len(rows)} self-checks passed on {device}")
