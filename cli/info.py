"""``seqtool info MODEL``: what a model or checkpoint file holds, without building the model."""

from __future__ import annotations

import click

from seqtool.cli.options import Reporter, common_options, print_report


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@common_options
def info(model, json_output, quiet, device, seed):
    """Show task, architecture, parameter count, vocabulary and training history of MODEL."""
    from seqtool.io.modelinfo import describe

    print_report(describe(model), Reporter(quiet=quiet, json_output=json_output))
