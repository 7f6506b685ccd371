"""Which epoch to keep and when to stop: the best evaluation by the primary metric, and patience."""

from __future__ import annotations

from .checkpoint import Progress


class EarlyStopping:
    """Keeps the best evaluation by ``primary`` (higher is better) in a :class:`Progress`, and stops after
    ``patience`` evaluations in a row without a better one (None: never), after ``cooldown_epochs`` more epochs
    with the learning rate decaying to zero when set.

    Example:
        >>> verdict = EarlyStopping("accuracy", patience=2).update(progress)   # "best", "worse" or "stop"
    """

    def __init__(self, primary: str | None, patience: int | None, cooldown_epochs: int | None = None):
        self.primary, self.patience, self.cooldown_epochs = primary, patience, cooldown_epochs

    def cooldown_end(self, progress: Progress, steps_per_epoch: int, total_steps: int) -> int | None:
        """The step at which the schedule ends when patience is spent now; None: stop at once (no cool-down,
        or one that would not end before the schedule does)."""
        if not self.cooldown_epochs:
            return None
        end = progress.step + self.cooldown_epochs * steps_per_epoch
        return end if end < total_steps else None

    def update(self, progress: Progress) -> str | None:
        """Score ``progress.last``: "best" (a new best, now ``progress.best``), "worse", "stop" (patience
        spent) or None when there is no primary metric to compare."""
        if not self.primary:
            return None
        if progress.best is None or progress.last[self.primary] > progress.best[self.primary]:
            progress.best, progress.stale_evals = dict(progress.last), 0
            return "best"
        progress.stale_evals += 1
        return "stop" if self.patience and progress.stale_evals >= self.patience else "worse"
