"""Model files: round trip, every kind of damage caught as one SeqtoolError, atomic writes."""

import json
import os
import struct

import numpy as np
import pytest

from seqtool.errors import SeqtoolError
from seqtool.io.fileio import atomic_open, atomic_write_bytes, open_input, read_text
from seqtool.io.modelfile import (
    FORMAT_VERSION, OPTIM_PREFIX, load_checkpoint, load_model, parameter_count, read_meta,
    save_checkpoint, save_model,
)


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "rnn.weight_ih_l0": rng.standard_normal((8, 3)).astype(np.float32),
        "rnn.bias_ih_l0": rng.standard_normal(8),  # float64
        "embedding/ids": np.arange(5, dtype=np.int64),
        "flags": np.array([True, False]),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def _meta(task="charlm"):
    return {
        "task": task,
        "config": {"cell": "lstm", "hidden": 8, "layers": 1},
        "vocab": {"chars": list("ab\n é")},
        "history": {"steps": 10, "best_val_loss": 1.25, "val_loss": [[5, 1.5], [10, 1.25]]},
    }


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.seqtool"
    save_model(path, _arrays(), _meta())
    return path


def test_round_trip_keeps_names_dtypes_shapes_values_and_meta(model):
    arrays, meta = load_model(model, expect_task="charlm")
    want = _arrays()
    assert set(arrays) == set(want)
    for name, a in want.items():
        assert arrays[name].dtype == a.dtype, name
        assert arrays[name].shape == a.shape, name
        np.testing.assert_array_equal(arrays[name], a)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["vocab"] == {"chars": list("ab\n é")}
    assert meta["history"]["val_loss"] == [[5, 1.5], [10, 1.25]]
    assert "sha256" not in meta


def test_big_endian_and_strided_arrays_are_stored_by_value(tmp_path):
    a = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    save_model(tmp_path / "m", {"a": a}, _meta())
    arrays, _ = load_model(tmp_path / "m")
    np.testing.assert_array_equal(arrays["a"], a)


def test_file_is_plain_safetensors_with_seqtool_json(model):
    from safetensors import safe_open

    with safe_open(str(model), framework="np") as f:
        meta = json.loads(f.metadata()["seqtool"])
        assert meta["task"] == "charlm"
        assert len(meta["sha256"]) == 64
    assert b"pickle" not in model.read_bytes()


def test_save_rejects_bad_names_dtypes_and_meta(tmp_path):
    p = tmp_path / "m"
    with pytest.raises(ValueError, match="dtype"):
        save_model(p, {"x": np.array(["a"], dtype=object)}, _meta())
    with pytest.raises(ValueError, match="name"):
        save_model(p, {"__metadata__": np.zeros(1)}, _meta())
    with pytest.raises(TypeError, match="numpy array"):
        save_model(p, {"x": [1.0, 2.0]}, _meta())
    with pytest.raises(ValueError, match="task"):
        save_model(p, {}, {"task": "nope", "config": {}})
    with pytest.raises(TypeError, match="JSON"):
        save_model(p, {}, {**_meta(), "history": {"when": object()}})
    assert not p.exists()


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.3, 0.6, 0.95, 0.999])
def test_truncated_file_is_one_clear_error(model, tmp_path, fraction):
    data = model.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SeqtoolError) as err:
        load_model(cut)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(cut) in msg
    assert any(w in msg for w in ("truncated", "empty", "too short")), msg


def test_every_data_byte_flip_is_caught(model):
    data = bytearray(model.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start = 8 + n
    # Flip a bit in several tensors' bytes: the file still parses, only the checksum notices.
    for pos in range(start, len(data), 7):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        model.write_bytes(bytes(flipped))
        with pytest.raises(SeqtoolError, match="checksum"):
            load_model(model)
    model.write_bytes(bytes(data))
    load_model(model)  # and the original is still fine


def test_tampered_metadata_is_caught(model):
    data = model.read_bytes()
    tampered = data.replace(b"1.25", b"1.26", 1)
    assert tampered != data and len(tampered) == len(data)
    model.write_bytes(tampered)
    with pytest.raises(SeqtoolError, match="checksum"):
        load_model(model)


def test_trailing_bytes_are_refused(model):
    model.write_bytes(model.read_bytes() + b"\0\0")
    with pytest.raises(SeqtoolError, match="unexpected bytes"):
        load_model(model)


def test_wrong_task_names_both_tasks(model):
    with pytest.raises(SeqtoolError) as err:
        load_model(model, expect_task="genre")
    assert str(err.value) == f"{model} is a charlm model; this command needs a genre model"
    load_model(model, expect_task=("genre", "charlm"))  # any of several is fine


def _rewrite_meta(path, change):
    """Write a valid safetensors file whose seqtool JSON was edited (as a newer seqtool might)."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(str(path), framework="np") as f:
        meta = json.loads(f.metadata()["seqtool"])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    change(meta)
    path.write_bytes(save(arrays, metadata={"seqtool": json.dumps(meta)}))


def test_newer_format_version_asks_to_upgrade(model):
    _rewrite_meta(model, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(SeqtoolError, match="newer seqtool.*upgrade"):
        load_model(model)


@pytest.mark.parametrize("content", [b"", b"hello", b"hello world, this is text\n" * 10,
                                     b"PK\x03\x04" + bytes(100)])
def test_not_a_model_file(tmp_path, content):
    p = tmp_path / "x.txt"
    p.write_bytes(content)
    with pytest.raises(SeqtoolError, match="not a seqtool model file|empty"):
        load_model(p)


def test_plain_safetensors_without_seqtool_metadata(tmp_path):
    from safetensors.numpy import save

    p = tmp_path / "other.safetensors"
    p.write_bytes(save({"w": np.zeros(3)}))
    with pytest.raises(SeqtoolError, match="safetensors file but not a seqtool model"):
        load_model(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SeqtoolError, match="no such file"):
        load_model(tmp_path / "nope")
    with pytest.raises(SeqtoolError, match="is a directory"):
        load_model(tmp_path)


def test_read_meta_needs_no_tensors(model):
    assert read_meta(model)["config"]["hidden"] == 8
    with pytest.raises(SeqtoolError, match="this command needs a sed model"):
        read_meta(model, expect_task="sed")


def test_checkpoint_resumes_optimizer_and_rng_exactly(tmp_path):
    rng = np.random.default_rng(123)
    rng.random(10)
    optim = {"exp_avg.0": np.ones((8, 3), np.float32), "exp_avg_sq.0": np.full((8, 3), 2.0, np.float32)}
    p = tmp_path / "ck"
    save_checkpoint(p, _arrays(), _meta(), optim_arrays=optim,
                    optim_state={"type": "Adam", "lr": 0.01, "step.0": 7}, rng=rng,
                    training_state={"step": 100, "epoch": 2})
    expected_next = rng.random(5)

    ck = load_checkpoint(p, expect_task="charlm")
    assert set(ck.arrays) == set(_arrays())  # optimizer arrays are kept apart
    assert set(ck.optim_arrays) == set(optim)
    np.testing.assert_array_equal(ck.optim_arrays["exp_avg_sq.0"], optim["exp_avg_sq.0"])
    assert ck.optim_state == {"type": "Adam", "lr": 0.01, "step.0": 7}
    assert ck.optimizer_state_dict["scalars"]["step.0"] == 7
    assert ck.training_state["step"] == 100
    np.testing.assert_array_equal(ck.rng.random(5), expected_next)

    arrays, _ = load_model(p)
    assert any(k.startswith(OPTIM_PREFIX) for k in arrays)
    assert parameter_count(arrays) == sum(a.size for a in _arrays().values())


def test_plain_model_loads_as_checkpoint_without_state(model):
    ck = load_checkpoint(model)
    assert ck.optim_arrays == {} and ck.rng is None


# ----------------------------------------------------------------------------- fileio


def test_atomic_open_keeps_old_file_when_writing_fails_midway(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old contents")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("new half")
            raise RuntimeError("disk on fire")
    assert p.read_text() == "old contents"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temp file left behind


def test_save_model_failure_keeps_old_model(model, monkeypatch):
    before = model.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, {"w": np.zeros(3)}, _meta("sed"))
    assert model.read_bytes() == before
    assert os.listdir(model.parent) == [model.name]


def test_atomic_write_replaces_and_keeps_permissions(tmp_path):
    p = tmp_path / "out.bin"
    p.write_bytes(b"old")
    os.chmod(p, 0o640)
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert os.stat(p).st_mode & 0o777 == 0o640


def test_missing_output_directory_message(tmp_path):
    target = tmp_path / "no" / "such" / "m.seqtool"
    with pytest.raises(SeqtoolError) as err:
        save_model(target, {}, _meta())
    assert str(err.value) == f"cannot write {target}: directory {target.parent} does not exist"


def test_output_path_is_a_directory(tmp_path):
    with pytest.raises(SeqtoolError, match="it is a directory"):
        atomic_write_bytes(tmp_path, b"x")


def test_read_text_reports_offset_of_bad_utf8(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("abc caf".encode() + b"\xe9 ok")
    with pytest.raises(SeqtoolError) as err:
        read_text(p)
    msg = str(err.value)
    assert "not valid UTF-8" in msg and "0xe9" in msg and "offset 7" in msg and "iconv" in msg
    assert read_text(p, encoding="latin-1") == "abc café ok"


def test_open_input_errors(tmp_path):
    with pytest.raises(SeqtoolError, match="cannot read .*: no such file"):
        open_input(tmp_path / "missing.txt")
    with pytest.raises(SeqtoolError, match="it is a directory"):
        open_input(tmp_path)


def test_dash_reads_stdin_and_leaves_it_open(monkeypatch):
    import io
    import sys

    stdin = io.TextIOWrapper(io.BytesIO("héllo\nworld\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    with open_input("-") as f:
        assert f.read() == "héllo\nworld\n"
    assert not stdin.buffer.closed
    with open_input("-", binary=True) as f:
        assert f.read() == b""  # the same stream, already consumed
    assert not stdin.buffer.closed

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xffx"), encoding="utf-8"))
    with pytest.raises(SeqtoolError, match="<stdin> is not valid UTF-8: byte 0xff at offset 0"):
        read_text("-")
