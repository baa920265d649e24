"""Learning-rate schedules: warm-up and cosine against torch's LinearLR and CosineAnnealingLR, the
lr each training step really used, and exact resume of a cosine run after an interrupt."""

import random

import numpy as np
import pytest

from seqtool import tasks
from seqtool.io.modelfile import load_checkpoint
from seqtool.training import trainer as trainer_module
from seqtool.training.schedule import FLOOR, LearningRate, cosine_factor


class _Optimizer:
    def __init__(self, lr):
        self.lr = lr


def _lrs(schedule, steps, warmup=0, peak=0.1):
    opt = _Optimizer(peak)
    lr = LearningRate(opt, schedule, warmup)
    out = []
    for step in range(steps):
        lr.set_for_step(step, step / steps)
        out.append(opt.lr)
    return out


def test_cosine_runs_from_the_peak_to_the_floor():
    assert cosine_factor(0.0) == 1.0 and cosine_factor(1.0) == pytest.approx(FLOOR)
    assert cosine_factor(0.5) == pytest.approx((1 + FLOOR) / 2)
    assert cosine_factor(7.0) == cosine_factor(1.0) and cosine_factor(-1.0) == 1.0
    values = [cosine_factor(p / 50) for p in range(51)]
    assert all(a > b for a, b in zip(values, values[1:]))


def _torch_lrs(make, steps, peak):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_equals_torch_cosine_annealing():
    steps, peak = 40, 0.1
    want = _torch_lrs(lambda s, o: s.CosineAnnealingLR(o, T_max=steps, eta_min=FLOOR * peak), steps, peak)
    np.testing.assert_allclose(_lrs("cosine", steps, 0, peak), want, rtol=1e-6)


def test_warmup_equals_torch_linear_lr():
    steps, warmup, peak = 12, 5, 0.1
    # LinearLR's factor at iteration i: 1/w + (1 - 1/w) i / (w - 1) = (i + 1) / w, then 1
    want = _torch_lrs(lambda s, o: s.LinearLR(o, start_factor=1 / warmup, total_iters=warmup - 1),
                      steps, peak)
    np.testing.assert_allclose(_lrs("plateau", steps, warmup, peak), want, rtol=1e-6)


def test_plateau_without_warmup_keeps_the_peak_and_halves_on_no_improvement():
    opt = _Optimizer(0.2)
    lr = LearningRate(opt, "plateau", 0, lr_factor=0.5, lr_patience=1)
    lr.set_for_step(0, 0.9)
    assert opt.lr == 0.2  # progress does not matter to the plateau rule
    for loss in (1.0, 1.0, 1.0):
        lr.validated(loss)
    lr.set_for_step(5, 0.0)
    assert opt.lr == 0.1
    lr.halve()  # a NaN rollback
    lr.set_for_step(6, 0.0)
    assert opt.lr == 0.05


def test_old_checkpoint_state_is_read_as_plateau():
    opt = _Optimizer(0.03)
    lr = LearningRate(opt, "plateau")
    lr.load_state_dict({"type": "ReduceLROnPlateau", **LearningRate(_Optimizer(1), "plateau").plateau.state_dict()})
    lr.set_for_step(0, 0.0)
    assert opt.lr == 0.03


def _pairs(path, n=200):
    r = random.Random(0)
    lines = []
    for _ in range(n):
        s = " ".join(r.choice("abcdef") for _ in range(r.randint(2, 5)))
        lines.append(f"{s}\t{' '.join(reversed(s.split()))}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


OPTS = {"hidden": 16, "embed": 8, "batch": 16, "lr": 0.01, "dropout": 0.2, "seed": 1,
        "lr_schedule": "cosine", "warmup": 4}


def test_the_last_step_used_the_cosine_floor_region_and_the_file_keeps_the_schedule(tmp_path):
    data = _pairs(tmp_path / "p.tsv")
    out = str(tmp_path / "m.st")
    tasks.train("seq2seq", data, out, steps=20, **OPTS)
    ck = load_checkpoint(out)
    assert ck.meta["training"]["lr_schedule"] == "cosine" and ck.meta["training"]["warmup"] == 4
    assert ck.optim_state["lr"] == pytest.approx(0.01 * cosine_factor(19 / 20))


def test_an_interrupted_cosine_run_resumes_exactly(tmp_path, monkeypatch):
    data = _pairs(tmp_path / "p.tsv")
    straight, cut = str(tmp_path / "straight.st"), str(tmp_path / "cut.st")
    tasks.train("seq2seq", data, straight, steps=16, **OPTS)
    real = trainer_module.Trainer._stop_requested
    # Ctrl-C's path: the flag the loop polls turns True after step 7
    monkeypatch.setattr(trainer_module.Trainer, "_stop_requested", lambda self: self.step == 7 or real(self))
    with pytest.raises(KeyboardInterrupt):
        tasks.train("seq2seq", data, cut, steps=16, **OPTS)
    monkeypatch.setattr(trainer_module.Trainer, "_stop_requested", real)
    assert load_checkpoint(cut).training_state["step"] == 7
    tasks.train("seq2seq", data, cut, steps=16, resume=cut, **OPTS)
    a, b = load_checkpoint(straight), load_checkpoint(cut)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)


def test_the_cli_offers_exactly_the_library_schedules():
    from seqtool.cli import options
    from seqtool.training.schedule import SCHEDULES

    assert options.SCHEDULES == SCHEDULES  # cli keeps a literal copy to stay light at start-up


def test_an_unknown_schedule_is_a_usage_error():
    from seqtool.errors import UsageError

    with pytest.raises(UsageError, match="unknown learning-rate schedule 'step'"):
        LearningRate(_Optimizer(0.1), "step")
