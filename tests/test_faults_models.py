"""Fault suite, model files: every command that reads a model, given a broken one.

Each case: the real command in a child process, one error line naming the problem, exit 1, no
traceback, and no file changed or created (the broken file included).
"""

import pytest

from faultkit import BAD_MODELS, run_fault, write_bad_model

# Commands that read MODEL, as argument lists around it ({m}: the model, {t}: a text file).
READERS = {
    "info": ["info", "{m}"],
    "sample": ["sample", "{m}", "--length", "5"],
    "predict": ["predict", "{m}", "{t}"],
    "eval": ["eval", "{m}", "{t}"],
    "resume": ["train", "charlm", "{t}", "-o", "out.model", "--steps", "3", "--resume", "{m}"],
}
# info reads every kind; the other readers share the same loader, so a spread of kinds each.
CASES = [("info", kind) for kind in BAD_MODELS] + [
    (cmd, kind) for cmd in ("sample", "predict", "eval", "resume")
    for kind in ("empty", "random-bytes", "truncated-half", "flipped-tensor-byte", "future-version",
                 "header-not-json")
]


def _args(cmd, model, text):
    return [a.format(m=model, t=text) for a in READERS[cmd]]


@pytest.mark.parametrize("cmd,kind", CASES)
def test_broken_model_file(kit, tmp_path, cmd, kind):
    bad, needle = write_bad_model(tmp_path, kit.charlm, kind)
    if cmd == "eval" and kind == "empty":
        needle = "t.txt:1"  # an empty file is an empty event list: the reference is then wrong
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be\n")
    run_fault(_args(cmd, bad.name, text.name), tmp_path, 1, needle, watch=[kit.root])


@pytest.mark.parametrize("cmd", ["info", "sample", "predict", "eval"])
@pytest.mark.parametrize("what", ["missing", "directory"])
def test_model_path_is_not_a_file(kit, tmp_path, cmd, what):
    (tmp_path / "adir").mkdir()
    (tmp_path / "t.txt").write_text("abc\n")
    name = "nowhere.model" if what == "missing" else "adir"
    r = run_fault(_args(cmd, name, "t.txt"), tmp_path, 1 if what == "missing" else 2,
                  ours=None, watch=[kit.root])
    assert name in r.stderr


@pytest.mark.parametrize("cmd,other", [("sample", "seq2seq"), ("sample", "sed"), ("sample", "genre"),
                                       ("resume", "genre")])
def test_model_of_another_task(kit, tmp_path, cmd, other):
    (tmp_path / "t.txt").write_text("abc def\n" * 50)
    run_fault(_args(cmd, getattr(kit, other), "t.txt"), tmp_path, 1, f"is a {other} model",
              watch=[kit.root])


def test_checkpoint_copied_with_a_renamed_array(kit, tmp_path):
    # A well-formed file whose arrays are not the model's: the loader names the mismatch.
    import numpy as np

    from seqtool.io.modelfile import load_model, save_model

    arrays, meta = load_model(kit.charlm)
    name = sorted(k for k in arrays if not k.startswith("optim/"))[0]
    arrays["renamed"] = arrays.pop(name)
    save_model(tmp_path / "odd.model", arrays, meta)
    r = run_fault(["sample", "odd.model", "-n", "3"], tmp_path, 1, watch=[kit.root])
    assert "odd.model" in r.stderr
    assert np.isfinite(arrays["renamed"]).all()
