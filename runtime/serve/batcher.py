"""The queue in front of the model: admission control, deadlines and cross-request batching.

Worker threads own the model. Each takes every waiting request it can in one go (up to
``max_batch_texts`` texts), runs them as one `predict` call and splits the results back per request,
so concurrent clients share ORT runs and length buckets.

A request is only worth queueing if it can be answered before its deadline. `submit` predicts the
wait (the texts ahead of it, served in batches whose time is measured, / workers) and refuses at once with
`Overloaded` when that exceeds the time left, so a burst gets 503s straight away instead of 504s
after queueing to no purpose. A queued request whose deadline has passed, or that the estimate (as it
stands when a worker picks the request up) says cannot finish in time, is dropped without running the
model.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any, Callable, Optional

from .service_time import ServiceTime

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"


class Overloaded(Exception):
    """The request cannot be served in time; answered as 503 with Retry-After.

    ``reason`` is one of ``queue_full``, ``predicted_wait``, ``expired`` (dropped from the queue at its
    deadline), ``would_overrun`` (dropped from the queue: it could no longer finish in time) or
    ``shutting_down``; ``retry_after_s`` is the predicted time until it would be admitted.
    """

    def __init__(self, reason: str, message: str, retry_after_s: float = 0.0):
        super().__init__(message)
        self.reason, self.retry_after_s = reason, retry_after_s


class Job:
    """One request's inputs, its deadline (``time.monotonic()`` seconds) and the future it is answered on."""

    __slots__ = ("inputs", "deadline", "future", "loop", "state", "probe")

    def __init__(self, inputs: list, deadline: float, loop: asyncio.AbstractEventLoop):
        self.inputs, self.deadline, self.loop, self.state = inputs, deadline, loop, QUEUED
        self.future: asyncio.Future = loop.create_future()
        self.probe = False  # admitted by an idle server whatever the estimate said: it always runs

    def deliver(self, result: Any = None, error: Optional[BaseException] = None) -> None:
        """Answer from a worker thread; a request that already went away is ignored."""
        try:
            self.loop.call_soon_threadsafe(_set_future, self.future, result, error)
        except RuntimeError:  # the event loop is closed (server shut down)
            pass


def _set_future(future: asyncio.Future, result: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """A bounded, deadline-aware queue and worker threads that run waiting requests together.

    More than one worker pays off when one ORT run cannot use every core well: a Kronecker graph is
    many small GEMMs that scale badly across threads (benchmarks/results/load.md).

    Args:
        predict: ``inputs -> results``, one result per input, in order (`Predictor.predict`).
        queue_size: requests that may wait; the next gets ``Overloaded("queue_full")``.
        max_batch_texts: texts one worker pass takes from the queue, across requests.
        workers: threads running ``predict`` side by side.
    """

    def __init__(self, predict: Callable[[list], list], queue_size: int, max_batch_texts: int, workers: int = 1):
        self._predict = predict
        self.queue_size, self.max_batch_texts, self.workers = queue_size, max_batch_texts, workers
        self.service = ServiceTime()
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self.waiting_texts = 0
        self.running_texts = 0
        self.busy = 0  # workers inside the model right now
        self.model_calls = 0
        self.dropped = 0  # queued requests answered 503 at their deadline without running
        self._threads = [threading.Thread(target=self._run, name=f"kronedge-worker-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def alive(self) -> bool:
        return not self._stop and all(t.is_alive() for t in self._threads)

    def predicted_wait(self, texts: int) -> float:
        """Seconds until a request of ``texts`` texts submitted now would be answered (0 before any
        batch has been measured). Call with the lock held or accept a slightly stale figure."""
        ahead = self.waiting_texts + self.running_texts + texts
        return self.service.margin * self.service.estimate(ahead, self.max_batch_texts) / self.workers

    def submit(self, inputs: list, deadline: float) -> Job:
        """Queue ``inputs`` to be answered by ``deadline`` (monotonic seconds); raises `Overloaded` at once
        when the queue is full or the predicted wait already passes the deadline."""
        job = Job(inputs, deadline, asyncio.get_running_loop())
        with self._cond:
            if self._stop:
                raise Overloaded("shutting_down", "the server is shutting down")
            if len(self._queue) >= self.queue_size:
                wait = self.predicted_wait(0)
                raise Overloaded("queue_full", f"{len(self._queue)} requests are waiting", wait / 2)
            if (self.service.seconds_per_text is None and self._queue
                    and self.waiting_texts + len(inputs) > self.workers * self.max_batch_texts):
                # Nothing timed yet, so no wait can be predicted: queue at most one batch per worker
                # until the first one has run (a cold burst would otherwise all be admitted).
                raise Overloaded("predicted_wait", "the model has not been timed yet and a batch is already waiting")
            wait = self.predicted_wait(len(inputs))
            left = deadline - time.monotonic()
            # An idle server always admits: the estimate is only corrected by running something, so a
            # refusal here after one stalled batch would lock every later request out.
            idle = not self._queue and not self.running_texts
            if wait > left and not idle:
                raise Overloaded("predicted_wait", f"predicted wait {wait:.2f} s exceeds the {max(left, 0):.2f} s left",
                                 wait - left)
            job.probe = idle
            self._queue.append(job)
            self.waiting_texts += len(inputs)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> bool:
        """Withdraw a job whose request gave up. True if it had not started (it never will), False if
        the model is already running it."""
        with self._cond:
            if job.state != QUEUED:
                return job.state == CANCELLED
            job.state = CANCELLED
            self._queue.remove(job)
            self.waiting_texts -= len(job.inputs)
            self.dropped += 1
            return True

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            pending = list(self._queue)
            self._queue.clear()
            self.waiting_texts = 0
            self._cond.notify_all()
        for job in pending:
            job.state = CANCELLED
            job.deliver(error=Overloaded("shutting_down", "the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout)

    def _take(self) -> Optional[list[Job]]:
        """The next batch: waiting jobs up to max_batch_texts texts, minus those whose deadline has passed
        (answered `Overloaded("expired")`) or that the current estimate says cannot finish in time
        (`Overloaded("would_overrun")`: a 503 now instead of a 504 after the work). None when stopping."""
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait(0.5)
            if self._stop:
                return None
            jobs = [self._queue.popleft()]
            texts = len(jobs[0].inputs)
            while self._queue and texts + len(self._queue[0].inputs) <= self.max_batch_texts:
                job = self._queue.popleft()
                jobs.append(job)
                texts += len(job.inputs)
            self.waiting_texts -= texts
            # The estimate may have grown since admission (the machine got busy): re-check with it. A
            # probe always runs, or a stale, too-high estimate would drop everything and never be measured again.
            now = time.monotonic()
            run_s = self.service.margin * self.service.batch(texts)
            keep, expired, overrun = [], [], []
            for job in jobs:
                if job.deadline <= now:
                    expired.append(job)
                elif job.deadline - now < run_s and not job.probe:
                    overrun.append(job)
                else:
                    keep.append(job)
            for job in expired + overrun:
                job.state = CANCELLED
            for job in keep:
                job.state = RUNNING
            self.dropped += len(expired) + len(overrun)
            self.running_texts += sum(len(job.inputs) for job in keep)
            if keep:
                self.busy += 1
                self.model_calls += 1
        wait = self.predicted_wait(0)
        for job in expired:
            job.deliver(error=Overloaded("expired", "the request's deadline passed while it waited for the model", wait))
        for job in overrun:
            job.deliver(error=Overloaded("would_overrun", "the model is slower than when the request was admitted; "
                                         "it could not finish before its deadline", wait))
        return keep

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            if not jobs:
                continue
            texts = sum(len(job.inputs) for job in jobs)
            start = time.perf_counter()
            try:
                results = self._predict([x for job in jobs for x in job.inputs])
                error = None
            except Exception as exc:  # reported to each waiting request as a 500; the worker lives on
                log.exception("predict failed on a batch of %d texts", texts)
                results, error = None, exc
            seconds = time.perf_counter() - start
            with self._cond:
                self.busy -= 1
                self.running_texts -= texts
                if error is None:
                    self.service.observe(seconds, texts)
                for job in jobs:
                    job.state = DONE
            start_i = 0
            for job in jobs:
                if error is not None:
                    job.deliver(error=error)
                else:
                    job.deliver(results[start_i:start_i + len(job.inputs)])
                start_i += len(job.inputs)
