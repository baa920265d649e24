"""Fault suite, processes: SIGKILL in the middle of training then --resume (bit-exact), temporary
files a killed run leaves, and two runs writing the same model at once."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from faultkit import ENV, SEQTOOL, run, snapshot

SMALL = ["--hidden", 8, "--embed", 4, "--layers", 1, "--batch", 4, "--seq-len", 16, "--seed", 5, "-q"]


def _start(args, cwd):
    # A session of its own: the signal goes to the training process only.
    return subprocess.Popen(SEQTOOL + [str(a) for a in args], cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _checkpoint_step(path) -> int | None:
    from seqtool.errors import SeqtoolError
    from seqtool.io.modelfile import read_meta

    try:
        return int(read_meta(path)["training_state"]["step"])
    except (SeqtoolError, KeyError, TypeError):
        return None


def _wait_for_checkpoint(proc, path, min_step: int, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = _checkpoint_step(path) if os.path.exists(path) else None
        if step is not None and step >= min_step:
            return step
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of step {min_step} in {timeout} s")


def _arrays(path):
    from seqtool.io.modelfile import load_model

    return load_model(path)[0]


def test_sigkill_then_resume_is_bit_exact(kit, tmp_path):
    (tmp_path / "t.txt").write_bytes(kit.text.read_bytes())
    common = ["train", "charlm", "t.txt", *SMALL, "--checkpoint-every", 3]
    proc = _start([*common, "-o", "m.model", "--steps", 10 ** 6], tmp_path)
    try:
        _wait_for_checkpoint(proc, tmp_path / "m.model", 6)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    k = _checkpoint_step(tmp_path / "m.model")  # the last complete checkpoint survived the kill
    assert k is not None and k % 3 == 0
    target = k + 5
    r = run([*common, "-o", "m.model", "--resume", "m.model", "--steps", target], tmp_path)
    assert r.rc == 0, str(r)
    r = run([*common, "-o", "fresh.model", "--steps", target], tmp_path)
    assert r.rc == 0, str(r)
    resumed, fresh = _arrays(tmp_path / "m.model"), _arrays(tmp_path / "fresh.model")
    assert sorted(resumed) == sorted(fresh)
    for name in fresh:
        np.testing.assert_array_equal(resumed[name], fresh[name], err_msg=name)
    assert _checkpoint_step(tmp_path / "m.model") == target
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert not leftovers, leftovers


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_temporary_files_of_dead_writers_are_removed_by_the_next_write(kit, tmp_path):
    (tmp_path / "t.txt").write_bytes(kit.text.read_bytes())
    dead = _dead_pid()
    stale = tmp_path / f".m.model.{dead}.0.tmp"
    live = tmp_path / f".m.model.{os.getpid()}.0.tmp"  # a writer still at work: not ours to delete
    other = tmp_path / f".other.model.{dead}.0.tmp"  # another file's: left to its own next write
    for p in (stale, live, other):
        p.write_bytes(b"half a model")
    r = run(["train", "charlm", "t.txt", "-o", "m.model", *SMALL, "--steps", 2], tmp_path)
    assert r.rc == 0, str(r)
    assert not stale.exists()
    assert live.read_bytes() == b"half a model" and other.read_bytes() == b"half a model"


def test_a_second_writer_of_the_same_model_is_refused(kit, tmp_path):
    (tmp_path / "t.txt").write_bytes(kit.text.read_bytes())
    first = _start(["train", "charlm", "t.txt", "-o", "m.model", *SMALL, "--steps", 10 ** 6,
                    "--checkpoint-every", 50], tmp_path)
    try:
        _wait_for_checkpoint(first, tmp_path / "m.model", 50)
        before = snapshot(tmp_path)
        second = run(["train", "charlm", "t.txt", "-o", "m.model", *SMALL, "--steps", 3], tmp_path)
        assert first.poll() is None
    finally:
        first.kill()
        first.wait(timeout=60)
        first.stderr.close()
    assert second.rc == 1, str(second)
    assert "Traceback" not in second.stderr
    assert second.err_lines == [second.err_lines[-1]] and "another" in second.stderr
    after = {p: h for p, h in snapshot(tmp_path).items() if not p.endswith("m.model") and ".tmp" not in p}
    assert after == {p: h for p, h in before.items() if not p.endswith("m.model") and ".tmp" not in p}


# ---------------------------------------------------------------- Ctrl-C in commands with nothing to save


def _interrupted(args, cwd, stdin=subprocess.DEVNULL, before_signal=None):
    """Start seqtool ARGS, let `before_signal(proc)` run, send one Ctrl-C: (exit code, stdout, stderr)."""
    from signals import default_sigint

    proc = subprocess.Popen(SEQTOOL + [str(a) for a in args], cwd=cwd, env=ENV, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_sigint)
    try:
        first = before_signal(proc) if before_signal else ""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, first + out, err


def _assert_interrupted(code, err):
    assert code == 130, err
    assert err.strip() == "seqtool: interrupted", err  # one line, no traceback


def test_ctrl_c_while_predict_waits_for_input(kit, tmp_path):
    def one_line_then_wait(proc):
        proc.stdin.write("To be, or not to be\n")
        proc.stdin.flush()
        return proc.stdout.readline()  # the first answer is out; now it waits on stdin

    code, out, err = _interrupted(["predict", kit.charlm, "-"], tmp_path, subprocess.PIPE,
                                  one_line_then_wait)
    _assert_interrupted(code, err)
    assert float(out.splitlines()[0]) > 0  # what was printed before the Ctrl-C stays


def test_ctrl_c_while_predict_scores_a_long_line(kit, tmp_path):
    text = kit.text.read_text(encoding="utf-8").replace("\n", " ")
    # ~20 M characters: far longer than the 2 s before the Ctrl-C, even on a fast machine
    (tmp_path / "long.txt").write_text(text * (20_000_000 // len(text)) + "\n", encoding="utf-8")
    code, _, err = _interrupted(["predict", kit.charlm, "long.txt"], tmp_path,
                                before_signal=lambda proc: time.sleep(2) or "")
    _assert_interrupted(code, err)


def test_ctrl_c_while_sampling(kit, tmp_path):
    code, out, err = _interrupted(["sample", kit.charlm, "--length", 10 ** 9, "--stream"], tmp_path,
                                  before_signal=lambda proc: proc.stdout.read(200))
    _assert_interrupted(code, err)
    assert len(out) >= 200


def test_ctrl_c_while_evaluating(kit, tmp_path):
    text = kit.text.read_text(encoding="utf-8")
    (tmp_path / "big.txt").write_text(text * (20_000_000 // len(text)), encoding="utf-8")
    code, _, err = _interrupted(["eval", kit.charlm, "big.txt"], tmp_path,
                                before_signal=lambda proc: time.sleep(2) or "")
    _assert_interrupted(code, err)
