"""One upload's archive check, run off the event loop as its body streams.

Chunks are handed to a worker thread in batches of ``BATCH_BYTES``; while one batch inflates, the
upload goes on reading the next, so the check costs the upload little time, and the event loop
none. A problem found in one batch surfaces at the next ``feed`` (or at ``finish``).

The check may fall behind the body by ``ahead`` bytes (one batch by default): a resumable upload,
which keeps its part's bytes until the store has them anyway, lets it fall a part behind, so the
check goes on inflating while the request waits for its part and commit, and the client's next
request finds it less far behind (``when_checked`` says when those bytes are checked, and free).

The threads are the gateway's ``CheckPool``, shared fairly (the upload that used least CPU goes
first), and one check may use at most ``sources.archive_check_cpu_seconds`` of CPU time: past it,
the archive is refused like any other problem.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ....config import SourcesConfig
from ....errors import ArchiveInvalid
from .facts import ArchiveFacts
from .inspector import BATCH_BYTES, ArchiveInspector, Mode
from .pool import CheckClock, CheckPool

T = TypeVar("T")


@dataclass(frozen=True)
class ArchivePolicy:
    """The ``sources.archive_check`` settings; makes one check per upload."""

    mode: Mode = "enforce"
    max_inflated_bytes: int = 4 * 1024**3
    max_entries: int = 200_000
    cpu_seconds: float | None = None
    pool: CheckPool | None = None  # None: the loop's default executor

    @classmethod
    def of(cls, sources: SourcesConfig, pool: CheckPool | None = None) -> ArchivePolicy:
        return cls(
            sources.archive_check,
            sources.max_inflated_bytes,
            sources.max_entries,
            sources.archive_check_cpu_seconds,
            pool,
        )

    def start(self) -> ArchiveCheck | None:
        """A check for a new upload, or None when checks are off."""
        if self.mode == "off":
            return None
        return ArchiveCheck(
            self.mode,
            self.max_inflated_bytes,
            self.max_entries,
            pool=self.pool,
            cpu_seconds=self.cpu_seconds,
        )


class ArchiveCheck:
    """Feeds one upload's body to an ``ArchiveInspector`` in ``enforce`` or ``report`` mode."""

    def __init__(
        self,
        mode: Mode,
        max_inflated_bytes: int,
        max_entries: int,
        batch: int = BATCH_BYTES,
        *,
        pool: CheckPool | None = None,
        cpu_seconds: float | None = None,
    ) -> None:
        assert mode != "off", "an upload without a check has no ArchiveCheck"
        self.mode = mode
        self._pool = pool
        self._cpu_seconds = cpu_seconds
        self.clock = CheckClock()
        self._inspector = ArchiveInspector(max_inflated_bytes, max_entries)
        self._batch_size = batch
        self._batch: list[bytes] = []
        self._batched = 0
        # Full batches wait in ``_queue`` for the one task (``_running``) that feeds the thread.
        self._ahead = batch
        self._queue: collections.deque[list[bytes]] = collections.deque()
        self._queued = 0  # bytes handed over, not yet checked
        self._handed = 0  # bytes handed over in all
        self._progress = asyncio.Event()
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._running: asyncio.Future[None] | None = None
        self._problem: str | None = None

    async def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body; raise ``ArchiveInvalid`` (enforce) once one is found."""
        if self._running is not None and self._running.done():
            await self._wait()  # a refusal surfaces as soon as it is known
        if self._problem is not None or not chunk:
            return
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= self._batch_size:
            latest = self._batched
            self._start()
            # Past ``ahead`` bytes before this batch, the body waits for the check.
            while self._queued - latest >= self._ahead and not self._done():
                self._progress.clear()
                await self._progress.wait()
            if self._done():
                await self._wait()

    async def finish(self) -> ArchiveFacts:
        """Wait for the last batch and judge the end of the stream; return the facts."""
        await self._wait()
        if self._problem is None and self._batch:
            self._start()
            await self._wait()
        if self._problem is None:
            try:  # following the archive's links may take a while: off the loop too
                return await self._submit(self._finish_timed)
            except ArchiveInvalid as exc:
                self._found(exc)
        return self._inspector.facts(self._problem)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def fall_behind(self, size: int) -> None:
        """Let the check fall up to ``size`` bytes behind the body (at least a batch)."""
        self._ahead = max(size, self._batch_size)

    def when_checked(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the bytes handed to the thread so far are checked (or given
        up): now, if none wait."""
        if self._queued and not self._done():
            self._waiters.append((self._handed, callback))
        else:
            callback()

    def close(self) -> None:
        """Let go of a batch still inflating (the upload failed): its outcome is not wanted."""
        self.clock.closed = True
        self._queue.clear()
        self._queued = 0
        if self._running is not None:
            self._running.add_done_callback(_ignore)
            self._running = None
        self._checked()

    def _done(self) -> bool:
        return self._running is None or self._running.done()

    def _start(self) -> None:
        batch, self._batch = self._batch, []
        self._queue.append(batch)
        self._queued += self._batched
        self._handed += self._batched
        self._batched = 0
        if self._done():
            self._running = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        """Feed the queued batches to the thread, in order, until none is left."""
        try:
            while self._queue:
                batch = self._queue.popleft()
                await self._run_batch(batch)
                self._queued = max(0, self._queued - sum(len(chunk) for chunk in batch))
                self._checked()
        except BaseException:
            self._queue.clear()  # a refusal (or a cancellation): the rest is not wanted
            self._queued = 0
            raise
        finally:
            self._checked()

    def _checked(self) -> None:
        """Wake a ``feed`` waiting for room; run the ``when_checked`` callbacks whose bytes are
        checked (or given up)."""
        self._progress.set()
        done = self._handed - self._queued
        ready = [callback for at, callback in self._waiters if at <= done]
        self._waiters = [(at, callback) for at, callback in self._waiters if at > done]
        for callback in ready:
            callback()

    async def _run_batch(self, batch: list[bytes]) -> None:
        # A batch the pool interrupts for a lighter upload's job goes back in line for the rest.
        rest = batch
        while rest:
            rest = await self._submit(functools.partial(self._feed_some, rest))

    def _submit(self, work: Callable[[], T]) -> Awaitable[T]:
        if self._pool is None:
            return asyncio.get_running_loop().run_in_executor(None, work)
        return self._pool.run(self.clock, work)

    def _feed_some(self, batch: list[bytes]) -> list[bytes]:
        """Feed chunks of ``batch`` until it ends or a lighter upload waits; what is left.

        In a pool thread: thread_time is this check's CPU time alone."""
        started = time.thread_time()
        try:
            for done, chunk in enumerate(batch, 1):
                self._inspector.feed(chunk)
                self._within_budget(time.thread_time() - started)
                if self._pool is not None and self._pool.lighter_waiting(
                    self.clock.used + time.thread_time() - started
                ):
                    return batch[done:]
            return []
        finally:
            self.clock.used += time.thread_time() - started

    def _finish_timed(self) -> ArchiveFacts:
        self._within_budget(0.0)
        started = time.thread_time()
        try:
            return self._inspector.finish()
        finally:
            self.clock.used += time.thread_time() - started

    def _within_budget(self, running: float) -> None:
        limit = self._cpu_seconds
        if limit is not None and self.clock.used + running > limit:
            raise ArchiveInvalid(
                f"the check took more than {limit:g} seconds of CPU time "
                "(sources.archive_check_cpu_seconds)"
            )

    async def _wait(self) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        try:
            await running
        except ArchiveInvalid as exc:
            self._found(exc)
        except BaseException:
            running.add_done_callback(_ignore)
            raise

    def _found(self, exc: ArchiveInvalid) -> None:
        self._problem = exc.reason
        self._batch = []
        if self.mode == "enforce":
            raise exc


def _ignore(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
