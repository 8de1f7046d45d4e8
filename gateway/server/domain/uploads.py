"""Streaming an upload body into the store: bounded memory, verified, all or nothing.

Two ways, chosen by what the client declared:
- a known length up to ``SINGLE_PUT_LIMIT``: one streamed PUT; the last chunk is held back till
  the length and Content-MD5 are checked, so a short or corrupt body never completes the object;
- otherwise (chunked transfer encoding, or larger): a multipart upload in part-sized buffers,
  aborted on any failure. A chunked body shorter than one part is stored with one plain PUT.

Every chunk also goes through the archive check (``ArchivePolicy``) as it streams; its verdict on
the end of the stream is awaited before the last bytes go out or the multipart upload completes,
so a refused archive is never stored.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from gateway.error_codes import Code
from gateway.errors import (
    BadRequest,
    BudgetExhausted,
    ContentMD5Mismatch,
    GatewayError,
    IncompleteBody,
    PayloadTooLarge,
)
from gateway.server.adapters.archive_tags import archive_tags
from gateway.server.domain.archive.check import ArchiveCheck, ArchivePolicy
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.storage import ObjectStore

log = logging.getLogger(__name__)

# S3's limit for one PUT; larger bodies must go multipart.
SINGLE_PUT_LIMIT = 5 * 1024**3


@dataclass(frozen=True)
class StoredUpload:
    size: int
    sha256: str
    etag: str
    archive: ArchiveFacts | None = None  # None: the check is off


def parse_content_md5(value: str | None) -> bytes | None:
    """Decode a ``Content-MD5`` header (base64 of 16 bytes) or raise ``BadRequest``."""
    if value is None:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise BadRequest(
            "Content-MD5 must be the base64 of a 16-byte MD5 digest", code=Code.BAD_DIGEST
        )
    return digest


class BufferBudget:
    """Bytes of part buffers all uploads may hold at once; past it, uploads wait their turn.

    A waiting upload stops reading its socket, so the client is slowed by TCP, not memory grown.
    Room is granted first come, first served; an upload that waits longer than ``wait_timeout``
    seconds is given up (``BudgetExhausted``, 503), so uploads cannot queue without end behind
    ones that hold the budget.
    """

    def __init__(self, limit: int, wait_timeout: float | None = None) -> None:
        self.limit = limit
        self.wait_timeout = wait_timeout
        self.in_use = 0
        self.peak = 0
        self.waiting = 0  # reservations waiting for room right now
        self._queue: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, size: int) -> int:
        """Wait until ``size`` bytes fit, take them and return how many to ``release`` later."""
        size = min(size, self.limit)
        if not self._queue and self.in_use + size <= self.limit:
            self._take(size)
            return size
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((size, granted))
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_timeout):
                await granted
        except TimeoutError:
            self._give_up(size, granted)
            raise BudgetExhausted(self.wait_timeout or 0) from None
        except BaseException:
            self._give_up(size, granted)  # the waiter was cancelled
            raise
        finally:
            self.waiting -= 1
        return size

    def try_acquire(self, size: int) -> int:
        """Take ``size`` bytes if they fit now and nobody waits: ``size``, else 0 (taken
        nothing). For memory an upload does without."""
        if self._queue or self.in_use + size > self.limit:
            return 0
        self._take(size)
        return size

    def _give_up(self, size: int, granted: asyncio.Future[None]) -> None:
        if granted.done() and not granted.cancelled():
            self.release(size)  # granted just as the wait ran out
        else:
            granted.cancel()
            self._grant()

    def release(self, size: int) -> None:
        """Give back what ``acquire`` returned."""
        self.in_use -= size
        self._grant()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        taken = await self.acquire(size)
        try:
            yield
        finally:
            self.release(taken)

    def _take(self, size: int) -> None:
        self.in_use += size
        self.peak = max(self.peak, self.in_use)

    def _grant(self) -> None:
        while self._queue:
            size, granted = self._queue[0]
            if granted.done():  # its waiter was cancelled
                self._queue.popleft()
            elif self.in_use + size <= self.limit:
                self._queue.popleft()
                self._take(size)
                granted.set_result(None)
            else:
                break


class _Digests:
    def __init__(self, want_md5: bytes | None) -> None:
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.want_md5 = want_md5
        self.md5 = hashlib.md5(usedforsecurity=False) if want_md5 is not None else None

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.sha256.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)

    def check_md5(self) -> None:
        md5, want = self.md5, self.want_md5
        if md5 is not None and want is not None and md5.digest() != want:
            raise ContentMD5Mismatch()


class Uploader:
    """Moves one request body into the store under ``key``; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        part_size: int,
        max_size: int,
        budget: BufferBudget,
        archive: ArchivePolicy | None = None,
    ) -> None:
        self._store = store
        self._part_size = part_size
        self._max_size = max_size
        self._budget = budget
        self._archive = archive or ArchivePolicy(mode="off")

    async def upload(
        self,
        key: str,
        body: AsyncIterable[bytes],
        *,
        length: int | None,
        content_type: str,
        content_md5: bytes | None = None,
    ) -> StoredUpload:
        digests = _Digests(content_md5)
        checked = _CheckedBody(body, self._archive.start())
        try:
            if length is not None and length <= SINGLE_PUT_LIMIT:
                if length == 0:
                    # Before the PUT: a refused body must not replace anything.
                    await self._check_end(digests, length, checked)
                    etag = await self._store.put_bytes(key, b"", content_type)
                else:
                    streamed = self._held_back(checked, digests, length)
                    etag = await self._store.put_stream(key, streamed, length, content_type)
            else:
                etag = await self._multipart(key, checked, digests, length, content_type)
        finally:
            checked.close()
        sha256 = digests.sha256.hexdigest()
        facts = checked.facts
        try:
            await self._store.set_sha256(key, sha256, etag, archive_tags(facts) if facts else None)
        except GatewayError:
            # The archive is stored whole: failing the upload now would tell the client the
            # opposite. Downloads of it go without checksum headers, and the log says why.
            log.warning("archive %s stored, but its sha256 tag could not be set", key)
        return StoredUpload(digests.size, sha256, etag, facts)

    async def _held_back(
        self, body: _CheckedBody, digests: _Digests, length: int
    ) -> AsyncIterator[bytes]:
        # The last chunk waits until the whole body is counted and checked: if anything is wrong,
        # the store sees a body shorter than its Content-Length and keeps nothing.
        held = b""
        async for chunk in body:
            if not chunk:
                continue
            digests.update(chunk)
            if held:
                yield held
            held = chunk
        await self._check_end(digests, length, body)
        yield held

    async def _multipart(
        self,
        key: str,
        body: _CheckedBody,
        digests: _Digests,
        length: int | None,
        content_type: str,
    ) -> str:
        # One part uploads while the next one fills: at most two part buffers per upload, each
        # held under the budget from the moment it starts filling until S3 has it.
        reader = _PartReader(body, digests, self._part_size, self._max_size)
        upload_id: str | None = None
        etags: list[str] = []
        sending: asyncio.Task[None] | None = None
        try:
            while True:
                held = await self._budget.acquire(self._part_size)
                try:
                    part = await reader.read_part()
                    if upload_id is None and len(part) < self._part_size:
                        # The whole body fit in one part: a plain PUT, no multipart bookkeeping.
                        await self._check_end(digests, length, body)
                        return await self._store.put_bytes(key, part, content_type)
                    if not part:  # the body ended on a part boundary
                        break
                    if upload_id is None:
                        upload_id = await self._store.create_multipart(key, content_type)
                    if sending is not None:
                        await sending
                    etags.append("")
                    sending = asyncio.create_task(
                        self._send_part(key, upload_id, etags, len(etags), part)
                    )
                    sending.add_done_callback(functools.partial(self._release_part, held))
                    held = 0  # released by the task, whatever becomes of it
                    last = len(part) < self._part_size
                    # The task owns the part now: a reference kept here would outlive its budget
                    # while this upload waits for room or for its client.
                    del part
                finally:
                    if held:
                        self._budget.release(held)
                if last:
                    break
            if sending is not None:
                await sending
            assert upload_id is not None
            await self._check_end(digests, length, body)
            return await self._store.complete_multipart(key, upload_id, etags)
        except BaseException:
            if sending is not None:
                if not sending.done():
                    sending.cancel()
                    await asyncio.wait([sending])
                if not sending.cancelled():
                    sending.exception()  # retrieved: the first failure is the one raised
            if upload_id is not None:
                await asyncio.shield(self._abort(key, upload_id))
            raise

    def _release_part(self, size: int, _: asyncio.Task[None]) -> None:
        self._budget.release(size)

    async def _send_part(
        self, key: str, upload_id: str, etags: list[str], number: int, part: bytearray
    ) -> None:
        etags[number - 1] = await self._store.upload_part(key, upload_id, number, part)

    async def _check_end(self, digests: _Digests, length: int | None, body: _CheckedBody) -> None:
        if length is not None and digests.size != length:
            raise IncompleteBody()
        digests.check_md5()
        await body.finish()

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._store.abort_multipart(key, upload_id)
        except Exception:
            # The lifecycle rule aborts incomplete uploads after a day; none of it is visible.
            log.exception("could not abort multipart upload for %s", key)


class _CheckedBody:
    """The request body, every chunk fed to the archive check (when on) before it goes on."""

    def __init__(self, body: AsyncIterable[bytes], check: ArchiveCheck | None) -> None:
        self._body = body
        self._check = check
        self.facts: ArchiveFacts | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        check = self._check
        async for chunk in self._body:
            if check is not None:
                await check.feed(chunk)
            yield chunk

    async def finish(self) -> None:
        """Judge the end of the stream (``ArchiveInvalid`` in enforce mode); keep the facts."""
        if self._check is not None:
            self.facts = await self._check.finish()

    def close(self) -> None:
        if self._check is not None:
            self._check.close()


class _PartReader:
    """Cuts a body into parts of exactly ``part_size`` bytes; the last one is shorter (or empty).

    Every byte goes through the digests and the size limit as it is read, then is copied once,
    into the part's own buffer: a part holds its part size and nothing more (no list of chunks
    joined into a second copy)."""

    def __init__(
        self, body: AsyncIterable[bytes], digests: _Digests, part_size: int, max_size: int
    ) -> None:
        self._chunks = aiter(body)
        self._digests = digests
        self._part_size = part_size
        self._max_size = max_size
        self._rest = memoryview(b"")  # read past the end of the previous part
        self._ended = False

    async def read_part(self) -> bytearray:
        part = bytearray(self._part_size)
        filled = self._fill(part, 0, self._rest)
        while filled < self._part_size and not self._ended:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._ended = True
                break
            if not chunk:
                continue
            self._digests.update(chunk)
            if self._digests.size > self._max_size:
                raise PayloadTooLarge(f"upload is larger than {self._max_size} bytes")
            filled = self._fill(part, filled, memoryview(chunk))
        if filled < self._part_size:
            del part[filled:]
        return part

    def _fill(self, part: bytearray, filled: int, data: memoryview) -> int:
        """Copy what fits of ``data`` into ``part`` from ``filled`` on; keep the rest for later."""
        taken = min(len(data), self._part_size - filled)
        part[filled : filled + taken] = data[:taken]
        self._rest = data[taken:]
        return filled + taken
