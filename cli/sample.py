"""``seqtool sample MODEL``: generate text from a charlm model; the text alone goes to stdout."""

from __future__ import annotations

import sys
import time

import click

from seqtool.cli.options import FiniteRange, Reporter, common_options, emit_json

STREAM_CHUNK = 64  # tokens per compiled call with --stream or --stop-at
BATCH_CHUNK = 4096  # otherwise


def _write_text(pieces, flush_each: bool) -> None:
    """The generated text on stdout as UTF-8 bytes, its last line ended with a newline."""
    stdout = sys.stdout.buffer
    ends_with_newline = True
    for piece in pieces:
        # Encoded here, not by sys.stdout, so a C locale cannot turn text into an error;
        # the byte unit's decoder already replaced invalid bytes, so this is valid UTF-8.
        stdout.write(piece.encode("utf-8", errors="replace"))
        if flush_each:
            stdout.flush()
        ends_with_newline = piece.endswith("\n") if piece else ends_with_newline
    if not ends_with_newline:
        stdout.write(b"\n")  # text ends its last line: a prompt or the summary does not glue on
    stdout.flush()


def _print_sample(pieces, unit: str, json_output: bool, stream: bool) -> float:
    """The text (or one JSON object with it) on stdout; returns the seconds generation took."""
    t0 = time.perf_counter()
    if json_output:
        text = "".join(pieces)
        emit_json({"text": text, "unit": unit, "seconds": round(time.perf_counter() - t0, 6)})
    else:
        _write_text(pieces, flush_each=stream)
    return time.perf_counter() - t0


@click.command("sample")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--length", "-n", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Tokens (characters, bytes or words) to generate after the prime.")
@click.option("--temperature", "-t", type=FiniteRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Softmax temperature: lower is more conservative.")
@click.option("--prime", "prime_text", default="", metavar="TEXT",
              help="Text the model reads first; the output starts with it.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sample only among the k most likely tokens (0: all).")
@click.option("--argmax", is_flag=True, help="Always take the most likely token (deterministic).")
@click.option("--stream", is_flag=True, help="Print the text as it is generated.")
@click.option("--stop-at", default=None, metavar="STRING",
              help="Stop right after STRING appears in the generated text.")
@common_options
def sample(model, length, temperature, prime_text, top_k, argmax, stream, stop_at,
           json_output, quiet, device, seed):
    """Generate text from a charlm model.

    MODEL is a charlm model file. Only the text goes to stdout, ending with a newline (with
    --json: one object with the text and timing);
    messages go to stderr. The same --seed gives the same text (on the same machine:
    the rounding of the products depends on its CPU and thread count).
    """
    from seqtool.device import use
    from seqtool.tasks.charlm import load
    from seqtool.tasks.charlm.sampler import iter_generate
    from seqtool.training.interrupt import exit_on_interrupt

    out = Reporter(quiet=quiet, json_output=json_output)
    use(device)  # one-line error without a GPU
    # On a GPU each token is one step of kernel launches plus a copy of the logits; the
    # compiled CPU loop is faster for one stream, but the choice is the user's.
    lm = load(model, device)
    chunk = STREAM_CHUNK if (stream or stop_at) else BATCH_CHUNK
    pieces = iter_generate(lm, length, temperature, prime_text, top_k, argmax, seed,
                           stop_at or None, chunk=chunk)
    with exit_on_interrupt():
        seconds = _print_sample(pieces, lm.unit, json_output, stream)
    if not json_output:
        out.info(f"generated {length if not stop_at else 'up to ' + str(length)} {lm.unit} tokens "
                 f"in {seconds:.2f} s")
