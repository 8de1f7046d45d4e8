"""One upload's archive check, run off the event loop as its body streams.

Chunks are handed to a worker thread in batches of ``BATCH_BYTES``; while one batch inflates, the
upload goes on reading the next, so the check costs the upload little time, and the event loop
none. A problem found in one batch surfaces at the next ``feed`` (or at ``finish``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ...config import SourcesConfig
from ...errors import ArchiveInvalid
from .archive import BATCH_BYTES, ArchiveInspector, Mode
from .archive_facts import ArchiveFacts


@dataclass(frozen=True)
class ArchivePolicy:
    """The ``sources.archive_check`` settings; makes one check per upload."""

    mode: Mode = "enforce"
    max_inflated_bytes: int = 4 * 1024**3
    max_entries: int = 200_000

    @classmethod
    def of(cls, sources: SourcesConfig) -> ArchivePolicy:
        return cls(sources.archive_check, sources.max_inflated_bytes, sources.max_entries)

    def start(self) -> ArchiveCheck | None:
        """A check for a new upload, or None when checks are off."""
        if self.mode == "off":
            return None
        return ArchiveCheck(self.mode, self.max_inflated_bytes, self.max_entries)


class ArchiveCheck:
    """Feeds one upload's body to an ``ArchiveInspector`` in ``enforce`` or ``report`` mode."""

    def __init__(
        self, mode: Mode, max_inflated_bytes: int, max_entries: int, batch: int = BATCH_BYTES
    ) -> None:
        assert mode != "off", "an upload without a check has no ArchiveCheck"
        self.mode = mode
        self._inspector = ArchiveInspector(max_inflated_bytes, max_entries)
        self._batch_size = batch
        self._batch: list[bytes] = []
        self._batched = 0
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
            await self._wait()
            self._start()

    async def finish(self) -> ArchiveFacts:
        """Wait for the last batch and judge the end of the stream; return the facts."""
        await self._wait()
        if self._problem is None and self._batch:
            self._start()
            await self._wait()
        if self._problem is None:
            try:  # following the archive's links may take a while: off the loop too
                return await asyncio.get_running_loop().run_in_executor(
                    None, self._inspector.finish
                )
            except ArchiveInvalid as exc:
                self._found(exc)
        return self._inspector.facts(self._problem)

    def close(self) -> None:
        """Let go of a batch still inflating (the upload failed): its outcome is not wanted."""
        if self._running is not None:
            self._running.add_done_callback(_ignore)
            self._running = None

    def _start(self) -> None:
        batch, self._batch, self._batched = self._batch, [], 0
        loop = asyncio.get_running_loop()
        self._running = loop.run_in_executor(None, self._feed_all, batch)

    def _feed_all(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._inspector.feed(chunk)

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
