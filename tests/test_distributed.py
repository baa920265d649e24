"""Data-parallel training: batch slices and their loss weights (always), and ``mpiexec -n 2``
against one process with the same global batch for every task (when mpi4py and mpiexec exist)."""

import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.cli.main import cli
from seqtool.training.distributed import launched_by_mpi, split_bounds, split_items
from seqtool.io.modelfile import load_checkpoint
from signals import ctrl_c, default_sigint, wait_for_file

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "tiny-shakespeare.txt")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def _has_mpi4py():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


needs_mpi = pytest.mark.skipif(MPIEXEC is None or not _has_mpi4py(),
                               reason="needs the mpi extra (pip install -e .[mpi]): mpi4py and mpiexec")


# ---------------------------------------------------------------- without MPI


def test_bounds_cover_every_item_once_in_near_equal_parts():
    for n in range(0, 12):
        for parts in range(1, 5):
            b = split_bounds(n, parts)
            assert b[0][0] == 0 and b[-1][1] == n and all(b[i][1] == b[i + 1][0] for i in range(parts - 1))
            sizes = [hi - lo for lo, hi in b]
            assert max(sizes) - min(sizes) <= 1


def test_split_items_slices_each_element_along_its_axis():
    x, lengths = np.arange(2 * 5 * 3).reshape(2, 5, 3), np.arange(5)
    parts = split_items((x, lengths, None), (1, 0, None), 2)
    assert [p[1].tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], axis=1), x)
    assert parts[0][2] is None


def test_mpi_launch_is_read_from_the_environment():
    assert not launched_by_mpi({"PATH": "/bin"})
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        assert launched_by_mpi({var: "0"})


def test_plain_training_never_imports_mpi4py(tmp_path):
    code = ("import sys; from seqtool.cli.main import cli; sys.argv = ['seqtool', 'train', 'charlm', "
            f"{SAMPLE!r}, '-o', {str(tmp_path / 'm.st')!r}, '--steps', '2', '--hidden', '8', '-q']\n"
            "try:\n    cli()\nexcept SystemExit:\n    pass\nprint('mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "False", r.stderr


# ---------------------------------------------------------------- data for each task


def _genre_data(d):
    rng = np.random.default_rng(5)
    lines = []
    for i in range(30):
        kind = ("steps", "leaps")[i % 2]
        n = int(rng.integers(20, 70))
        steps = rng.choice([-2, -1, 1, 2] if kind == "steps" else [-9, -7, 7, 9, 12, -12], n)
        durs = np.full(n, 0.5) if kind == "steps" else np.where(np.arange(n) % 2 == 0, 1.5, 0.5)
        pitches = np.clip(64 + np.cumsum(steps), 40, 90)
        onsets = np.concatenate([[0], np.cumsum(durs)[:-1]])
        notes = [[float(o), float(t), int(p), 0] for o, t, p in zip(onsets, durs, pitches)]
        lines.append(json.dumps({"id": f"s{i}", "label": kind, "n_parts": 1, "notes": notes}))
    path = d / "scores.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return [str(path)]


def _seq2seq_data(d):
    r = random.Random(0)
    lines = []
    for _ in range(300):
        s = [r.choice("abcdefgh") for _ in range(r.randint(2, 7))]
        lines.append(" ".join(s) + "\t" + " ".join(reversed(s)))
    path = d / "rev.tsv"
    path.write_text("\n".join(lines) + "\n")
    return [str(path)]


def _sed_data(d):
    from seqtool.data.audio import write_wav

    sr, rng = 16000, np.random.default_rng(0)
    clips = d / "clips"
    clips.mkdir()
    for k, seconds in enumerate((0.4, 0.7, 1.0)):
        t = np.arange(int(seconds * sr)) / sr
        write_wav(clips / f"beep{k:03d}.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), sr)
        write_wav(clips / f"buzz{k:03d}.wav", (0.3 * np.sign(np.sin(2 * np.pi * 200 * t))).astype(np.float32), sr)
    r = CliRunner().invoke(cli, ["synth-scenes", str(clips), "-o", str(d / "scenes"), "-n", "6",
                                 "--duration", "6", "--events-per-class", "2", "--seed", "1", "-q"])
    assert r.exit_code == 0, r.output
    return [str(d / "scenes"), str(d / "scenes" / "ground_truth.tsv")]


# Unequal slices (odd batches) on purpose: the loss weights must make them add up.
TASKS = {
    "charlm": (lambda d: [SAMPLE], ["--hidden", "16", "--layers", "2", "--embed", "8", "--batch", "5",
                                    "--seq-len", "16", "--dropout", "0"]),
    "genre": (_genre_data, ["--hidden", "16", "--layers", "1", "--batch", "7", "--seq-len", "24",
                            "--val-frac", "0.2", "--dropout", "0"]),
    "seq2seq": (_seq2seq_data, ["--hidden", "16", "--embed", "8", "--batch", "9", "--dropout", "0"]),
    "sed": (_sed_data, ["--hidden", "16", "--layers", "1", "--seq-len", "48", "--batch", "5",
                        "--val-frac", "0.2", "--dropout", "0"]),
}


def test_slices_weighted_add_up_to_the_whole_batch_loss(tmp_path, monkeypatch):
    """For every task: the sum over slices of (weight share x slice loss) is the whole batch's
    loss, which is what makes N ranks equal one process (checked here without MPI)."""
    import seqtool.training.trainer as train_mod

    seen = []

    class Capture(train_mod.Trainer):
        def _train_step(self, batch):
            seen.append((self.task, batch))
            return super()._train_step(batch)

    monkeypatch.setattr(train_mod, "Trainer", Capture)

    def loss(task, batch):
        if hasattr(task, "_state"):  # charlm carries state between batches: start each cold
            task._state = None
        return float(task.loss(batch).data)

    for name, (make, opts) in TASKS.items():
        d = tmp_path / name
        d.mkdir()
        r = CliRunner().invoke(cli, ["train", name, *make(d), "-o", str(d / "m.st"), "--steps", "1",
                                     "--seed", "0", "-q", *opts])
        assert r.exit_code == 0, r.output
        task, batch = seen[-1]
        whole = loss(task, batch)
        for parts in (2, 3):
            pieces = task.split_batch(batch, parts)
            total = sum(w for _, w in pieces)
            combined = sum(w / total * loss(task, p) for p, w in pieces)
            assert combined == pytest.approx(whole, rel=1e-5), (name, parts)
        assert len(pieces[0][0]) == len(batch)


# ---------------------------------------------------------------- under mpiexec


def _mpi(n, args, timeout=300, launcher=None, env=None):
    cmd = [MPIEXEC, "-n", str(n), sys.executable]
    cmd += [launcher] if launcher else ["-m", "seqtool.cli.main"]
    full_env = {**os.environ, "NUMBA_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def _close(a, b, rel):
    assert a.keys() == b.keys()
    for k in a:
        scale = max(float(np.abs(a[k]).max()), 1e-6)
        assert float(np.abs(a[k] - b[k]).max()) <= rel * scale, k


@needs_mpi
@pytest.mark.parametrize("task", sorted(TASKS))
def test_two_ranks_equal_one_process_at_the_same_global_batch(task, tmp_path):
    make, opts = TASKS[task]
    data = make(tmp_path)
    common = ["train", task, *data, "--steps", "20", "--seed", "0", "-q", *opts]
    r = _mpi(2, [*common, "-o", tmp_path / "two.st"])
    assert r.returncode == 0, r.stderr
    r1 = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "one.st")])
    assert r1.exit_code == 0, r1.output
    one, two = load_checkpoint(tmp_path / "one.st"), load_checkpoint(tmp_path / "two.st")
    assert two.training_state["step"] == 20 and two.training_state["data"] == one.training_state["data"]
    # float32 sums in another order, amplified a little by Adam over 20 steps
    _close(one.arrays, two.arrays, 1e-5)


CHARLM = ["train", "charlm", SAMPLE, "--hidden", "16", "--layers", "2", "--embed", "8", "--batch", "6",
          "--seq-len", "16", "--seed", "0", "-q"]


@needs_mpi
def test_resume_with_the_same_or_another_number_of_ranks(tmp_path):
    straight = tmp_path / "straight.st"
    assert _mpi(2, [*CHARLM, "-o", straight, "--steps", "16"]).returncode == 0
    part = tmp_path / "part.st"
    assert _mpi(2, [*CHARLM, "-o", part, "--steps", "8"]).returncode == 0
    shutil.copy(part, tmp_path / "part1.st")
    shutil.copy(part, tmp_path / "part3.st")
    r = _mpi(2, [*CHARLM, "-o", part, "--steps", "16", "--resume", part])
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(straight), load_checkpoint(part)
    for k in a.arrays:  # same number of ranks: exactly the uninterrupted run
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
    for k in a.optim_arrays:  # including the carried LSTM state of every stream
        np.testing.assert_array_equal(a.optim_arrays[k], b.optim_arrays[k], err_msg=k)
    for n, name in ((1, "part1.st"), (3, "part3.st")):
        p = tmp_path / name
        r = _mpi(n, [*CHARLM, "-o", p, "--steps", "16", "--resume", p])
        assert r.returncode == 0, r.stderr
        _close(a.arrays, load_checkpoint(p).arrays, 1e-5)


LAUNCHER = """
import os, signal, sys
from mpi4py import MPI
from seqtool.tasks.charlm import training as charlm
FAULT, RANK = os.environ["FAULT"], MPI.COMM_WORLD.Get_rank()
real, calls = charlm.CharLMTask.loss, [0]
def loss(self, batch):
    calls[0] += 1
    if RANK == 1 and calls[0] == 12:
        if FAULT == "raise":
            raise RuntimeError("injected fault")
        if FAULT == "stall":
            import time; time.sleep(120)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, batch)
charlm.CharLMTask.loss = loss
if FAULT == "unreadable" and RANK == 1:
    from seqtool.data import text
    def unreadable(*a, **k):
        from seqtool.errors import SeqtoolError
        raise SeqtoolError("cannot read corpus.txt: permission denied")
    text.load_corpus = unreadable
from seqtool.cli.main import cli
sys.argv[0] = "seqtool"
cli()
"""


@needs_mpi
@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_a_failing_rank_stops_all_quickly_and_the_checkpoint_stays(fault, tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    out = tmp_path / "m.st"
    r = _mpi(2, [*CHARLM, "-o", out, "--steps", "1000", "--checkpoint-every", "5"],
             launcher=str(launcher), env={"FAULT": fault}, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    if fault == "raise":
        assert r.stderr.count("seqtool: error: rank 1: RuntimeError: injected fault") == 1, r.stderr
    assert load_checkpoint(out).training_state["step"] == 10  # the last periodic checkpoint


@needs_mpi
def test_a_stuck_rank_trips_the_watchdog(tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    out = tmp_path / "m.st"
    r = _mpi(2, [*CHARLM, "-o", out, "--steps", "1000", "--checkpoint-every", "5"], launcher=str(launcher),
             env={"FAULT": "stall", "SEQTOOL_MPI_TIMEOUT": "3"}, timeout=60)
    assert r.returncode == 1
    assert r.stderr.count("seqtool: error: no answer from every rank for 3 s during gradients") == 1, r.stderr
    assert load_checkpoint(out).training_state["step"] == 10


@needs_mpi
def test_a_rank_that_cannot_read_the_data_is_reported_once(tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    r = _mpi(2, [*CHARLM, "-o", tmp_path / "m.st", "--steps", "5"], launcher=str(launcher),
             env={"FAULT": "unreadable"}, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == "seqtool: error: rank 1: cannot read corpus.txt: permission denied"
    assert not (tmp_path / "m.st").exists()


@needs_mpi
def test_ranks_started_differently_are_reported_once(tmp_path):
    base = [sys.executable, "-m", "seqtool.cli.main", *CHARLM, "-o", str(tmp_path / "m.st"), "--steps", "5"]
    cmd = [MPIEXEC, "-n", "1", *base, ":", "-n", "1", *base[:-1], "6"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "the ranks were not started alike: command line differs" in lines[0]


@needs_mpi
def test_ctrl_c_on_mpiexec_saves_once_and_resumes_exactly(tmp_path):
    import time

    out = tmp_path / "m.st"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "seqtool.cli.main", *CHARLM,
                             "-o", str(out), "--steps", "100000", "--checkpoint-every", "4"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "NUMBA_NUM_THREADS": "1"},
                            preexec_fn=default_sigint)
    wait_for_file(out, proc)
    time.sleep(0.3)
    err = ctrl_c(proc, timeout=60)
    assert proc.returncode == 130, err
    k = load_checkpoint(out).training_state["step"]
    assert err.count(f"interrupted at step {k}; checkpoint saved to {out}") == 1, err
    assert "Traceback" not in err
    straight = tmp_path / "straight.st"
    assert _mpi(2, [*CHARLM, "-o", straight, "--steps", k + 5]).returncode == 0
    r = _mpi(2, [*CHARLM, "-o", out, "--steps", k + 5, "--resume", out])
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(straight), load_checkpoint(out)
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=key)


# A launch script's start: run the seqtool command given, keeping its Trainer as `t`.
KEEP_TRAINER = """
import sys
import seqtool.training.trainer as train_mod
from seqtool.cli.main import cli
seen = {}
class Keep(train_mod.Trainer):
    def run(self):
        seen["trainer"] = self
        return super().run()
train_mod.Trainer = Keep
cli(sys.argv[1:], standalone_mode=False)
t = seen["trainer"]
"""

SAME_ON_EVERY_RANK = KEEP_TRAINER + """
states = t.world.allgather((t.rng.bit_generator.state, t.task.data_state(),
                            {k: v.tobytes() for k, v in t.model.state_dict().items()}))
if t.world.is_root:
    print("same" if all(s == states[0] for s in states) else "DIFFERENT")
"""


@needs_mpi
def test_with_dropout_ranks_stay_in_step_and_resume_exactly(tmp_path):
    """Each rank draws its own dropout masks, yet the shared generator (which orders the
    epochs), the data position and the weights stay identical on every rank, over epochs."""
    script = tmp_path / "same.py"
    script.write_text(SAME_ON_EVERY_RANK)
    data = _genre_data(tmp_path)
    args = ["train", "genre", *data, "--hidden", "16", "--layers", "2", "--batch", "7", "--seq-len", "24",
            "--val-frac", "0.2", "--dropout", "0.3", "--seed", "0", "-q"]
    full, part = tmp_path / "full.st", tmp_path / "part.st"
    for out, extra in ((full, ["--steps", "12"]), (part, ["--steps", "5"]),
                       (part, ["--steps", "12", "--resume", part])):
        r = _mpi(2, [*args, "-o", out, *extra], launcher=str(script))
        assert r.returncode == 0 and r.stdout.strip() == "same", r.stdout + r.stderr
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a.training_state["epoch"] >= 2  # the epochs' order came from the shared generator
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
