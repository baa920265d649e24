"""``seqtool bench``: training-step throughput of one layer stack, optionally against PyTorch."""

from __future__ import annotations

import click

from seqtool.cli.options import CELLS, Reporter, common_options, emit_json

_POSITIVE = click.IntRange(min=1)


@click.command("bench")
@click.option("--cell", type=click.Choice(CELLS), default="lstm", show_default=True,
              help="Recurrent cell.")
@click.option("--hidden", type=_POSITIVE, default=256, show_default=True, help="Hidden units H.")
@click.option("--batch", type=_POSITIVE, default=32, show_default=True, help="Batch size N.")
@click.option("--seq-len", type=_POSITIVE, default=100, show_default=True, help="Time steps T.")
@click.option("--input-size", type=_POSITIVE, default=64, show_default=True, help="Input features D.")
@click.option("--layers", type=_POSITIVE, default=1, show_default=True, help="Stacked layers.")
@click.option("--bidirectional", is_flag=True, help="Bidirectional layers.")
@click.option("--steps", type=_POSITIVE, default=10, show_default=True,
              help="Timed training steps (the median is reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed steps first (compilation, allocation).")
@click.option("--nonlinearity", type=click.Choice(("tanh", "relu")), default="tanh",
              show_default=True, help="Vanilla RNN activation (--cell rnn).")
@click.option("--gru-form", type=click.Choice(("after", "classic")), default="after",
              show_default=True,
              help="GRU (--cell gru): reset applied after the recurrent matmul (PyTorch/cuDNN) "
                   "or the classic tanh(W x + U (r*h)).")
@click.option("--compare", type=click.Choice(("torch",)), default=None,
              help="Also time PyTorch's layer on the same step, interleaved with ours.")
@click.option("--persistent", type=click.Choice(("auto", "on", "off")), default="auto", show_default=True,
              help="--device cuda, LSTM: on = the grid-wide persistent kernels (one launch per layer "
                   "and pass), off = the per-step kernels (for comparison), auto = the persistent "
                   "kernels, on one block where the GPU refuses a cooperative launch.")
@click.option("--matmul-peak", is_flag=True,
              help="Also measure NumPy's float32 1024^3 matmul GFLOP/s, the machine's GEMM peak.")
@click.option("--task", type=click.Choice(("charlm",)), default=None,
              help="Time a whole task's training step instead: charlm = embedding, LSTM stack, head, "
                   "cross-entropy, clipping, Adam (defaults: 2 x LSTM 128, embed 64 (--input-size), "
                   "vocab 65, batch 50, seq-len 50; chars/s).")
@common_options
def bench(cell, hidden, batch, seq_len, input_size, layers, bidirectional, steps, warmup,
          nonlinearity, gru_form, compare, persistent, matmul_peak, task, json_output, quiet, device, seed):
    """Time full training steps of a recurrent layer stack on random data.

    One step: forward over (T, N, D) float32 input, loss = sum(output * R) with a fixed random
    R, backward, SGD update. Prints the median step time, tokens/s (N*T per step) and GFLOP/s.

    \b
    FLOPs per step (matmuls only), G = 4 lstm, 3 gru, 1 rnn,
    D_l = input size for layer 0, dirs*H above:
      forward  = sum over layers and directions of 2*T*N*G*H*(D_l + H)
      backward = 2 * forward;  step = 3 * forward

    --compare torch runs torch.nn.LSTM/GRU/RNN (same shapes and starting weights,
    torch.optim.SGD, as many threads as the kernels use) right after each of our steps;
    ratio = torch step time / our step time (> 1: seqtool is faster).
    With --json: one JSON object on stdout.
    """
    from seqtool.device import use

    use(device)  # one-line error without a GPU
    if task is not None:
        return _bench_task(locals())
    _check_device_options(device, cell, matmul_peak, persistent)
    from seqtool.diagnostics.bench import BenchConfig, check_compare

    cfg = BenchConfig(cell=cell, hidden=hidden, batch=batch, seq_len=seq_len, input_size=input_size,
                      layers=layers, bidirectional=bidirectional, nonlinearity=nonlinearity,
                      gru_form=gru_form, steps=steps, warmup=warmup,
                      seed=0 if seed is None else seed)
    cfg.validate()
    check_compare(cfg, compare)
    _run_and_print(cfg, compare, persistent, matmul_peak, device,
                   Reporter(quiet=quiet, json_output=json_output))


def _check_device_options(device: str, cell: str, matmul_peak: bool, persistent: str) -> None:
    from seqtool.errors import UsageError

    if matmul_peak and device != "cpu":
        raise UsageError("--matmul-peak measures NumPy's CPU matmul; use it with --device cpu")
    if persistent != "auto" and (device != "cuda" or cell != "lstm"):
        raise UsageError("--persistent chooses between CUDA LSTM kernels: use it with --device cuda --cell lstm")


def _run_and_print(cfg, compare, persistent: str, matmul_peak: bool, device: str, out: Reporter) -> None:
    from seqtool.diagnostics.bench import matmul_peak as measure_peak, run

    out.info(f"bench {_shape(cfg)}: {cfg.warmup} warm-up + {cfg.steps} timed steps"
             + (" (interleaved with PyTorch)" if compare else ""))
    with out.progress("steps", total=cfg.warmup + cfg.steps, transient=True) as bar:
        rec = run(cfg, compare=compare, on_step=lambda i: bar.advance(), device=device,
                  persistent=persistent)
    if device == "cuda" and cfg.cell == "lstm":
        rec["persistent"] = persistent
    if matmul_peak:
        rec["matmul_gflops"] = measure_peak()
        rec["fraction_of_peak"] = rec["gflops"] / rec["matmul_gflops"]
    if out.json_output:
        emit_json(rec)
        return
    for line in _text(rec, cfg):
        click.echo(line)


def _bench_task(opts: dict) -> None:
    """--task charlm: options the user did not give take the charlm defaults."""
    from click.core import ParameterSource

    from seqtool.diagnostics.bench import CharlmBenchConfig, run_charlm
    from seqtool.errors import UsageError

    if opts["device"] != "cpu" or opts["matmul_peak"] or opts["cell"] != "lstm" or opts["bidirectional"]:
        raise UsageError("--task charlm times the CPU LSTM charlm; drop --device, --cell, "
                         "--bidirectional and --matmul-peak")
    ctx = click.get_current_context()
    given = {k: opts[k] for k in ("hidden", "batch", "seq_len", "layers", "input_size")
             if ctx.get_parameter_source(k) != ParameterSource.DEFAULT}
    if "input_size" in given:
        given["embed"] = given.pop("input_size")
    cfg = CharlmBenchConfig(**given, steps=opts["steps"], warmup=opts["warmup"],
                            seed=0 if opts["seed"] is None else opts["seed"])
    out = Reporter(quiet=opts["quiet"], json_output=opts["json_output"])
    out.info(f"bench charlm: {cfg.warmup} warm-up + {cfg.steps} timed steps"
             + (" (interleaved with PyTorch)" if opts["compare"] else ""))
    with out.progress("steps", total=cfg.warmup + cfg.steps, transient=True) as bar:
        rec = run_charlm(cfg, opts["compare"], on_step=lambda i: bar.advance())
    if opts["json_output"]:
        emit_json(rec)
        return
    click.echo(f"charlm {cfg.layers} x LSTM {cfg.hidden}, embed {cfg.embed}, vocab {cfg.vocab}, "
               f"batch {cfg.batch} x {cfg.seq_len}  threads={rec['threads']} (median of {cfg.steps} steps)")
    click.echo(f"seqtool  {rec['step_s'] * 1e3:10.2f} ms/step {rec['chars_per_s']:12,.0f} chars/s")
    if "ratio" in rec:
        click.echo(f"torch    {rec['torch_step_s'] * 1e3:10.2f} ms/step {rec['torch_chars_per_s']:12,.0f} chars/s")
        click.echo(f"ratio    {rec['ratio']:10.2f}x  (torch time / seqtool time; > 1: seqtool faster)")


def _shape(cfg) -> str:
    extra = {"rnn": f" {cfg.nonlinearity}", "gru": f" {cfg.gru_form}", "lstm": ""}[cfg.cell]
    return (f"{cfg.cell}{extra} T={cfg.seq_len} N={cfg.batch} D={cfg.input_size} H={cfg.hidden} "
            f"layers={cfg.layers}{' bidirectional' if cfg.bidirectional else ''}")


def _row(name, step_s, tokens_per_s, gflops) -> str:
    return (f"{name:<8} {step_s * 1e3:10.2f} ms/step {tokens_per_s:12,.0f} tokens/s "
            f"{gflops:8.2f} GFLOP/s")


def _text(rec, cfg) -> list[str]:
    lines = [f"{_shape(cfg)}  threads={rec['threads']} device={rec['device']} "
             f"(median of {cfg.steps} steps)",
             _row("seqtool", rec["step_s"], rec["tokens_per_s"], rec["gflops"])]
    if "torch_step_s" in rec:
        lines.append(_row("torch", rec["torch_step_s"], rec["torch_tokens_per_s"], rec["torch_gflops"]))
        lines.append(f"ratio    {rec['ratio']:10.2f}x  (torch time / seqtool time; > 1: seqtool faster)")
    if "matmul_gflops" in rec:
        lines.append(f"matmul   {rec['matmul_gflops']:10.1f} GFLOP/s  (NumPy float32 1024^3; "
                     f"this step reaches {100 * rec['fraction_of_peak']:.1f}% of it)")
    return lines
