"""seqtool train sed --clips: new scenes mixed from isolated clips every epoch, validation on
fixed material, exact resume, the options stored in the model, one-line errors.

The clips are tones a tiny model tells apart (as tests/test_sed_task.py's); scenes last 6 s.
"""

import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool import tasks
from seqtool.cli.main import cli
from seqtool.data.audio import write_wav
from seqtool.io.modelfile import load_model, read_meta
from seqtool.tasks.sed.scenes import VALIDATION

sys.path.insert(0, os.path.dirname(__file__))
from faultkit import run_fault  # noqa: E402
from tones import LABELS, SR, tone_clip  # noqa: E402

SCENES = {"scene_seconds": 6.0, "events_per_class": (1, 2), "polyphony": (1, 2), "scenes": 2}
NET = {"hidden": 8, "layers": 1, "seq_len": 64, "batch": 4, "tune_decoding": False}
CLI_SCENES = ["--scene-seconds", 6, "--events-per-class", "1:2", "--polyphony", "1:2", "--scenes", 2]
CLI_NET = ["--hidden", 8, "--layers", 1, "--seq-len", 64, "--batch", 4, "--no-tune-decoding", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(clips folder, a 3-column timeline, recordings folder with beep and buzz only, their TSV)."""
    d = tmp_path_factory.mktemp("clipdata")
    rng = np.random.default_rng(0)
    (d / "clips").mkdir()
    for label in LABELS:
        for k, seconds in enumerate((0.4, 0.7, 1.0)):
            write_wav(d / "clips" / f"{label}{k:03d}.wav", tone_clip(label, seconds, rng), SR)
    (d / "tl.txt").write_text("0.5\t1.2\tbeep\n1.0\t2.0\tbuzz\n4.0\t4.4\thiss\n")
    (d / "rec").mkdir()
    two = {lab: [tone_clip(lab, 0.7, rng)] for lab in ("beep", "buzz")}
    from seqtool.data.synth import synth_scenes_to_dir

    synth_scenes_to_dir(d / "rec", two, 4, duration=6.0, ebr_db=6.0, events_per_class=1, max_polyphony=1,
                        seed=2, sr=SR)
    return d / "clips", d / "tl.txt", d / "rec", d / "rec" / "ground_truth.tsv"


def _prepare(data, out, data_args=(), **options):
    clips, tl, _, _ = data
    return tasks.prepare("sed", data_args, out, clips=str(clips), timelines=(str(tl),), seed=1,
                         **{**SCENES, **NET, **options})


def _epoch(task, rng):
    """The batches of one epoch, and copies of the epoch's scenes."""
    batches = list(task.train_batches(rng))
    return batches, [(r.features.copy(), list(r.events)) for r in task._fresh]


def test_every_epoch_mixes_new_scenes_and_validation_stays_fixed(data, tmp_path):
    task = _prepare(data, tmp_path / "m.model", steps=1).task
    assert task.scene_layout == [0, None, None]  # the timeline once, then two random timelines
    val = [(r.name, r.features.copy()) for r in task.val]
    assert len(val) == 2  # a tenth of an epoch's timeline scenes and of its random ones, at least one each
    rng = np.random.default_rng(5)
    first_batches, first = _epoch(task, rng)
    _, second = _epoch(task, rng)
    assert len(first_batches) == task.n_batches and len(task._fresh) == 3  # one epoch's scenes held
    for (fa, ea), (fb, eb) in zip(first, second):
        assert fa.shape == fb.shape and not np.array_equal(fa, fb)
    # the given timeline keeps its events (other clips, levels, background); random ones move
    assert [(e.onset, e.label) for e in first[0][1]] == [(e.onset, e.label) for e in second[0][1]] == \
        [(0.5, "beep"), (1.0, "buzz"), (4.0, "hiss")]
    assert [(e.onset, e.label) for e in first[1][1]] != [(e.onset, e.label) for e in second[1][1]]
    # targets follow each scene's own events
    hop = task.features.hop_s
    for rec in task._fresh:
        for e in rec.events:
            mid = int((e.onset + e.offset) / 2 / hop)
            assert rec.roll[mid, LABELS.index(e.label)] == 1.0
    # validation: the same scenes after the epochs, and in another run with the same seed
    assert len(task.val) == len(val)
    for (name, feats), rec in zip(val, task.val):
        assert name == rec.name and np.array_equal(feats, rec.features)
    again = _prepare(data, tmp_path / "m2.model", steps=1).task
    for (name, feats), rec in zip(val, again.val):
        assert name == rec.name and np.array_equal(feats, rec.features)
    # and they are none of the training scenes
    assert all(not np.array_equal(feats, f) for feats in (v for _, v in val) for f, _ in first + second
               if feats.shape == f.shape)


def test_the_same_epoch_seed_mixes_the_same_scenes(data, tmp_path):
    task = _prepare(data, tmp_path / "m.model", steps=1).task
    plan = task._make_plan(123)
    scenes = [r.features.copy() for r in task._fresh]
    task._make_plan(456)
    assert not np.array_equal(scenes[1], task._fresh[1].features)
    task._fresh_seed = None  # forget, as a resumed run has
    assert task._make_plan(123) == plan
    for a, rec in zip(scenes, task._fresh):
        np.testing.assert_array_equal(a, rec.features)
    # the frames planned before mixing are the frames mixed
    assert task._frames == [len(r.features) for r in task._fresh]


def test_model_file_stores_the_scene_options(data, tmp_path):
    clips, tl, _, _ = data
    out = tmp_path / "m.model"
    r = CliRunner().invoke(cli, ["train", "sed", "--clips", str(clips), "--timeline", str(tl), "-o", str(out),
                                 "--steps", "2", "--seed", "4", "--ebr", "0:3", *map(str, CLI_SCENES),
                                 *map(str, CLI_NET[:-1])])
    assert r.exit_code == 0, r.output
    assert "scenes per epoch: 1 on the given timelines + 2 on random timelines" in r.stderr
    assert "(defaults: --background)" in r.stderr
    meta = read_meta(out)
    opts = meta["data_options"]
    assert opts["clips"] == os.path.abspath(clips) and opts["timelines"] == [os.path.abspath(tl)]
    assert opts["ebr"] == [0.0, 3.0] and opts["events_per_class"] == [1, 2] and opts["polyphony"] == [1, 2]
    assert opts["backgrounds"] == ["pink", "brown", "white"] and opts["scene_seconds"] == 6.0
    assert opts["scenes"] == 2 and opts["split_seed"] == 4
    assert meta["labels"] == LABELS and meta["data"]["scenes_per_epoch"] == 3
    assert meta["data"]["scene_seconds_per_epoch"] == 18.0 and meta["data"]["train_recordings"] == 0


def _weights(path):
    arrays, _ = load_model(path)
    return {k: v for k, v in arrays.items() if not k.startswith("optim/")}


def test_resume_continues_exactly_with_no_scene_options(data, tmp_path):
    clips, tl, _, _ = data
    common = ["--clips", clips, "--timeline", tl, *CLI_SCENES, *CLI_NET, "--seed", 3, "--checkpoint-every", 4]
    task = _prepare(data, tmp_path / "probe.model", steps=1).task
    steps = task.n_batches + 3  # past an epoch's end: the second epoch's scenes come from the checkpoint
    run = lambda *a: CliRunner().invoke(cli, ["train", "sed", *map(str, a)])  # noqa: E731
    whole = run(*common, "-o", tmp_path / "whole.model", "--steps", steps)
    assert whole.exit_code == 0, whole.output
    part = run(*common, "-o", tmp_path / "part.model", "--steps", task.n_batches - 2)
    assert part.exit_code == 0, part.output
    rest = run("-o", tmp_path / "part.model", "--resume", tmp_path / "part.model", "--steps", steps, "-q")
    assert rest.exit_code == 0, rest.output
    a, b = _weights(tmp_path / "whole.model"), _weights(tmp_path / "part.model")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert read_meta(tmp_path / "part.model")["normalizer"] == read_meta(tmp_path / "whole.model")["normalizer"]


def test_recordings_and_clips_together(data, tmp_path):
    _, _, rec, tsv = data
    task = _prepare(data, tmp_path / "m.model", data_args=(str(rec), str(tsv)), steps=1, val_frac=0.25).task
    # the clips bring a class the recordings lack; the recordings' targets have its column
    assert task.labels == LABELS and all(r.roll.shape[1] == 3 and not r.roll[:, 2].any() for r in task.train)
    assert len(task.train) == 3 and len(task.val) == 1  # validation: the recordings' split, no scenes
    assert task.val[0].name.startswith("scene_") and task.val[0].duration == 6.0
    from seqtool.tasks.sed.decoding import window_starts

    windows = sum(len(window_starts(n, 64)) for n in task._frames)
    assert len(task._frames) == 3 + 3 and task.n_batches == -(-windows // 4)
    batches, _ = _epoch(task, np.random.default_rng(0))
    used = {r for r, _ in task._make_plan(task._fresh_seed)}
    assert used == set(range(6))  # every recording and every scene gives windows
    assert len(batches) == task.n_batches


def test_resume_keeps_the_validation_scenes_of_the_stored_seed(data, tmp_path):
    first = _prepare(data, tmp_path / "m.model", steps=1)
    first.run()
    resumed = tasks.prepare("sed", (), tmp_path / "m.model", resume=str(tmp_path / "m.model"), seed=99, steps=2)
    maker = resumed.task.scenes
    layout = maker.held_out_layout(1, 1, 1)
    redo = maker.render(layout, 1, VALIDATION, resumed.task.normalizer, prefix="validation")
    for a, b, c in zip(first.task.val, resumed.task.val, redo):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_array_equal(a.features, c.features)


# ----------------------------------------------------------------------------- errors: one line


def _fault(data, tmp_path, code, args, *needles):
    clips, tl, _, _ = data
    args = [str(a).replace("CLIPS", str(clips)).replace("TL", str(tl)) for a in args]
    run_fault(["train", "sed", *args, "-o", "m.model", *CLI_NET], tmp_path, code, *needles,
              watch=[clips.parent])


@pytest.mark.parametrize("code,args,needles", [
    (1, ["--clips", "nowhere"], ["nowhere", "not found"]),
    (2, ["--timeline", "TL"], ["--timeline needs --clips"]),
    (2, [], ["AUDIO_DIR ANNOTATIONS, --clips DIR"]),
    (2, ["--clips", "CLIPS", "--events-per-class", "0"], ["--events-per-class"]),
    (2, ["--clips", "CLIPS", "--polyphony", "3:1"], ["--polyphony"]),
    (2, ["--clips", "CLIPS", "--scene-seconds", "nan"], ["--scene-seconds"]),
    (1, ["--clips", "CLIPS", "--scene-seconds", "1e9"], ["GiB", "--scene-seconds"]),
    (1, ["--clips", "CLIPS", "--scenes", "1000000000"], ["GiB", "--scenes"]),
    (1, ["--clips", "CLIPS", "--events-per-class", "40", "--scene-seconds", "6"], ["cannot fit", "--events-per-class"]),
    (1, ["--clips", "CLIPS", "--background", "nothere.wav"], ["nothere.wav"]),
], ids=["clips-missing", "timeline-without-clips", "no-data", "events-0", "polyphony-reversed", "seconds-nan",
        "seconds-1e9", "scenes-1e9", "events-do-not-fit", "background-missing"])
def test_bad_scene_options_are_one_line(data, tmp_path, code, args, needles):
    _fault(data, tmp_path, code, args + ["--steps", 1], *needles)


def test_the_model_never_overwrites_a_timeline(data, tmp_path):
    clips, tl, _, _ = data
    (tmp_path / "tl.txt").write_text(tl.read_text())
    run_fault(["train", "sed", "--clips", clips, "--timeline", "tl.txt", "-o", "tl.txt", *CLI_NET, "--steps", 1],
              tmp_path, 2, "tl.txt", watch=[clips.parent])


def test_no_scenes_and_no_recordings_is_a_usage_error(data, tmp_path):
    _fault(data, tmp_path, 2, ["--clips", "CLIPS", "--scenes", 0, "--steps", 1], "--scenes 0")


def test_a_timeline_class_without_clips_names_the_line(data, tmp_path):
    (tmp_path / "bad.txt").write_text("0.5\t1.0\tbeep\n2.0\t3.0\tbark\n")
    _fault(data, tmp_path, 1, ["--clips", "CLIPS", "--timeline", "bad.txt", "--steps", 1],
           "bad.txt:2", "bark", "no clips")


def test_resume_with_clips_of_an_unknown_class_is_refused(data, tmp_path):
    clips, _, rec, tsv = data
    r = CliRunner().invoke(cli, ["train", "sed", str(rec), str(tsv), "-o", str(tmp_path / "m.model"), "--steps", "1",
                                 *map(str, CLI_NET)])
    assert r.exit_code == 0, r.output
    _fault(data, tmp_path, 1, [rec, tsv, "--resume", tmp_path / "m.model", "--clips", "CLIPS", "--steps", 2],
           "hiss", "does not know")


# ----------------------------------------------------------------------------- under mpiexec


def _mpi_ready():
    import shutil

    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


@pytest.mark.skipif(_mpi_ready() is None, reason="needs the mpi extra (pip install -e .[mpi]): mpi4py and mpiexec")
def test_two_ranks_mix_the_same_scenes_as_one_process(data, tmp_path):
    """Every rank mixes the epoch's scenes from the shared seed and trains on its slice of each
    batch: two ranks end where one process does (float32 sums in another order aside)."""
    import subprocess

    from seqtool.io.modelfile import load_checkpoint

    clips, tl, _, _ = data
    common = ["train", "sed", "--clips", clips, "--timeline", tl, *CLI_SCENES, *CLI_NET, "--batch", 5,
              "--dropout", 0, "--steps", 12, "--seed", 0]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    two = subprocess.run([_mpi_ready(), "-n", "2", sys.executable, "-m", "seqtool.cli.main",
                          *map(str, common), "-o", str(tmp_path / "two.st")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert two.returncode == 0, two.stderr
    one = CliRunner().invoke(cli, [*map(str, common), "-o", str(tmp_path / "one.st")])
    assert one.exit_code == 0, one.output
    a, b = load_checkpoint(tmp_path / "one.st"), load_checkpoint(tmp_path / "two.st")
    assert b.training_state["step"] == 12 and a.training_state["data"] == b.training_state["data"]
    # float32 sums in another order, amplified by Adam where gradients are tiny (measured: 2.3e-5
    # of the largest weight)
    for k in a.arrays:
        scale = max(float(np.abs(a.arrays[k]).max()), 1e-6)
        assert float(np.abs(a.arrays[k] - b.arrays[k]).max()) <= 1e-4 * scale, k


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_saves_and_resumes_exactly(data, tmp_path):
    """A real SIGINT in the middle of training on mixed scenes (dropout on, so the RNG matters):
    exit 130, and resuming ends with the uninterrupted run's weights and data position."""
    import subprocess
    import time

    from seqtool.io.modelfile import load_checkpoint
    from signals import ctrl_c, default_sigint, wait_for_file

    clips, tl, _, _ = data
    common = ["--clips", clips, "--timeline", tl, *CLI_SCENES, *CLI_NET, "--dropout", 0.2, "--seed", 3]
    out = tmp_path / "int.st"
    proc = subprocess.Popen([sys.executable, "-m", "seqtool.cli.main", "train", "sed", *map(str, common),
                             "-o", str(out), "--steps", "100000", "--checkpoint-every", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=default_sigint, env=dict(os.environ))
    wait_for_file(out, proc)
    time.sleep(0.3)  # somewhere in a later step, perhaps mixing an epoch's scenes
    err = ctrl_c(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    k = load_checkpoint(out).training_state["step"]
    n = k + 9  # the run also crosses an epoch boundary (7 batches per epoch)

    def train(*args):
        r = CliRunner().invoke(cli, ["train", "sed", *map(str, args), "-q"])
        assert r.exit_code == 0, r.output
        return load_checkpoint(args[args.index("-o") + 1])

    straight = train(*common, "-o", tmp_path / "straight.st", "--steps", n)
    resumed = train("-o", out, "--resume", out, "--steps", n)
    assert resumed.training_state["step"] == straight.training_state["step"] == n
    assert resumed.training_state["data"] == straight.training_state["data"]
    for key in straight.arrays:
        np.testing.assert_array_equal(resumed.arrays[key], straight.arrays[key], err_msg=key)
