"""A part of a resumable upload sent to the store while its buffer fills.

An append whose request will fill the part it is filling (its ``Content-Length`` says so) sends
the part's bytes to the store as they are copied into the buffer, as a plain upload streams its
body into one PUT: when the buffer is full, the part is stored or nearly, instead of only then
starting to go. The buffer keeps the bytes all the same: if the request stops first, the stream is
cancelled (the store keeps no part of an unfinished one) and the bytes become the tail; if the
store fails the stream, the part is sent again whole from the buffer, with the store's retries.

Also here: the number S3 knows each part by (``part_number``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.errors import GatewayError
from gateway.server.domain.storage import ObjectStore

# At most this many bytes of a part wait in memory to be sent, besides the part buffer's copy.
AHEAD_BYTES = 1024 * 1024
# S3 numbers parts 1 to 10000.
MAX_PART_NUMBER = 10_000


def part_number(index: int, generation: int, max_size: int, part_size: int) -> int:
    """S3's number for the ``index``-th part (from 0) written by ``generation``: ascending with
    the index (completion lists parts in order, gaps allowed) and, within one index, different
    for generations less than ``spread`` apart, so a stale writer's late part never replaces
    the one a newer writer committed at that index."""
    max_parts = -(-max_size // part_size) + 1
    spread = max(1, MAX_PART_NUMBER // max_parts)
    return index * spread + generation % spread + 1


class PartStream:
    """Part ``number`` of multipart upload ``upload_id`` at ``key``, ``size`` bytes, going to the
    store as ``add`` gives them."""

    def __init__(
        self, store: ObjectStore, key: str, upload_id: str, number: int, size: int
    ) -> None:
        self.number = number
        self._pieces: asyncio.Queue[memoryview | None] = asyncio.Queue()
        self._queued = 0  # bytes added, not yet taken by the store's request
        self._sent = asyncio.Event()
        self._task = asyncio.ensure_future(
            store.stream_part(key, upload_id, number, self._body(), size)
        )
        self._task.add_done_callback(lambda _: self._sent.set())  # no waiting on a failed one

    async def add(self, piece: memoryview) -> None:
        """The next bytes of the part (unchanged until the part is settled); waits while more
        than ``AHEAD_BYTES`` wait to be sent, so a slow store slows the client down, as a plain
        upload's does, instead of piling pieces up."""
        self._pieces.put_nowait(piece)
        self._queued += len(piece)
        while self._queued > AHEAD_BYTES and not self._task.done():
            self._sent.clear()
            await self._sent.wait()

    async def _body(self) -> AsyncIterator[memoryview]:
        while (piece := await self._pieces.get()) is not None:
            yield piece
            self._queued -= len(piece)
            self._sent.set()

    async def etag(self) -> str | None:
        """Once every byte is added: the part's ETag, or None if the store failed it (then it
        is to be sent again whole)."""
        self._pieces.put_nowait(None)
        try:
            return await self._task
        except GatewayError:
            return None

    async def cancel(self) -> None:
        """Give the part up: the store keeps nothing of it."""
        self._task.cancel()
        await asyncio.wait([self._task])
        if not self._task.cancelled():
            self._task.exception()  # retrieved: the request's own failure is what counts


class Filled:
    """A full part handed to its upload: its first ``copied`` bytes in ``buffer`` (if any), the
    rest the pieces kept as received. ``whole`` puts them together in the buffer: only a part
    that is sent again (not streamed, or failed while streaming) needs it."""

    def __init__(
        self, buffer: bytearray | None, copied: int, pieces: list[memoryview], size: int
    ) -> None:
        self.buffer = buffer
        self._copied = copied
        self._pieces = pieces
        self._size = size

    def whole(self) -> memoryview:
        if self.buffer is None:
            self.buffer = bytearray(self._size)
        self._copied = gather(self.buffer, self._copied, self._pieces)
        self._pieces = []
        return memoryview(self.buffer)[: self._size]


def gather(buffer: bytearray, copied: int, pieces: list[memoryview]) -> int:
    """Copy ``pieces`` into ``buffer`` after its first ``copied`` bytes; how many it holds then."""
    for piece in pieces:
        buffer[copied : copied + len(piece)] = piece
        copied += len(piece)
    return copied
