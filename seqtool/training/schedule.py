"""The learning rate of every training step: a warm-up ramp, then a plateau rule or a cosine
that reaches its floor when the run ends.

    plateau  the peak lr, halved (ReduceLROnPlateau) after ``lr_patience`` validations without
             a new best: for runs with no known end, or tasks that stop early on their own.
    cosine   peak x (FLOOR + (1 - FLOOR) (1 + cos(pi p)) / 2), p the fraction of the run done
             (steps, epochs or this invocation's --time-budget, whichever is furthest): the
             whole budget is used at a high lr and the last part anneals, which a plateau rule
             only reaches after several wasted validations.

Both start with ``warmup`` steps rising linearly to the peak (Adam's first updates are large
while its second-moment estimate is young). A NaN rollback halves the peak.
"""

from __future__ import annotations

import math

from seqtool.errors import UsageError
from seqtool.optim import ReduceLROnPlateau

__all__ = ["SCHEDULES", "FLOOR", "LearningRate", "cosine_factor"]

SCHEDULES = ("plateau", "cosine")
FLOOR = 0.02  # the cosine ends at 2% of the peak, not 0: the last steps still learn a little


def cosine_factor(progress: float) -> float:
    """The cosine schedule's multiplier of the peak lr at ``progress`` in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return FLOOR + (1.0 - FLOOR) * 0.5 * (1.0 + math.cos(math.pi * p))


class _Peak:
    """What ReduceLROnPlateau adjusts: the peak lr, not the warmed-up or annealed one."""

    def __init__(self, lr: float) -> None:
        self.lr = float(lr)


class LearningRate:
    """Sets ``optimizer.lr`` before each step; ``validated`` feeds the plateau rule."""

    def __init__(self, optimizer, schedule: str = "plateau", warmup: int = 0,
                 lr_factor: float = 0.5, lr_patience: int = 3) -> None:
        if schedule not in SCHEDULES:
            raise UsageError(f"unknown learning-rate schedule {schedule!r}; choose one of: "
                             f"{', '.join(SCHEDULES)}")
        self.optimizer, self.schedule, self.warmup = optimizer, schedule, int(warmup)
        self.peak = _Peak(optimizer.lr)
        self.plateau = (ReduceLROnPlateau(self.peak, factor=lr_factor, patience=lr_patience)
                        if schedule == "plateau" else None)

    def set_for_step(self, step: int, progress: float) -> None:
        """The lr of step ``step`` (0-based) when ``progress`` of the run is done."""
        ramp = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        shape = 1.0 if self.plateau is not None else cosine_factor(progress)
        self.optimizer.lr = self.peak.lr * ramp * shape

    def validated(self, loss: float) -> None:
        if self.plateau is not None:
            self.plateau.step(loss)

    def halve(self) -> None:
        self.peak.lr *= 0.5
        self.optimizer.lr *= 0.5

    def state_dict(self) -> dict:
        return {"type": "LearningRate", "schedule": self.schedule, "warmup": self.warmup,
                "peak": self.peak.lr,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("type") == "ReduceLROnPlateau":  # checkpoints from before warm-up/cosine
            state = {"peak": self.optimizer.lr, "plateau": state}
        self.peak.lr = float(state["peak"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])
