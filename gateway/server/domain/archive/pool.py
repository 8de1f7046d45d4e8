"""The threads that run archive checks, shared fairly between uploads.

A check is fed in batches (``ArchiveCheck``); each batch is one job here. The loop's default
executor runs jobs first come, first served, so a few uploads with costly archives kept every
thread busy and a small upload waited for all of them. Here the job of the upload that has used
the least CPU time so far runs first: a new upload (none used) goes ahead of every heavy one, and
a running job gives way between two chunks when a lighter upload's job waits, so the new one
waits for one chunk's work at most. Jobs of an upload whose check was given up are dropped
without running.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class CheckClock:
    """The CPU time one upload's check has used so far (its jobs count it themselves)."""

    def __init__(self) -> None:
        self.used = 0.0
        self.closed = False  # the upload is over: its queued jobs are not wanted


@dataclass(order=True)
class _Job:
    used: float
    seq: int
    clock: CheckClock = field(compare=False)
    work: Callable[[], Any] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)


class CheckPool:
    """``threads`` worker threads, started as jobs come and told to stop by ``close``."""

    def __init__(self, threads: int) -> None:
        assert threads >= 1
        self.threads = threads
        self._jobs: list[_Job] = []
        self._ready = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._seq = itertools.count()
        self._closed = False

    async def run(self, clock: CheckClock, work: Callable[[], T]) -> T:
        """Run ``work`` in a pool thread, ahead of the jobs of uploads whose ``clock`` says they
        used more; its result or error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the check pool is closed")
            heapq.heappush(self._jobs, _Job(clock.used, next(self._seq), clock, work, future, loop))
            if len(self._workers) < self.threads:
                self._start_worker()
            self._ready.notify()
        return await future

    def lighter_waiting(self, used: float) -> bool:
        """Whether a job of an upload that has used less than ``used`` seconds is waiting: a
        running job checks between chunks and gives way (its rest is queued again)."""
        with self._ready:
            return bool(self._jobs) and self._jobs[0].used < used

    def close(self) -> None:
        """Stop the threads once the jobs running now are done; queued jobs are dropped."""
        with self._ready:
            self._closed = True
            dropped, self._jobs = self._jobs, []
            self._ready.notify_all()
        for job in dropped:
            _post(job, _cancel, None)
        # Not joined: a batch still running ends on its own (its upload is gone), and the event
        # loop calling this must not wait for it.

    def _start_worker(self) -> None:
        worker = threading.Thread(
            target=self._work, name=f"archive-check-{len(self._workers)}", daemon=True
        )
        self._workers.append(worker)
        worker.start()

    def _next(self) -> _Job | None:
        with self._ready:
            while not self._jobs and not self._closed:
                self._ready.wait()
            return heapq.heappop(self._jobs) if self._jobs else None

    def _work(self) -> None:
        while (job := self._next()) is not None:
            if job.clock.closed or job.future.cancelled():
                _post(job, _cancel, None)
                continue
            try:
                result = job.work()
            except BaseException as exc:  # handed to the awaiting upload, as an executor does
                _post(job, _fail, exc)
            else:
                _post(job, _succeed, result)


def _post(job: _Job, settle: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: no one waits for the answer
        job.loop.call_soon_threadsafe(settle, job.future, value)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _cancel(future: asyncio.Future[Any], _: Any = None) -> None:
    future.cancel()
