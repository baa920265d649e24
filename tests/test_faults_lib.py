"""Fault suite, library: the checks the commands rely on, called directly (Python API users get
the same one-line errors): dtypes, memory estimates, outputs that must not be written, the
output lock, stale temporary files, sed metrics on absurd offsets."""

import os
import subprocess
import tracemalloc

import numpy as np
import pytest

from seqtool.core import memory
from seqtool.io import fileio
from seqtool.errors import SeqtoolError, UsageError


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_float64_input_to_a_float32_layer_names_both_dtypes(cell):
    from seqtool import nn

    layer = getattr(nn, cell)(3, 4)
    with pytest.raises(SeqtoolError, match=r"expected input of dtype float32 .* but found float64") as e:
        layer(np.zeros((5, 2, 3)))
    assert "\n" not in str(e.value) and cell in str(e.value)


def test_float64_state_to_a_float32_lstm_names_both_dtypes():
    from seqtool import nn

    layer = nn.LSTM(3, 4)
    x = np.zeros((5, 2, 3), np.float32)
    h0, c0 = np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4))
    with pytest.raises(SeqtoolError, match=r"initial state of dtype float32 .* found float64"):
        layer(x, (h0, c0))


def test_a_float64_layer_takes_float64_input():
    from seqtool import nn

    y, _ = nn.GRU(3, 4, dtype=np.float64)(np.ones((5, 2, 3)))
    assert y.dtype == np.float64 and y.shape == (5, 2, 4)


# ----------------------------------------------------------------------------- memory


def test_require_memory_says_what_needs_how_much(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: 24 * 2 ** 30)
    monkeypatch.setattr(memory, "available_memory", lambda: 24 * 2 ** 30)
    with pytest.raises(SeqtoolError) as e:
        memory.require_memory(298 * 2 ** 30, "--hidden 100000")
    assert str(e.value) == "--hidden 100000 needs ~298 GiB; this machine has 24 GiB"
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * 2 ** 30)
    with pytest.raises(SeqtoolError, match=r"needs ~5 GiB; this machine has 24 GiB \(3 GiB available\)$"):
        memory.require_memory(5 * 2 ** 30, "a scene")
    memory.require_memory(2 * 2 ** 30, "a small thing")  # fits: no error


def test_recurrent_parameter_count_matches_the_layers():
    from seqtool import nn

    for cell, cls in (("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)):
        layer = cls(5, 7, num_layers=3, bidirectional=True)
        assert memory.recurrent_param_count(cell, 5, 7, 3, True) == sum(p.size for p in layer.parameters())


@pytest.mark.parametrize("make", [
    lambda nn: nn.LSTM(4, 100000),
    lambda nn: nn.GRU(512, 512, num_layers=10 ** 6),
    lambda nn: nn.Embedding(58, 10 ** 9),
    lambda nn: nn.Linear(10 ** 6, 10 ** 6),
])
def test_absurd_layers_are_refused_before_allocating(make):
    from seqtool import nn

    tracemalloc.start()
    try:
        with pytest.raises(SeqtoolError, match=r"needs ~[0-9.]+ [GTPE]iB; this machine has"):
            make(nn)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2 ** 20


# ----------------------------------------------------------------------------- outputs


def test_check_output_refuses_an_input(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abc")
    with pytest.raises(UsageError, match=r"-o .*t.txt is also an input"):
        fileio.check_output(text, inputs=[tmp_path / "other.txt", text])
    os.link(text, tmp_path / "hard.txt")  # the same file under another name
    with pytest.raises(UsageError, match="is also an input"):
        fileio.check_output(tmp_path / "hard.txt", inputs=[str(text)], force=True)


def test_check_output_refuses_a_file_of_another_kind_unless_forced(tmp_path, kit):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(UsageError, match=r"notes.txt exists and is not a seqtool model file; use --force"):
        fileio.check_output(notes, kind="model")
    with pytest.raises(UsageError, match=r"--png .*notes.txt exists and is not a PNG image"):
        fileio.check_output(notes, kind="png", option="--png")
    fileio.check_output(notes, kind="model", force=True)
    fileio.check_output(kit.charlm, kind="model")  # a model may be replaced by a model
    fileio.check_output(tmp_path / "new.model")  # a new file
    fileio.check_output("-", inputs=["-"])  # stdout
    with pytest.raises(SeqtoolError, match="does not exist"):
        fileio.check_output(tmp_path / "no" / "m.model")
    assert notes.read_text() == "my notes"


def test_output_lock_refuses_a_second_writer_and_is_released(tmp_path):
    out = tmp_path / "m.model"
    code = ("import sys; from seqtool.io.fileio import output_lock\n"
            "with output_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()\n")
    holder = subprocess.Popen([os.sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SeqtoolError, match=r"m.model is being written by another seqtool process"):
            with fileio.output_lock(out):
                pass
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    with fileio.output_lock(out):  # free again
        assert (tmp_path / ".m.model.lock").exists()
    assert not (tmp_path / ".m.model.lock").exists()
    assert not out.exists()


def test_remove_stale_temps_keeps_live_writers(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    dead = tmp_path / f".m.model.{p.pid}.3.tmp"
    live = tmp_path / f".m.model.{os.getppid()}.0.tmp"
    unrelated = tmp_path / f".m.model.x.tmp"
    for f in (dead, live, unrelated):
        f.write_bytes(b"x")
    assert fileio.remove_stale_temps(tmp_path / "m.model") == [str(dead)]
    assert live.exists() and unrelated.exists()


# ----------------------------------------------------------------------------- sed metrics


def test_segment_metrics_of_an_offset_of_1e9_seconds_stay_small():
    from seqtool.data.events import Event
    from seqtool.metrics.sed import segment_based

    ref = [Event("a.wav", 0.0, 1e9, "beep"), Event("a.wav", 10.5, 12.2, "buzz")]
    est = [Event("a.wav", 0.0, 5e8, "beep"), Event("a.wav", 11.0, 11.5, "buzz")]
    tracemalloc.start()
    try:
        m = segment_based(ref, est, ["beep", "buzz"], 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2 ** 20
    # beep: 5e8 of 1e9 segments found; buzz: segments 10, 11, 12 in the reference, 11 found
    assert m["class_wise"]["beep"]["recall"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx((5e8 + 1) / (1e9 + 3))
    assert m["precision"] == 1.0
