"""The seqtool group: lazy subcommands, help, exit codes and messages; shared options; info."""

import importlib.util
import json
import subprocess
import sys
import time

import click
import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.cli.main import COMMANDS, SIGPIPE_EXIT, LazyGroup, cli
from seqtool.cli.options import Reporter, common_options, emit_json, train_options
from seqtool.errors import SeqtoolError, UsageError
from seqtool.io.modelfile import save_checkpoint, save_model


def _run(*args, **kw):
    return CliRunner().invoke(cli, list(args), **kw)


def _exists(name):
    return importlib.util.find_spec(COMMANDS[name][0]) is not None


# ----------------------------------------------------------------------------- help and laziness


def test_group_help_lists_installed_commands_with_help_from_the_map():
    r = _run("--help")
    assert r.exit_code == 0, r.output
    assert "Usage: seqtool" in r.stdout
    for name, (_, _, short) in COMMANDS.items():
        if _exists(name):
            assert f"{name}  " in r.stdout or f"{name} " in r.stdout
            assert short in r.stdout
        else:
            assert short not in r.stdout  # not installed: not advertised


def test_version():
    r = _run("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == "seqtool 0.1.0"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_installed_subcommand_has_help(name):
    if not _exists(name):
        pytest.skip(f"{COMMANDS[name][0]} not written yet")
    r = _run(name, "--help")
    assert r.exit_code == 0, r.output
    assert f"seqtool {name}" in r.stdout


def test_import_does_not_load_numba_and_help_is_fast():
    code = "import sys, seqtool.cli.main; print('numba' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

    cmd = [sys.executable, "-c", "from seqtool.cli.main import cli; cli()", "--help"]
    subprocess.run(cmd, capture_output=True, check=True)  # warm the bytecode cache
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(f"seqtool --help took {wall:.3f} s (target < 0.3 s)")
    assert out.returncode == 0 and "Commands:" in out.stdout
    assert wall < 1.0  # soft bound: 2 shared cores; the target above is printed


def test_missing_module_breaks_nothing_else():
    group = LazyGroup("t", lazy_commands={
        "ghost": ("seqtool.cli.no_such_module", "ghost", "Not there."),
        "info": COMMANDS["info"],
    })
    r = CliRunner().invoke(group, ["--help"])
    assert r.exit_code == 0, r.output
    assert "info" in r.stdout and "ghost" not in r.stdout
    assert CliRunner().invoke(group, ["info", "--help"]).exit_code == 0
    r = CliRunner().invoke(group, ["ghost"])
    assert r.exit_code == 2
    assert "No such command 'ghost'" in r.stderr


def test_unknown_command_is_a_usage_error():
    r = _run("frobnicate")
    assert r.exit_code == 2
    assert "No such command" in r.stderr


# ----------------------------------------------------------------------------- error policy


@pytest.fixture
def with_command(monkeypatch):
    """Register a test-only command on the real group (undone after the test)."""
    def register(fn):
        cmd = click.command(name="t")(fn)
        monkeypatch.setitem(cli.commands, "t", cmd)
        return cmd
    return register


def test_seqtool_error_is_one_line_exit_1(with_command):
    @with_command
    def t():
        raise SeqtoolError("data.txt line 3: bad thing\nsecond line")

    r = _run("t")
    assert r.exit_code == 1
    assert r.stderr == "seqtool: error: data.txt line 3: bad thing second line\n"
    assert r.stdout == ""
    assert "Traceback" not in r.output


def test_usage_error_exits_2(with_command):
    @with_command
    def t():
        raise UsageError("--hidden must be positive")

    r = _run("t")
    assert r.exit_code == 2
    assert r.stderr == "seqtool: error: --hidden must be positive\n"


def test_click_usage_error_exits_2(with_command):
    @with_command
    @click.argument("x", type=int)
    def t(x):
        pass

    r = _run("t", "notanint")
    assert r.exit_code == 2
    assert "Invalid value" in r.stderr


def test_keyboard_interrupt_exits_130(with_command):
    @with_command
    def t():
        click.echo("partial")
        raise KeyboardInterrupt

    r = _run("t")
    assert r.exit_code == 130
    assert r.stderr.strip() == "seqtool: interrupted"
    assert "Aborted" not in r.output


def test_broken_pipe_under_clirunner_is_quiet(with_command):
    @with_command
    def t():
        raise BrokenPipeError(32, "Broken pipe")

    r = _run("t")
    assert r.exit_code == SIGPIPE_EXIT
    assert r.stderr == ""


def test_other_exceptions_are_bugs_and_keep_their_traceback(with_command):
    @with_command
    def t():
        raise ValueError("a bug")

    r = _run("t")
    assert r.exit_code == 1
    assert isinstance(r.exception, ValueError)


def test_broken_pipe_in_a_real_pipe_exits_quietly():
    script = (
        "import click\n"
        "from seqtool.cli.main import cli\n"
        "@cli.command()\n"
        "def spew():\n"
        "    while True:\n"
        "        click.echo('x' * 100)\n"
        "cli()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script, "spew"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(1000).startswith(b"x")
    p.stdout.close()  # like `| head` exiting
    rc = p.wait(timeout=30)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert rc == SIGPIPE_EXIT
    assert err == ""


# ----------------------------------------------------------------------------- shared options


@click.command()
@common_options
@train_options
def _opts(**kw):
    click.echo(json.dumps(kw))


def test_train_options_default_to_none_and_common_defaults():
    r = CliRunner().invoke(_opts, [])
    assert r.exit_code == 0, r.output
    kw = json.loads(r.stdout)
    assert kw.pop("device") == "cpu"
    assert kw.pop("json_output") is False and kw.pop("quiet") is False
    assert all(v is None for v in kw.values()), kw
    assert {"cell", "hidden", "layers", "bidirectional", "dropout", "optimizer", "lr", "clip_norm",
            "batch", "seq_len", "epochs", "steps", "time_budget", "patience", "checkpoint_every",
            "resume", "val_frac", "seed"} <= set(kw)


def test_train_options_parse():
    r = CliRunner().invoke(_opts, ["--cell", "gru", "--hidden", "64", "--no-bidirectional",
                                   "--time-budget", "5m", "--lr", "1e-3", "--json", "--seed", "7"])
    assert r.exit_code == 0, r.output
    kw = json.loads(r.stdout)
    assert (kw["cell"], kw["hidden"], kw["bidirectional"]) == ("gru", 64, False)
    assert kw["time_budget"] == 300.0 and kw["lr"] == 1e-3
    assert kw["json_output"] is True and kw["seed"] == 7


@pytest.mark.parametrize("args", [
    ["--hidden", "-3"], ["--hidden", "0"], ["--layers", "0"], ["--lr", "0"], ["--dropout", "1"],
    ["--batch", "-1"], ["--time-budget", "soon"], ["--time-budget", "-5"], ["--val-frac", "1.5"],
    ["--cell", "transformer"], ["--device", "tpu"], ["--resume", "/no/such/checkpoint"],
])
def test_bad_option_values_are_usage_errors(args):
    r = CliRunner().invoke(_opts, args)
    assert r.exit_code == 2, (args, r.output)
    assert r.stdout == ""


def test_emit_json_is_one_strict_line(capsys):
    emit_json({"loss": float("nan"), "acc": np.float32(0.5), "v": np.arange(2), "s": "é"})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"loss": None, "acc": 0.5, "v": [0, 1], "s": "é"}


def test_reporter_quiet_and_progress_off_terminal(capsys):
    loud, quiet = Reporter(), Reporter(quiet=True)
    loud.info("hello [not markup]")
    quiet.info("hidden")
    with loud.progress("training", total=3) as bar:  # pytest's stderr is not a terminal
        bar.advance()
    loud.emit({"x": 1})  # without --json, nothing
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "hello [not markup]" in captured.err and "hidden" not in captured.err
    assert "training" not in captured.err


# ----------------------------------------------------------------------------- info


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "lm.seqtool"
    arrays = {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.zeros(4, np.float32)}
    save_checkpoint(
        path, arrays,
        {"task": "charlm", "config": {"cell": "lstm", "layers": 2, "hidden": 4, "seq_len": 50},
         "vocab": {"chars": list("abcdefghij")},
         "history": {"steps": 120, "val_loss": [[50, 2.0], [100, 1.5], [120, 1.75]]}},
        optim_arrays={"exp_avg.0": np.zeros((4, 3), np.float32)}, rng=rng,
    )
    return path


def test_info_human(model):
    r = _run("info", str(model))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "task:          charlm" in out
    assert "LSTM, 2 layer(s) x 4 hidden" in out and "seq_len=50" in out
    assert "parameters:    16 in 2 arrays" in out  # optimizer arrays not counted
    assert "10: 'a', 'b'" in out and ", ..." in out
    assert "steps 120" in out and "best val loss 1.5000" in out
    assert "format version 1" in out and "checkpoint:" in out


def test_info_json(model):
    r = _run("info", str(model), "--json")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["task"] == "charlm" and d["parameters"] == 16 and d["format_version"] == 1
    assert d["vocab"]["chars"]["size"] == 10 and d["vocab"]["chars"]["first"][:2] == ["a", "b"]
    assert d["history"]["best_val_loss"] == 1.5 and d["history"]["steps"] == 120
    assert d["checkpoint"] is True


def test_info_plain_model_has_no_checkpoint_line(tmp_path):
    p = tmp_path / "g"
    save_model(p, {"w": np.zeros(3, np.float32)}, {"task": "genre", "config": {},
                                                  "labels": {"classes": ["jazz", "rock"]}})
    r = _run("info", str(p))
    assert r.exit_code == 0, r.output
    assert "genre" in r.stdout and "2: 'jazz', 'rock'" in r.stdout
    assert "checkpoint" not in r.stdout


def test_info_on_a_bad_file_is_one_line(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("not a model\n")
    r = _run("info", str(p))
    assert r.exit_code == 1
    assert r.stderr == f"seqtool: error: {p} is not a seqtool model file\n"
    r = _run("info", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "no such file" in r.stderr
