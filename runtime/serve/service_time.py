"""`ServiceTime`: how long the model takes for a batch, learnt from the batches it has run.

The batcher's admission control and its last check before a run both ask it; it knows nothing of
queues or deadlines.
"""

from __future__ import annotations

from typing import Optional

# Predicted times are stretched by at least this much before they are compared with a deadline:
# refusing a little early costs a retry, admitting work that then overruns costs the work and a 504.
SAFETY = 1.25
ERROR_BASE_S = 0.1


class ServiceTime:
    """How long the model takes for a batch of n texts, learnt from finished batches.

    A line ``t(n) = fixed + per_text * n`` fitted by exponentially weighted least squares, because a
    run has a fixed cost and the queue is served in batches of up to ``max_batch_texts``: charging every
    text the per-text cost of small batches would overstate a burst of full ones. Until batches of
    different sizes have been seen (or when the fit is not a rising line) it falls back to the weighted
    mean of seconds per text, which errs high for big batches, towards 503 over 504.
    """

    def __init__(self, alpha: float = 0.2):
        assert 0 < alpha <= 1, alpha
        self.alpha = alpha
        self.seconds_per_text: Optional[float] = None  # None until the first batch finishes (or a seed)
        self._moments: Optional[list[float]] = None  # weighted means of n, t, n*n, n*t
        # Weighted mean of |actual - predicted| / predicted: how far to trust the line. On a shared
        # machine the same batch can take twice as long from one second to the next.
        self.relative_error = 0.0

    @property
    def margin(self) -> float:
        """Factor on predicted times before they meet a deadline: SAFETY, widened by the recent error
        of the predictions (as TCP pads its round-trip estimate by its deviation)."""
        return SAFETY + 2 * self.relative_error

    def observe(self, seconds: float, texts: int) -> None:
        n = max(texts, 1)
        predicted = self.batch(n)
        if predicted > 0:
            # Over at least ERROR_BASE_S: a few ms of scheduler noise on a tiny batch is no sign that a
            # queue of full batches will overrun.
            error = abs(seconds - predicted) / max(predicted, ERROR_BASE_S)
            self.relative_error += self.alpha * (error - self.relative_error)
        sample = [n, seconds, n * n, n * seconds]
        if self._moments is None:
            self._moments = sample
        else:
            self._moments = [m + self.alpha * (x - m) for m, x in zip(self._moments, sample)]
        per_text = seconds / n
        self.seconds_per_text = per_text if self.seconds_per_text is None else (
            self.seconds_per_text + self.alpha * (per_text - self.seconds_per_text))

    def line(self) -> Optional[tuple[float, float]]:
        """(fixed seconds, seconds per text), or None while the batches seen cannot pin a line down."""
        if self._moments is None:
            return None
        mn, mt, mnn, mnt = self._moments
        var = mnn - mn * mn
        if var < 0.25:  # batch sizes have hardly varied
            return None
        slope = (mnt - mn * mt) / var
        fixed = mt - slope * mn
        return (fixed, slope) if slope > 0 and fixed >= 0 else None

    def batch(self, texts: int) -> float:
        """Seconds for one batch of ``texts`` texts (0 before anything has been measured)."""
        fit = self.line()
        if fit is not None:
            return fit[0] + fit[1] * texts
        return 0.0 if self.seconds_per_text is None else texts * self.seconds_per_text

    def estimate(self, texts: int, max_batch_texts: int) -> float:
        """Seconds to serve ``texts`` texts in batches of up to ``max_batch_texts``."""
        if texts <= 0:
            return 0.0
        full, rest = divmod(texts, max_batch_texts)
        return full * self.batch(max_batch_texts) + (self.batch(rest) if rest else 0.0)
