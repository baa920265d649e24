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
    evaluate_part(rank, size)     optional, for MPI: a picklable partial result of this rank's
                                  deterministic share of the held-out data
    merge_validation(parts)       what evaluate() returns, from every rank's part (rank order)
    adopt_validation(result)      sets the task state a validation leaves (tuned settings, scores
                                  for on_validation) from the merged result; returns it.
                                  evaluate() = adopt_validation(merge_validation([evaluate_part(0, 1)]))
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
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba.core import event as numba_event

from seqtool import device as seqtool_device
from seqtool.io import modelfile
from seqtool.training.distributed import Agreement, Replicas, current_world, fingerprint
from seqtool.errors import SeqtoolError, UsageError
from seqtool.training.interrupt import deferred_interrupts
from seqtool.optim import clip_grad_norm, make_optimizer
from seqtool.training.schedule import LearningRate

__all__ = ["TrainSettings", "Trainer", "NullReporter", "TrainingInterrupted", "TASK_ARRAY_PREFIX"]

# Task arrays ride in the optimizer namespace ("optim/") so model loading and parameter counts
# ignore them; this sub-prefix keeps them apart from the optimizer's own arrays.
TASK_ARRAY_PREFIX = "_task/"
MAX_ROLLBACKS = 3
# What a cold kernel cache costs before the first step (measured: charlm LSTM 128 on 2 busy cores,
# seqtool train charlm --steps 3 with an empty NUMBA_CACHE_DIR; later runs load the cache).
COMPILE_ESTIMATE_S = 40


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a complete step; the message says where the checkpoint is."""


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
    lr_schedule: str = "plateau"  # or "cosine" (seqtool.training.schedule)
    warmup: int = 0  # steps of linear warm-up

    def check(self) -> None:
        if self.epochs is None and self.steps is None and self.time_budget is None:
            raise UsageError("give a stopping rule: --epochs, --steps or --time-budget")
        if self.val_every < 1:
            raise UsageError(f"validation interval must be positive, got {self.val_every}")

    def to_json(self) -> dict:
        return {"optimizer": self.optimizer, "lr": self.lr, "clip_norm": self.clip_norm,
                "val_every": self.val_every, "patience": self.patience,
                "checkpoint_every": self.checkpoint_every, "lr_patience": self.lr_patience,
                "lr_factor": self.lr_factor, "lr_schedule": self.lr_schedule, "warmup": self.warmup}


class Trainer:
    """Runs ``task`` until a stopping rule fires; ``run()`` returns a summary dict.

    Under ``mpiexec`` (``world``: seqtool.training.distributed.current_world()) every rank runs a Trainer
    on the same global batches; see seqtool.training.distributed.Replicas for what a step does there.
    Validation is split over the ranks and its merged result reaches every rank; only rank 0
    reports and writes files; decisions reach every rank.
    """

    def __init__(self, task, output, settings: TrainSettings, rng: np.random.Generator | None = None,
                 reporter=None, resume=None, clock=time.monotonic, device: str = "cpu", world=None):
        settings.check()
        self.task, self.output, self.s = task, output, settings
        self.world = world if world is not None else current_world()
        if self.world.size > 1 and device != "cpu":
            raise UsageError("training on several MPI ranks runs on the CPU; use --device cpu")
        self.device = device
        seqtool_device.use(device)  # one-line error without a GPU
        self.model = seqtool_device.module_to(task.model, device)  # before the optimizer's state
        self.reporter = (reporter or NullReporter()) if self.world.is_root else NullReporter()
        self.clock = clock
        self.params = list(self.model.parameters())
        self.rng = rng if rng is not None else np.random.default_rng()
        self.optimizer = make_optimizer(settings.optimizer, self.params, settings.lr)
        self.scheduler = LearningRate(self.optimizer, settings.lr_schedule, settings.warmup,
                                      settings.lr_factor, settings.lr_patience)
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
        self.replicas = Replicas(self.world, task, self.params)
        self._carried_axis = getattr(task, "carried_batch_axis", None)
        if resume is not None:
            self._load_checkpoint(resume)
        self._start_together()

    def _start_together(self) -> None:
        """Check that every rank was started alike (reported once), then take rank 0's weights
        and optimizer state, so all ranks begin identical. Nothing to do on one process."""
        if self.world.size == 1:
            return
        n_params = sum(int(p.size) for p in self.params)
        self.world.check_start(fingerprint(sys.argv[1:], self.s.to_json(), self.task.meta(),
                                           self.task.data_state(), n_params))
        state = self.world.bcast((self.model.state_dict(), self.optimizer.state_dict()), "start-up")
        if not self.world.is_root:
            self.model.load_state_dict(state[0])
            self.optimizer.load_state_dict(state[1])

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
        for k, v in self.replicas.gather_arrays(self.task.state_arrays(), self._carried_axis).items():
            optim_arrays[TASK_ARRAY_PREFIX + k] = v
        if not self.world.is_root:  # the gather above is collective; the file is rank 0's
            return
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
        task_arrays = self.replicas.shard_arrays(task_arrays, self._carried_axis)
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
        lr, peak = self.optimizer.lr, self.scheduler.peak.lr
        self.model.load_state_dict(snap["weights"])
        self.optimizer.load_state_dict(snap["optim"])
        self.scheduler.load_state_dict(snap["sched"])
        self.optimizer.lr, self.scheduler.peak.lr = lr, peak
        self.scheduler.halve()
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
        if s.time_budget is not None and self._time_up(started):
            return "time budget"
        return None

    def _time_up(self, started: float) -> bool:
        if self.world.size > 1:  # rank 0's clock, as every rank learnt at the last step
            return self._agreed.time_up
        return self._budget_used(started) >= self.s.time_budget

    def _stop_requested(self) -> bool:
        """Ctrl-C (on any rank: all stop after the same step)."""
        return self._agreed.interrupted if self.world.size > 1 else self._interrupts.requested

    def _budget_used(self, started: float) -> float:
        """Seconds counted against --time-budget: kernel compilation (first run only) is not."""
        compiling = getattr(self, "_compiling", None)
        return self.clock() - started - (compiling.seconds if compiling is not None else 0.0)

    def _validate(self, train_loss: float | None, tok_rate: float, final: bool = False) -> bool:
        """Evaluate, record, adjust lr; returns True when early stopping says stop.

        ``final`` (the extra validation when training stops between validations) records the loss
        but leaves the lr schedule and patience alone, so stopping early and resuming continues
        exactly as an uninterrupted run would.
        """
        result = self.replicas.evaluate()  # on several ranks: split over them, the same everywhere
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
            stop = self._record_validation(val, final)
        self._report_validation(record, train_loss, tok_rate)
        return stop

    def _record_validation(self, val: float, final: bool) -> bool:
        """Best-so-far, patience and the lr schedule; True when early stopping says stop."""
        if val < self.best_val:
            self.best_val, self.best_step = val, self.step
            if self.s.patience is not None:
                self.best_weights = self.model.state_dict()
        if not final:
            self.bad_validations = 0 if self.best_step == self.step else self.bad_validations + 1
            self.scheduler.validated(val)
        return self.s.patience is not None and self.bad_validations >= self.s.patience

    def _report_validation(self, record: dict, train_loss: float | None, tok_rate: float) -> None:
        self.reporter.emit(record)
        val_txt = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
        tr_txt = f" train {train_loss:.4f}" if train_loss is not None else ""
        self.reporter.info(f"step {self.step} epoch {record['epoch']:.2f}{tr_txt}{val_txt} "
                           f"lr {self.optimizer.lr:.3g} {tok_rate:,.0f} tok/s")
        hook = getattr(self.task, "on_validation", None)
        if hook is not None:
            hook(self.reporter)

    def _checkpoint(self) -> None:
        self.save()
        self.reporter.emit({"event": "checkpoint", "step": self.step, "path": str(self.output)})

    def run(self) -> dict:
        """Train until a stopping rule fires; save the model and return the summary record."""
        self._begin()
        try:
            with deferred_interrupts() as self._interrupts, _CompileWatch(self) as self._compiling, \
                    self.reporter.progress("training", total=self._bar_total) as bar:
                self._bar = bar
                bar.update(completed=self._bar_done(self._started))
                while self.stop_reason is None:
                    self._run_epoch()
        except KeyboardInterrupt:
            if self.world.size > 1:  # inside a step on one rank: no collective save possible
                raise
            self._save_interrupted()
        if self.stop_reason == "interrupted":
            self._save_interrupted()
        self._final_validation()
        self._restore_best()
        self._checkpoint()
        return self._summarize()

    def _begin(self) -> None:
        """The clocks, counters and progress bar of this invocation."""
        s = self.s
        self._compiling = None
        self._started = self.clock()
        self._seconds0, self._start_step = self.seconds, self.step
        self._window = _Window(self._started)
        self._tok_rate, self._last_bar = 0.0, 0.0
        self._last_val_step = None
        self._empty_passes = 0
        self._in_step, self._before_step = False, None
        self._agreed = Agreement(0.0, False, 0.0)
        self.stop_reason = self._done(self._started)
        self._take_snapshot()
        # The bar counts whichever rule is set (steps, else epochs, else seconds) so rich's ETA
        # column means something.
        if s.steps is not None:
            self._bar_total, self._bar_done = float(s.steps), lambda now: self.step
        elif s.epochs is not None:
            self._bar_total, self._bar_done = float(s.epochs), lambda now: self.epochs_done()
        else:
            self._bar_total, self._bar_done = float(s.time_budget), lambda now: now - self._started

    def _run_epoch(self) -> None:
        """Steps over the rest of the epoch until it ends, a stopping rule fires or a rollback."""
        batches = self.task.train_batches(self.rng)
        n_batches, rolled_back = 0, False
        while True:
            # Where the data, RNG and carried arrays stood before this step: an interrupt that
            # lands inside the step saves this position, so the resumed run redoes the step.
            self._before_step, self._in_step = self._position(), True
            batch = next(batches, _END)
            if batch is _END:
                self._in_step = False
                self.epoch += 1
                self.stop_reason = self._done(self._started) or (
                    "interrupted" if self._stop_requested() else None)
                break
            n_batches += 1
            stepped = self._train_step(batch)
            self._in_step = False
            if not stepped:
                rolled_back = True
                break
            if self._after_step():
                break
        # One empty pass is normal (a checkpoint taken right after an epoch's last batch resumes
        # at its end); two in a row mean there is nothing to train on.
        self._empty_passes = self._empty_passes + 1 if n_batches == 0 and not rolled_back else 0
        if self._empty_passes >= 2:
            raise SeqtoolError("the training data gives no batches")

    def _train_step(self, batch) -> bool:
        """Forward, backward, (on several ranks: sum), clip, update; False when a non-finite
        loss or gradient rolled back."""
        if self.device != "cpu":
            batch = seqtool_device.put_tree(batch, self.device)
        for p in self.params:
            p.grad = None
        with self.replicas.own_randomness(self.rng):
            loss = self.replicas.loss(batch)
            value = None if loss is None else float(loss.data)
            if value is not None and math.isfinite(value):
                loss.backward()
        budget = (self._budget_used(self._started) / self.s.time_budget
                  if self.s.time_budget is not None else 0.0)
        self._agreed = self.replicas.reduce(value, self._interrupts.requested, budget)
        if not math.isfinite(self._agreed.loss):
            self._rollback("non-finite loss")
            return False
        if self.s.clip_norm and not math.isfinite(clip_grad_norm(self.params, self.s.clip_norm)):
            self._rollback("non-finite gradient")
            return False
        self.scheduler.set_for_step(self.step, self._run_progress())
        self.optimizer.step()
        self.step += 1
        self._window.add(self._agreed.loss, self.task.batch_tokens(batch))
        return True

    def _run_progress(self) -> float:
        """How much of the run is done, by whichever stopping rule is furthest along (the time
        budget as every rank agreed at this step)."""
        s = self.s
        done = [self._agreed.budget]
        if s.steps is not None:
            done.append(self.step / s.steps)
        if s.epochs is not None:
            done.append(self.epochs_done() / s.epochs)
        return max(done)

    def _after_step(self) -> bool:
        """Progress, stopping rules, validation and checkpoints after a step; True: stop now."""
        s, now = self.s, self.clock()
        self.seconds = self._seconds0 + (now - self._started)
        self._update_bar(now)
        ckpt = s.checkpoint_every is not None and self.step % s.checkpoint_every == 0
        self.stop_reason = self._done(self._started)
        if self.step % s.val_every == 0:
            self._periodic_validation(now)
            ckpt = ckpt or s.checkpoint_every is None
        if self._stop_requested():
            # After the step's validation, so the saved state is the uninterrupted run's.
            self.stop_reason = "interrupted"
        if ckpt and self.stop_reason is None:
            self._checkpoint()
        return self.stop_reason is not None

    def _update_bar(self, now: float) -> None:
        if now - self._last_bar > 0.25:  # rich redraws are not free: throttle
            self._last_bar = now
            w = self._window
            self._bar.update(completed=min(self._bar_done(now), self._bar_total),
                             description=f"step {self.step} loss {w.loss_sum / w.loss_n:.3f} "
                                         f"{w.rate(now):,.0f} tok/s")

    def _periodic_validation(self, now: float) -> None:
        self._tok_rate = self._window.rate(now)
        if self._validate(self._window.mean_loss(), self._tok_rate):
            self.stop_reason = "early stopping"
        self._last_val_step = self.step
        self._window = _Window(self.clock())
        self._take_snapshot()

    def _position(self) -> tuple:
        return (self.task.data_state(), self.rng.bit_generator.state, dict(self.task.state_arrays()))

    def _save_interrupted(self) -> None:
        """Save the state after the last complete step and raise TrainingInterrupted (exit 130).

        An interrupt raised inside a step (the library used without deferred_interrupts, or a
        task's own code) rewinds the data, RNG and carried arrays to the step's start first, so
        resuming is exact either way.
        """
        if self._in_step and self._before_step is not None:
            data, rng_state, arrays = self._before_step
            self.task.load_data_state(data)
            self.rng.bit_generator.state = rng_state
            self.task.load_state_arrays(arrays)
        self.save()
        self.reporter.emit({"event": "checkpoint", "step": self.step, "path": str(self.output),
                            "interrupted": True})
        raise TrainingInterrupted(f"interrupted at step {self.step}; checkpoint saved to {self.output} "
                                  f"(resume with --resume {self.output})")

    def _final_validation(self) -> None:
        """A last validation when training stopped between two (not after a resume with no steps)."""
        if self._last_val_step == self.step or self.step <= self._start_step:
            return
        w = self._window
        rate = w.rate(self.clock()) if w.tokens else self._tok_rate
        self._validate(w.mean_loss(), rate, final=True)
        self._tok_rate = rate

    def _restore_best(self) -> None:
        if self.s.patience is not None and self.best_weights is not None and self.best_step != self.step:
            self.model.load_state_dict(self.best_weights)
            self.reporter.info(f"restored the best weights (step {self.best_step}, "
                               f"val {self.best_val:.4f})")

    def _summarize(self) -> dict:
        summary = {"event": "done", "reason": self.stop_reason, "steps": self.step,
                   "epochs": self.epochs_done(), "seconds": round(self.seconds, 3),
                   "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                   "best_step": self.best_step, "tokens_per_s": round(self._tok_rate, 1),
                   "path": str(self.output)}
        self.reporter.emit(summary)
        self.reporter.info(f"stopped ({self.stop_reason}) after {self.step} steps; saved {self.output}")
        return summary


_END = object()  # what next() gives at the end of an epoch's batches


class _CompileWatch(numba_event.Listener):
    """Times Numba compilations (not cache loads) with the Trainer's clock and says once, at the
    first, that they happen, so the wait has a reason and --time-budget can leave it out."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.seconds, self._depth, self._said = trainer, 0.0, 0, False

    def on_start(self, event) -> None:
        self._depth += 1
        if self._depth == 1:
            self._t0 = self.trainer.clock()
            if not self._said:
                self._said = True
                self.trainer.reporter.info(f"compiling kernels (first run only, ~{COMPILE_ESTIMATE_S} s)")

    def on_end(self, event) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.seconds += self.trainer.clock() - self._t0

    def __enter__(self) -> _CompileWatch:
        numba_event.register("numba:compile", self)
        return self

    def __exit__(self, *exc) -> None:
        numba_event.unregister("numba:compile", self)


@dataclass
class _Window:
    """Training since the last validation: the reported train loss and tokens/s."""

    started: float
    loss_sum: float = 0.0
    loss_n: int = 0
    tokens: int = 0

    def add(self, loss: float, tokens: int) -> None:
        self.loss_sum += loss
        self.loss_n += 1
        self.tokens += tokens

    def rate(self, now: float) -> float:
        return self.tokens / max(now - self.started, 1e-9)

    def mean_loss(self) -> float | None:
        return self.loss_sum / self.loss_n if self.loss_n else None


def modelfile_float(x: float):
    # Strict JSON has no inf: spell it as a string float() reads back.
    return x if math.isfinite(x) else repr(float(x))
