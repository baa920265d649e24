"""Validation split over MPI ranks: every task's parts, merged, give what one process gets
(always checked, without MPI), and under ``mpiexec -n 2`` the split validation equals rank 0's
own on the same weights and leaves the same task state on every rank."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from seqtool.cli.main import cli
from seqtool.training.distributed import split_weighted
from test_distributed import KEEP_TRAINER, TASKS, _mpi, needs_mpi

# More held-out data than the training tests use, so each of 2 or 3 parts gets some of it
# (seq2seq: 3 validation batches; sed: 3 recordings; genre: 15 pieces).
MORE_VALIDATION = {"charlm": [], "genre": ["--val-frac", "0.5"], "seq2seq": ["--val-frac", "0.9"],
                   "sed": ["--val-frac", "0.5"]}
# Tasks whose parts are scored exactly as one process scores them (whole batches, pieces or
# recordings per rank, merged in order); charlm and genre batch streams/chunks differently.
EXACT = {"seq2seq", "sed"}
# sed detects nothing (F1 undefined) for its first ~20 steps: train until decoding finds events.
STEPS = {"sed": 60}


def test_weighted_split_is_contiguous_and_near_equal_in_weight():
    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 5, 17):
        weights = rng.integers(1, 400, n)
        for parts in (1, 2, 3, 4):
            b = split_weighted(weights, parts)
            assert len(b) == parts and b[0][0] == 0 and b[-1][1] == n
            assert all(b[i][1] == b[i + 1][0] for i in range(parts - 1))
            shares = [int(weights[lo:hi].sum()) for lo, hi in b]
            biggest = int(weights.max()) if n else 0
            assert max(shares) <= weights.sum() / parts + biggest, (n, parts, shares)
    assert split_weighted([100, 1, 1, 1, 1], 2) == [(0, 1), (1, 5)]  # by weight, not by count


def _trained_task(name, tmp_path, monkeypatch, steps=None):
    import seqtool.training.trainer as train_mod

    seen = []

    class Keep(train_mod.Trainer):
        def run(self):
            seen.append(self.task)
            return super().run()

    monkeypatch.setattr(train_mod, "Trainer", Keep)
    make, opts = TASKS[name]
    d = tmp_path / name
    d.mkdir()
    steps = steps or STEPS.get(name, 3)
    r = CliRunner().invoke(cli, ["train", name, *make(d), "-o", str(d / "m.st"), "--steps", str(steps),
                                 "--seed", "0", "-q", *opts, *MORE_VALIDATION[name]])
    assert r.exit_code == 0, r.output
    return seen[-1]


def _assert_same_result(merged, whole, exact):
    assert merged.keys() == whole.keys()
    for k, v in whole.items():
        if k == "loss" and not exact:  # sums of float32 losses in another order
            assert merged[k] == pytest.approx(v, rel=1e-6), k
        else:
            assert merged[k] == v, k


@pytest.mark.parametrize("name", sorted(TASKS))
def test_merged_parts_equal_one_process(name, tmp_path, monkeypatch):
    task = _trained_task(name, tmp_path, monkeypatch)
    whole = task.evaluate()
    assert all(math.isfinite(v) for v in whole.values())
    state = _validation_state(task)
    for size in (2, 3):
        parts = [task.evaluate_part(rank, size) for rank in range(size)]
        assert all(p is not None for p in parts)
        again = [task.evaluate_part(rank, size) for rank in range(size)]
        assert again == parts  # the same split, deterministically
        merged = task.merge_validation(parts)
        _assert_same_result(merged, whole, name in EXACT)
        assert task.adopt_validation(merged) is merged
        assert _validation_state(task) == state, size


def test_parts_cover_the_validation_data_once(tmp_path, monkeypatch):
    """Each part holds a disjoint share: the counts add up to the whole (charlm tokens, genre
    pieces, seq2seq target tokens and decoded pairs, sed frames)."""
    counts = {"charlm": lambda p: p[1], "genre": lambda p: p[2],
              "seq2seq": lambda p: (sum(c for _, c in p["loss"]), len(p["decoded"])),
              "sed": lambda p: sum(n for _, n in p["loss"])}
    for name, count in counts.items():
        task = _trained_task(name, tmp_path, monkeypatch, steps=1)
        whole = count(task.evaluate_part(0, 1))
        for size in (2, 3):
            shares = [count(task.evaluate_part(rank, size)) for rank in range(size)]
            total = tuple(map(sum, zip(*shares))) if isinstance(whole, tuple) else sum(shares)
            assert total == whole, (name, size)
            assert sum(1 for s in shares if s) >= 2, (name, size)  # really split


def test_sed_adopts_the_decoding_chosen_on_the_merged_parts(tmp_path, monkeypatch):
    """Whatever decoding a rank held before, the merged result's becomes its own (and the
    model file's), so every rank decodes the next validation alike."""
    task = _trained_task("sed", tmp_path, monkeypatch)
    parts = [task.evaluate_part(rank, 2) for rank in range(2)]
    assert len(parts[0]["events"]) == len(parts[1]["events"]) == len(task._candidates()) > 1
    result = task.merge_validation(parts)
    task.threshold, task.median_ms, task.last_scores = 0.123, 7.0, None
    task.adopt_validation(result)
    assert (task.threshold, task.median_ms) == (result["threshold"], result["median_ms"])
    assert task.meta()["decode"] == {"threshold": result["threshold"], "median_ms": result["median_ms"]}
    assert task.last_scores["segment_er"] == result["segment_er"]


def _validation_state(task):
    """What a validation leaves in the task for on_validation and the model file."""
    return {k: getattr(task, k, None) for k in ("threshold", "median_ms", "last_scores", "_last_accuracy")}


# ---------------------------------------------------------------- under mpiexec


SPLIT_EQUALS_ROOT = KEEP_TRAINER + """
import json
split = t.replicas.evaluate()  # every rank its part, merged on rank 0, adopted everywhere
state = {k: getattr(t.task, k, None) for k in ("threshold", "median_ms", "last_scores", "_last_accuracy")}
states = t.world.allgather((split, state))
if t.world.is_root:
    alone = t.task.evaluate()  # rank 0 over all the validation data, on the same weights
    same = all(s == states[0] for s in states)
    print(json.dumps({"split": split, "alone": alone, "same_everywhere": same}))
"""


@needs_mpi
@pytest.mark.parametrize("name", sorted(TASKS))
def test_split_validation_on_two_ranks_equals_one_process(name, tmp_path):
    script = tmp_path / "split.py"
    script.write_text(SPLIT_EQUALS_ROOT)
    make, opts = TASKS[name]
    args = ["train", name, *make(tmp_path), "-o", tmp_path / "m.st", "--steps", STEPS.get(name, 4),
            "--seed", "0", "-q", *opts, *MORE_VALIDATION[name]]
    r = _mpi(2, args, launcher=str(script))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["same_everywhere"]
    _assert_same_result(out["split"], out["alone"], name in EXACT)


@needs_mpi
@pytest.mark.parametrize("name", ["charlm", "sed"])
def test_two_rank_training_records_the_validations_of_one_process(name, tmp_path):
    """The validation records of a 2-rank run are the 1-process run's (the weights themselves
    differ by float32 summation order, so the losses agree to that)."""
    make, opts = TASKS[name]
    common = ["train", name, *make(tmp_path), "--steps", "6", "--seed", "0", "--json",
              "-q", *opts, *MORE_VALIDATION[name]]
    r = _mpi(2, [*common, "-o", tmp_path / "two.st"])
    assert r.returncode == 0, r.stderr
    r1 = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "one.st")])
    assert r1.exit_code == 0, r1.output

    def validations(text):
        return [rec for rec in map(json.loads, text.splitlines()) if rec.get("event") == "validation"]

    two, one = validations(r.stdout), validations(r1.stdout)
    assert len(one) >= 1 and len(two) == len(one)
    for a, b in zip(two, one):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        for k in set(a) - {"val_loss", "train_loss", "tokens_per_s", "seconds"}:
            assert a[k] == pytest.approx(b[k], rel=1e-4), k

