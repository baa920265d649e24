"""Ctrl-C during training, with real signals: the step finishes, a checkpoint is saved, exit 130,
and resuming gives the uninterrupted run's weights bit for bit (as after SIGKILL or a normal stop)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.cli.main import cli
from seqtool.training.interrupt import deferred_interrupts
from seqtool.io.modelfile import load_checkpoint
from signals import ctrl_c, default_sigint, wait_for_file

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "tiny-shakespeare.txt")
# Two layers with dropout: every step draws from the RNG, so a wrong RNG state would show.
NET = ["--hidden", "16", "--layers", "2", "--dropout", "0.2", "--embed", "8", "--batch", "4",
       "--seq-len", "16", "--seed", "3"]


def _start(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "seqtool.cli.main", "train", "charlm", SAMPLE, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint,
                            # the parent's thread count: runs compared bit for bit must round alike
                            env={**os.environ, **(env or {})})


def _train(args):
    r = CliRunner().invoke(cli, ["train", "charlm", SAMPLE, "-q", *args])
    assert r.exit_code == 0, r.output
    return load_checkpoint(args[args.index("-o") + 1])


def _assert_same_weights(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


def test_flag_instead_of_exception_then_handler_restored():
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with deferred_interrupts(first_notice=None) as flag:
            assert not flag.requested
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs at the next bytecode boundary
            assert flag.requested
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def test_ignored_sigint_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupts() as flag:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert not flag.requested
    finally:
        signal.signal(signal.SIGINT, before)


def _interrupt_after_checkpoint(out, extra=()):
    """Train with a checkpoint every 5 steps; Ctrl-C once the first is there. -> (proc, stderr)"""
    proc = _start(["-o", out, "--steps", "100000", "--checkpoint-every", "5", *NET, *extra])
    wait_for_file(out, proc)
    time.sleep(0.2)  # somewhere in a later step
    return proc, ctrl_c(proc)


def test_ctrl_c_saves_and_resumes_exactly(tmp_path):
    out = str(tmp_path / "int.st")
    proc, err = _interrupt_after_checkpoint(out)
    assert proc.returncode == 130, err
    k = load_checkpoint(out).training_state["step"]
    assert f"interrupted at step {k}; checkpoint saved to {out} (resume with --resume {out})" in err
    assert "Traceback" not in err and "SystemError" not in err
    n = k + 7
    straight = _train(["-o", str(tmp_path / "straight.st"), "--steps", str(n), *NET])
    resumed = _train(["-o", out, "--resume", out, "--steps", str(n), *NET])
    assert resumed.training_state["step"] == straight.training_state["step"] == n
    assert resumed.training_state["data"] == straight.training_state["data"]
    _assert_same_weights(resumed, straight)


def test_sigkill_and_normal_stop_resume_exactly(tmp_path):
    killed = str(tmp_path / "killed.st")
    proc = _start(["-o", killed, "--steps", "100000", "--checkpoint-every", "3", *NET])
    try:
        wait_for_file(killed, proc)
        time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    k = load_checkpoint(killed).training_state["step"]
    n = k + 5
    straight = _train(["-o", str(tmp_path / "straight.st"), "--steps", str(n), *NET])
    _assert_same_weights(_train(["-o", killed, "--resume", killed, "--steps", str(n), *NET]), straight)
    stopped = str(tmp_path / "stopped.st")
    _train(["-o", stopped, "--steps", str(k), *NET])
    _assert_same_weights(_train(["-o", stopped, "--resume", stopped, "--steps", str(n), *NET]), straight)


def test_ctrl_c_in_the_first_step_leaves_a_model(tmp_path):
    out = str(tmp_path / "m.st")
    proc = _start(["-o", out, "--steps", "100000", *NET])
    for line in proc.stderr:  # the parameter count is printed just before the first step
        if line.startswith("training charlm"):
            break
    err = ctrl_c(proc)
    assert proc.returncode == 130, err
    assert "checkpoint saved to" in err and "Traceback" not in err
    assert load_checkpoint(out).training_state["step"] >= 1


def test_second_ctrl_c_aborts_at_once_keeping_the_last_checkpoint(tmp_path):
    out = str(tmp_path / "m.st")
    # Steps of a few tenths of a second or more: the first Ctrl-C goes right after a periodic
    # checkpoint (a step has just begun) and the second as soon as the first is acknowledged,
    # so it lands while the step is still running.
    big = ["--hidden", "384", "--layers", "2", "--batch", "32", "--seq-len", "128", "--seed", "0"]
    proc = _start(["-o", out, "--steps", "100000", "--checkpoint-every", "2", *big])
    wait_for_file(out, proc)
    err = ctrl_c(proc, times=2, timeout=60, again_after="finishing the current step")
    assert proc.returncode == 130, err
    assert "aborted without saving" in err and "Traceback" not in err
    assert "checkpoint saved" not in err
    assert load_checkpoint(out).training_state["step"] % 2 == 0  # a periodic one, complete


def test_ctrl_c_after_the_save_still_ends_with_one_line_and_130():
    """The first Ctrl-C saved; another one while the command is exiting must not become a
    KeyboardInterrupt in the exit path (which ends the process by SIGINT, or with a traceback)."""
    script = """if True:
        import os, signal, time
        from seqtool.training.interrupt import deferred_interrupts
        with deferred_interrupts(first_notice=None, ending_notice="interrupted again: exiting") as f:
            os.kill(os.getpid(), signal.SIGINT)
            while not f.requested:
                time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        print("not reached")
    """
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                       preexec_fn=default_sigint)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == "seqtool: interrupted again: exiting" and r.stdout == ""


@pytest.mark.parametrize("budget", ["2"])
def test_compilation_does_not_count_against_the_time_budget(tmp_path, budget):
    """A cold kernel cache: the message appears and the 2 s budget still trains after compiling."""
    out = str(tmp_path / "m.st")
    proc = _start(["-o", out, "--time-budget", budget, *NET],
                  env={"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "compiling kernels (first run only, ~" in err
    ck = load_checkpoint(out)
    # compiling takes far more than 2 s here; had it counted, the run would stop after 1 step
    assert ck.training_state["step"] > 5, err
