"""A wall-clock budget for one training stage, planned in whole epochs.

The first steps of a session are timed (steps 5 to 5 + min(50, max(5, epoch / 4)), after start-up
noise), then the stage keeps the whole epochs that fit and the learning-rate schedule ends there.
At every epoch end the plan is redone with what the epochs really took, evaluation included, so a
machine that got busier or freer moves the end by whole epochs. Past 110% of the budget the stage
stops. Under several processes every decision is the same on all of them (min/max over ranks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

CALIBRATION_SKIP = 5  # steps left out of the timing: the first ones pay for allocation and warm-up
OVERRUN = 1.1  # stop once the stage has used this share of its budget


@dataclass
class BudgetPlan:
    epochs: int
    total_steps: int
    seconds_per_step: float


class TimeBudget:
    """Owns the calibration, the fit to the budget and the re-plan at each epoch end.

    Args:
        seconds: the budget (None: no budget; every method then returns None/False).
        steps_per_epoch: optimizer steps per epoch on this process.
        epochs: the epochs planned without a budget (the most it may keep).
        max_steps: a hard cap on the steps (None: none).
        agree: ``(value, "min"|"max") -> value`` agreed by every process.
    """

    def __init__(self, seconds: float | None, steps_per_epoch: int, epochs: int, max_steps: int | None,
                 agree: Callable[[int, str], int]):
        self.seconds = seconds
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.max_steps = max_steps
        self.agree = agree
        self.calibrated = True
        self.t0 = self.prior = 0.0
        self.first_step = self.cal_from = self.cal_to = 0
        self.t_cal: float | None = None

    def start(self, step: int, t0: float, prior_seconds: float, resumed: bool) -> None:
        """A session starts at ``step`` at time ``t0``; earlier sessions took ``prior_seconds``.

        A resumed session keeps the plan it saved (in the schedule) rather than calibrating again.
        """
        self.first_step, self.t0, self.prior = step, t0, prior_seconds
        self.cal_from = step + CALIBRATION_SKIP
        self.cal_to = self.cal_from + min(50, max(5, self.steps_per_epoch // 4))
        self.calibrated = not self.seconds or resumed

    def elapsed(self, now: float) -> float:
        """Seconds of this stage over every session."""
        return self.prior + now - self.t0

    def after_step(self, step: int, now: float) -> BudgetPlan | None:
        """The first plan, when ``step`` ends the calibration window; None otherwise."""
        if self.calibrated:
            return None
        if step == self.cal_from:
            self.t_cal = now
        elif step == self.cal_to:
            self.calibrated = True
            per_step = (now - self.t_cal) / (self.cal_to - self.cal_from)
            # 8% kept back for the evaluations, which the calibration steps do not include.
            return self._fit(step, per_step, now, keep=0.92, at_least=1)
        return None

    def replan(self, step: int, epochs_done: int, now: float) -> BudgetPlan | None:
        """At an epoch end: the plan from the measured seconds per step (None without a budget)."""
        if not self.seconds or not self.calibrated:
            return None
        per_step = (now - self.t0) / max(1, step - self.first_step)
        return self._fit(step, per_step, now, keep=0.95, at_least=epochs_done)

    def over(self, step: int, now: float, every: int) -> bool:
        """Past the budget? Asked on every ``every``-th step only, which all processes reach together."""
        if not (self.seconds and self.calibrated and step % every == 0):
            return False
        return bool(self.agree(int(self.elapsed(now) > OVERRUN * self.seconds), "max"))

    def _fit(self, step: int, seconds_per_step: float, now: float, keep: float, at_least: int) -> BudgetPlan:
        """Whole epochs that fit in ``keep`` of what is left, never ending before ``step``."""
        left = self.seconds - self.elapsed(now)
        fit = int((step + keep * left / seconds_per_step) // self.steps_per_epoch)
        epochs = self.agree(max(at_least, min(self.epochs, fit)), "min")
        total = max(min(self.steps_per_epoch * epochs, self.max_steps or 10**12), step)
        return BudgetPlan(epochs, total, seconds_per_step)
