"""The task-agnostic Trainer: stopping rules, checkpoints, resume, NaN rollback, Ctrl-C, patience."""

import math

import numpy as np
import pytest

from seqtool.core import functional as F
from seqtool.core.autograd import Tensor, no_grad
from seqtool.errors import SeqtoolError, UsageError
from seqtool.io.modelfile import load_checkpoint, load_model
from seqtool.nn import Linear, Module
from seqtool.training.trainer import Trainer, TrainSettings


class Net(Module):
    def __init__(self, rng):
        super().__init__()
        self.lin = Linear(4, 1, rng=rng)

    def forward(self, x):
        return self.lin(x)


class FakeTask:
    """Linear regression in batches of 4 rows (10 per epoch), with injectable failures."""

    name = "charlm"  # any task name the model file accepts

    def __init__(self, init_seed=0, nan_at=(), interrupt_at=None, val_losses=None, clock=None):
        self.model = Net(np.random.default_rng(init_seed))
        rng = np.random.default_rng(1234)
        self.x = rng.normal(size=(40, 4)).astype(np.float32)
        self.y = (self.x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32))[:, None]
        self.position, self.calls = 0, 0
        self.nan_at, self.interrupt_at = set(nan_at), interrupt_at
        self.val_losses, self.weights_at_val = list(val_losses or []), []
        self.clock = clock

    def train_batches(self, rng):
        order = np.arange(10)
        while self.position < 10:
            k = order[self.position]
            self.position += 1
            yield self.x[4 * k:4 * k + 4], self.y[4 * k:4 * k + 4]
        self.position = 0

    def loss(self, batch):
        self.calls += 1
        if self.clock is not None:
            self.clock[0] += 1.0
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        x, y = batch
        d = self.model(x) - y
        loss = F.mean(d * d)
        return loss * float("nan") if self.calls in self.nan_at else loss

    def epoch_progress(self):
        return self.position / 10

    def batch_tokens(self, batch):
        return len(batch[0])

    def evaluate(self):
        self.weights_at_val.append(self.model.state_dict())
        if self.val_losses:
            return {"loss": self.val_losses.pop(0)}
        with no_grad():
            d = self.model(self.x).data - self.y
        return {"loss": float((d * d).mean())}

    def data_state(self):
        return {"position": self.position}

    def load_data_state(self, state):
        self.position = state["position"]

    def state_arrays(self):
        return {}

    def load_state_arrays(self, arrays):
        pass

    def meta(self):
        return {"task": "charlm", "config": {}}


def weights(model):
    return model.state_dict()


def test_needs_a_stopping_rule(tmp_path):
    with pytest.raises(UsageError):
        Trainer(FakeTask(), tmp_path / "m.st", TrainSettings())


def test_steps_train_and_save(tmp_path):
    task = FakeTask()
    out = tmp_path / "m.st"
    summary = Trainer(task, out, TrainSettings(lr=0.05, steps=60, val_every=10)).run()
    assert summary["steps"] == 60 and summary["epochs"] == 6 and summary["reason"] == "steps"
    ck = load_checkpoint(out)
    np.testing.assert_array_equal(ck.arrays["lin.weight"], task.model.lin.weight.data)
    hist = ck.meta["history"]
    assert [s for s, _ in hist["val_loss"]] == [10, 20, 30, 40, 50, 60]
    assert hist["val_loss"][-1][1] < hist["val_loss"][0][1]  # it learned
    assert ck.training_state["step"] == 60 and ck.optim_arrays  # optimizer moments saved


def test_resume_is_exact(tmp_path):
    straight = FakeTask()
    Trainer(straight, tmp_path / "a.st", TrainSettings(lr=0.05, steps=17, val_every=5),
            rng=np.random.default_rng(1)).run()
    first = FakeTask()
    Trainer(first, tmp_path / "b.st", TrainSettings(lr=0.05, steps=8, val_every=5),
            rng=np.random.default_rng(1)).run()
    resumed = FakeTask(init_seed=99)  # different init: everything must come from the checkpoint
    Trainer(resumed, tmp_path / "b.st", TrainSettings(lr=0.05, steps=17, val_every=5),
            resume=tmp_path / "b.st").run()
    for k, v in weights(straight.model).items():
        np.testing.assert_array_equal(weights(resumed.model)[k], v)


def test_time_budget_stops_and_saves(tmp_path):
    clock = [0.0]
    task = FakeTask(clock=clock)
    s = TrainSettings(lr=0.05, time_budget=5.5, val_every=100)
    summary = Trainer(task, tmp_path / "m.st", s, clock=lambda: clock[0]).run()
    assert summary["reason"] == "time budget" and summary["steps"] == 6
    ck = load_checkpoint(tmp_path / "m.st")
    assert ck.training_state["step"] == 6
    assert ck.meta["history"]["val_loss"][-1][0] == 6  # a final validation when stopping


def test_nan_rolls_back_with_halved_lr(tmp_path):
    task = FakeTask(nan_at={7})
    tr = Trainer(task, tmp_path / "m.st", TrainSettings(lr=0.05, steps=12, val_every=5))
    summary = tr.run()
    assert summary["steps"] == 12
    assert tr.rollbacks == 1
    assert tr.optimizer.lr == pytest.approx(0.025)
    assert all(np.isfinite(v).all() for v in weights(task.model).values())
    # rolled back to the snapshot at step 5, so steps 6..12 ran again: 12 good + 1 bad + 1 redone
    assert task.calls == 12 + 1 + 1


def test_three_rollbacks_then_one_line_error(tmp_path):
    task = FakeTask(nan_at=set(range(3, 100)))
    out = tmp_path / "m.st"
    with pytest.raises(SeqtoolError) as e:
        Trainer(task, out, TrainSettings(lr=0.05, steps=50, val_every=5)).run()
    assert "\n" not in str(e.value) and "diverged" in str(e.value)


def test_ctrl_c_saves_checkpoint_and_reraises(tmp_path):
    task = FakeTask(interrupt_at=14)
    out = tmp_path / "m.st"
    with pytest.raises(KeyboardInterrupt):
        Trainer(task, out, TrainSettings(lr=0.05, steps=50, val_every=100)).run()
    ck = load_checkpoint(out)
    assert ck.training_state["step"] == 13
    np.testing.assert_array_equal(ck.arrays["lin.weight"], task.model.lin.weight.data)


def test_early_stopping_restores_best(tmp_path):
    task = FakeTask(val_losses=[3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    summary = Trainer(task, tmp_path / "m.st",
                      TrainSettings(lr=0.05, steps=100, val_every=2, patience=3, lr_patience=10)).run()
    assert summary["reason"] == "early stopping" and summary["steps"] == 10
    assert summary["best_step"] == 4 and summary["best_val_loss"] == 2.0
    best = task.weights_at_val[1]
    for k, v in best.items():
        np.testing.assert_array_equal(task.model.state_dict()[k], v)
    arrays, _ = load_model(tmp_path / "m.st")
    np.testing.assert_array_equal(arrays["lin.weight"], best["lin.weight"])
    assert not np.array_equal(best["lin.weight"], task.weights_at_val[-1]["lin.weight"])


def test_plateau_halves_lr(tmp_path):
    task = FakeTask(val_losses=[3.0, 3.0, 3.0, 3.0])
    tr = Trainer(task, tmp_path / "m.st", TrainSettings(lr=0.04, steps=8, val_every=2, lr_patience=1))
    tr.run()
    assert tr.optimizer.lr == pytest.approx(0.02)


def test_resume_from_plain_model_fails(tmp_path):
    from seqtool.io.modelfile import save_model

    task = FakeTask()
    save_model(tmp_path / "plain.st", task.model.state_dict(), {"task": "charlm", "config": {}})
    with pytest.raises(SeqtoolError, match="without training state"):
        Trainer(FakeTask(), tmp_path / "x.st", TrainSettings(steps=2), resume=tmp_path / "plain.st")
