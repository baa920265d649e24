"""The training loop every task reuses.

A task object supplies the data and the loss; the Trainer owns the optimizer, stopping rules,
validation, checkpoints, NaN recovery and progress. What a task provides::

    model                         seqtool.nn.Module being trained
    name                          "charlm", "seq2seq", ... (the model file's task)
    train_batches(rng)            iterator over the REST of the current epoch; the task advances
                                  its own position before yielding each batch and rewinds it to
                                  the epoch start when the epoch is exhausted
    loss(batch) -> Tensor         scalar training loss (forward only; the Trainer does backward)
    batch_tokens(batch) -> int    tokens in a batch, for tokens/s
    evaluate() -> dict | None     {"loss": float, ...} on held-out data (None: no validation data)
    on_validation(reporter)       optional: e.g. print a sample to stderr
    data_state() -> dict          JSON position in the data (resume)
    load_data_state(dict)
    state_arrays() -> dict        arrays the task carries between batches (e.g. RNN state)
    load_state_arrays(dict)
    meta() -> dict                model file metadata: task, config, vocab/labels, ...
    epoch_progress() -> float     optional: fraction of the current epoch done (for reports)

Checkpoints (``modelfile.save_checkpoint``) go to the output path atomically, so a killed run
leaves the previous complete file. Resuming restores weights, optimizer, scheduler, RNG, data
position, carried task arrays and history, and continues bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqtool import device as seqtool_device
from seqtool.io import modelfile
from seqtool.errors import SeqtoolError, UsageError
from seqtool.optim import ReduceLROnPlateau, clip_grad_norm, make_optimizer

__all__ = ["TrainSettings", "Trainer", "NullReporter", "TASK_ARRAY_PREFIX"]

# Task arrays ride in the optimizer namespace ("optim/") so model loading and parameter counts
# ignore them; this sub-prefix keeps them apart from the optimizer's own arrays.
TASK_ARRAY_PREFIX = "_task/"
MAX_ROLLBACKS = 3


class NullReporter:
    """Stands in for seqtool.cli.options.Reporter when the library is used directly."""

    quiet = True
    json_output = False

    def info(self, msg: str) -> None:
        pass

    def warn(self, msg: str) -> None:
        pass

    def emit(self, obj: Any) -> None:
        pass

    def progress(self, description: str = "", total=None, **kw):
        import contextlib

        from types import SimpleNamespace

        return contextlib.nullcontext(SimpleNamespace(advance=lambda *a, **k: None,
                                                      update=lambda **k: None))


@dataclass
class TrainSettings:
    """Hyperparameters of the loop (stored in the model file under meta["training"])."""

    optimizer: str = "adam"
    lr: float | None = None  # None: the optimizer's default
    clip_norm: float = 5.0  # 0: no clipping
    epochs: int | None = None  # totals, counted across resumes
    steps: int | None = None
    time_budget: float | None = None  # seconds for this invocation
    val_every: int = 100  # steps between validations
    patience: int | None = None  # validations without improvement before stopping
    checkpoint_every: int | None = None  # None: at every validation
    lr_patience: int = 3  # ReduceLROnPlateau patience, in validations (1 ran the lr to ~0 within 8 min on tinyshakespeare)
    lr_factor: float = 0.5

    def check(self) -> None:
        if self.epochs is None and self.steps is None and self.time_budget is None:
            raise UsageError("give a stopping rule: --epochs, --steps or --time-budget")
        if self.val_every < 1:
            raise UsageError(f"validation interval must be positive, got {self.val_every}")

    def to_json(self) -> dict:
        return {"optimizer": self.optimizer, "lr": self.lr, "clip_norm": self.clip_norm,
                "val_every": self.val_every, "patience": self.patience,
                "checkpoint_every": self.checkpoint_every, "lr_patience": self.lr_patience,
                "lr_factor": self.lr_factor}


class Trainer:
    """Runs ``task`` until a stopping rule fires; ``run()`` returns a summary dict."""

    def __init__(self, task, output, settings: TrainSettings, rng: np.random.Generator | None = None,
                 reporter=None, resume=None, clock=time.monotonic, device: str = "cpu"):
        settings.check()
        self.task, self.output, self.s = task, output, settings
        self.device = device
        seqtool_device.use(device)  # one-line error without a GPU
        self.model = seqtool_device.module_to(task.model, device)  # before the optimizer's state
        self.reporter = reporter or NullReporter()
        self.clock = clock
        self.params = list(self.model.parameters())
        self.rng = rng if rng is not None else np.random.default_rng()
        self.optimizer = make_optimizer(settings.optimizer, self.params, settings.lr)
        self.scheduler = ReduceLROnPlateau(self.optimizer, factor=settings.lr_factor,
                                           patience=settings.lr_patience)
        self.step = 0
        self.epoch = 0
        self.seconds = 0.0  # training time over all invocations
        self.history = {"train_loss": [], "val_loss": []}
        self.best_val = math.inf
        self.best_step = None
        self.bad_validations = 0
        self.best_weights = None  # in memory only: restored at the end when --patience is on
        self.rollbacks = 0
        self._snapshot = None
        if resume is not None:
            self._load_checkpoint(resume)

    # ---------------------------------------------------------------- state in and out

    def _state_json(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "seconds": self.seconds,
                "best_val": modelfile_float(self.best_val), "best_step": self.best_step,
                "bad_validations": self.bad_validations, "scheduler": self.scheduler.state_dict(),
                "data": self.task.data_state()}

    def epochs_done(self) -> float:
        """Completed passes plus the fraction of the current one (when the task says)."""
        frac = getattr(self.task, "epoch_progress", None)
        return round(self.epoch + (frac() if frac is not None else 0.0), 4)

    def _history_json(self) -> dict:
        return {"steps": self.step, "epochs": self.epochs_done(), "seconds": round(self.seconds, 3),
                "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                "best_step": self.best_step, **self.history}

    def save(self, path=None) -> None:
        """Write a checkpoint (model file + everything --resume needs) atomically."""
        meta = dict(self.task.meta())
        meta["history"] = self._history_json()
        meta["training"] = self.s.to_json()
        opt = self.optimizer.state_dict()
        optim_arrays = dict(opt["arrays"])
        for k, v in self.task.state_arrays().items():
            optim_arrays[TASK_ARRAY_PREFIX + k] = v
        modelfile.save_checkpoint(path or self.output, self.model.state_dict(), meta, optim_arrays,
                                  opt["scalars"], self.rng, self._state_json())

    def _load_checkpoint(self, path) -> None:
        ck = modelfile.load_checkpoint(path, expect_task=self.task.name)
        st = ck.training_state
        if "step" not in st or ck.rng is None:
            raise SeqtoolError(f"{path} is a model file without training state; cannot resume from it")
        self.model.load_state_dict(ck.arrays)
        task_arrays = {k[len(TASK_ARRAY_PREFIX):]: v for k, v in ck.optim_arrays.items()
                       if k.startswith(TASK_ARRAY_PREFIX)}
        opt_arrays = {k: v for k, v in ck.optim_arrays.items() if not k.startswith(TASK_ARRAY_PREFIX)}
        self.optimizer.load_state_dict({"scalars": ck.optim_state, "arrays": opt_arrays})
        self.task.load_state_arrays(seqtool_device.put_tree(task_arrays, self.device))
        self.task.load_data_state(st["data"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.rng.bit_generator.state = ck.rng.bit_generator.state  # keep the task's reference
        self.step, self.epoch, self.seconds = int(st["step"]), int(st["epoch"]), float(st["seconds"])
        self.best_val = float(st["best_val"])
        self.best_step, self.bad_validations = st["best_step"], int(st["bad_validations"])
        hist = ck.meta.get("history") or {}
        self.history = {"train_loss": list(hist.get("train_loss", [])),
                        "val_loss": list(hist.get("val_loss", []))}

    def _take_snapshot(self) -> None:
        """In-memory copy of everything a NaN rollback restores (taken at each validation)."""
        self._snapshot = {
            "weights": self.model.state_dict(),
            "optim": self.optimizer.state_dict(),
            "sched": self.scheduler.state_dict(),
            "rng": self.rng.bit_generator.state,
            "task_arrays": {k: v.copy() for k, v in self.task.state_arrays().items()},
            "data": self.task.data_state(),
            "step": self.step, "epoch": self.epoch,
        }

    def _rollback(self, what: str) -> None:
        self.rollbacks += 1
        if self.rollbacks > MAX_ROLLBACKS:
            raise SeqtoolError(
                f"training diverged ({what} at step {self.step}) {MAX_ROLLBACKS} times despite "
                f"halving the learning rate; try a lower --lr or --clip-norm")
        snap = self._snapshot
        lr = self.optimizer.lr
        self.model.load_state_dict(snap["weights"])
        self.optimizer.load_state_dict(snap["optim"])
        self.optimizer.lr = lr * 0.5
        self.scheduler.load_state_dict(snap["sched"])
        self.rng.bit_generator.state = snap["rng"]
        self.task.load_state_arrays(snap["task_arrays"])
        self.task.load_data_state(snap["data"])
        self.step, self.epoch = snap["step"], snap["epoch"]
        self.reporter.warn(f"{what} at step {self.step + 1}: rolled back to step {snap['step']}, "
                           f"learning rate halved to {self.optimizer.lr:.3g}")

    # ---------------------------------------------------------------- the loop

    def _done(self, started: float) -> str | None:
        s = self.s
        if s.steps is not None and self.step >= s.steps:
            return "steps"
        if s.epochs is not None and self.epoch >= s.epochs:
            return "epochs"
        if s.time_budget is not None and self.clock() - started >= s.time_budget:
            return "time budget"
        return None

    def _validate(self, train_loss: float | None, tok_rate: float, final: bool = False) -> bool:
        """Evaluate, record, adjust lr; returns True when early stopping says stop.

        ``final`` (the extra validation when training stops between validations) records the loss
        but leaves the lr schedule and patience alone, so stopping early and resuming continues
        exactly as an uninterrupted run would.
        """
        result = self.task.evaluate()
        if train_loss is not None:
            self.history["train_loss"].append([self.step, round(float(train_loss), 6)])
        record = {"event": "validation", "step": self.step, "epoch": self.epochs_done(),
                  "train_loss": train_loss, "lr": self.optimizer.lr, "tokens_per_s": round(tok_rate, 1),
                  "seconds": round(self.seconds, 3)}
        stop = False
        if result is not None and math.isfinite(result["loss"]):
            val = float(result["loss"])
            self.history["val_loss"].append([self.step, round(val, 6)])
            record.update({k: v for k, v in result.items() if k != "loss"}, val_loss=val)
            if val < self.best_val:
                self.best_val, self.best_step = val, self.step
                if self.s.patience is not None:
                    self.best_weights = self.model.state_dict()
            if not final:
                self.bad_validations = 0 if self.best_step == self.step else self.bad_validations + 1
                self.scheduler.step(val)
            stop = self.s.patience is not None and self.bad_validations >= self.s.patience
        self.reporter.emit(record)
        val_txt = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
        tr_txt = f" train {train_loss:.4f}" if train_loss is not None else ""
        self.reporter.info(f"step {self.step} epoch {record['epoch']:.2f}{tr_txt}{val_txt} "
                           f"lr {self.optimizer.lr:.3g} {tok_rate:,.0f} tok/s")
        hook = getattr(self.task, "on_validation", None)
        if hook is not None:
            hook(self.reporter)
        return stop

    def _checkpoint(self) -> None:
        self.save()
        self.reporter.emit({"event": "checkpoint", "step": self.step, "path": str(self.output)})

    def run(self) -> dict:
        s, task, opt, params = self.s, self.task, self.optimizer, self.params
        started = self.clock()
        seconds0 = self.seconds
        start_step = self.step
        loss_sum, loss_n, tokens, window_t = 0.0, 0, 0, self.clock()
        tok_rate = 0.0
        last_val_step = None
        stop_reason = self._done(started)
        empty_passes = 0
        self._take_snapshot()
        # The bar counts whichever rule is set (steps, else epochs, else seconds) so rich's ETA
        # column means something.
        if s.steps is not None:
            total, done_now = float(s.steps), lambda now: self.step
        elif s.epochs is not None:
            total, done_now = float(s.epochs), lambda now: self.epochs_done()
        else:
            total, done_now = float(s.time_budget), lambda now: now - started
        try:
            with self.reporter.progress("training", total=total) as bar:
                bar.update(completed=done_now(started))
                last_bar = 0.0
                while stop_reason is None:
                    rolled_back, n_batches = False, 0
                    for batch in task.train_batches(self.rng):
                        n_batches += 1
                        if self.device != "cpu":
                            batch = seqtool_device.put_tree(batch, self.device)
                        loss = task.loss(batch)
                        value = float(loss.data)
                        if not math.isfinite(value):
                            self._rollback("non-finite loss")
                            rolled_back = True
                            break
                        for p in params:
                            p.grad = None
                        loss.backward()
                        if s.clip_norm:
                            norm = clip_grad_norm(params, s.clip_norm)
                            if not math.isfinite(norm):
                                self._rollback("non-finite gradient")
                                rolled_back = True
                                break
                        opt.step()
                        self.step += 1
                        loss_sum += value
                        loss_n += 1
                        tokens += task.batch_tokens(batch)
                        now = self.clock()
                        self.seconds = seconds0 + (now - started)
                        if now - last_bar > 0.25:  # rich redraws are not free: throttle
                            last_bar = now
                            rate = tokens / max(now - window_t, 1e-9)
                            bar.update(completed=min(done_now(now), total),
                                       description=f"step {self.step} loss {loss_sum / loss_n:.3f} "
                                                   f"{rate:,.0f} tok/s")
                        validate = self.step % s.val_every == 0
                        ckpt = s.checkpoint_every is not None and self.step % s.checkpoint_every == 0
                        stop_reason = self._done(started)
                        if validate:
                            tok_rate = tokens / max(now - window_t, 1e-9)
                            if self._validate(loss_sum / loss_n, tok_rate):
                                stop_reason = "early stopping"
                            last_val_step = self.step
                            loss_sum, loss_n, tokens, window_t = 0.0, 0, 0, self.clock()
                            self._take_snapshot()
                            ckpt = ckpt or s.checkpoint_every is None
                        if ckpt and stop_reason is None:
                            self._checkpoint()
                        if stop_reason is not None:
                            break
                    else:
                        self.epoch += 1
                        stop_reason = self._done(started)
                    # One empty pass is normal (a checkpoint taken right after an epoch's last
                    # batch resumes at its end); two in a row mean there is nothing to train on.
                    empty_passes = empty_passes + 1 if n_batches == 0 and not rolled_back else 0
                    if empty_passes >= 2:
                        raise SeqtoolError("the training data gives no batches")
        except KeyboardInterrupt:
            # Keep what was learned; the CLI turns the re-raised interrupt into exit 130.
            self.save()
            self.reporter.emit({"event": "checkpoint", "step": self.step, "path": str(self.output),
                                "interrupted": True})
            raise
        if last_val_step != self.step and self.step > start_step:
            now = self.clock()
            rate = tokens / max(now - window_t, 1e-9) if tokens else tok_rate
            self._validate(loss_sum / loss_n if loss_n else None, rate, final=True)
            tok_rate = rate if tokens else tok_rate
        if self.s.patience is not None and self.best_weights is not None and self.best_step != self.step:
            self.model.load_state_dict(self.best_weights)
            self.reporter.info(f"restored the best weights (step {self.best_step}, "
                               f"val {self.best_val:.4f})")
        self._checkpoint()
        summary = {"event": "done", "reason": stop_reason, "steps": self.step, "epochs": self.epochs_done(),
                   "seconds": round(self.seconds, 3),
                   "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                   "best_step": self.best_step, "tokens_per_s": round(tok_rate, 1),
                   "path": str(self.output)}
        self.reporter.emit(summary)
        self.reporter.info(f"stopped ({stop_reason}) after {self.step} steps; saved {self.output}")
        return summary


def modelfile_float(x: float):
    # Strict JSON has no inf: spell it as a string float() reads back.
    return x if math.isfinite(x) else repr(float(x))
