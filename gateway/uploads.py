"""Streaming an upload body into the store: bounded memory, verified, all or nothing.

Two ways, chosen by what the client declared:
- a known length up to ``SINGLE_PUT_LIMIT``: one streamed PUT; the last chunk is held back till
  the length and Content-MD5 are checked, so a short or corrupt body never completes the object;
- otherwise (chunked transfer encoding, or larger): a multipart upload in part-sized buffers,
  aborted on any failure. A chunked body shorter than one part is stored with one plain PUT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from .errors import BadRequest, PayloadTooLarge
from .storage import ObjectStore

log = logging.getLogger(__name__)

# S3's limit for one PUT; larger bodies must go multipart.
SINGLE_PUT_LIMIT = 5 * 1024**3


@dataclass(frozen=True)
class UploadResult:
    size: int
    sha256: str
    etag: str


class ContentMD5Mismatch(BadRequest):
    def __init__(self) -> None:
        super().__init__("Content-MD5 does not match the body", code="bad_digest")


class IncompleteBody(BadRequest):
    def __init__(self) -> None:
        super().__init__("request body ended before Content-Length", code="incomplete_body")


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
            "Content-MD5 must be the base64 of a 16-byte MD5 digest", code="bad_digest"
        )
    return digest


class BufferBudget:
    """Bytes of part buffers all uploads may hold at once; past it, uploads wait their turn.

    A waiting upload stops reading its socket, so the client is slowed by TCP, not memory grown.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self.waiting = 0  # reservations waiting for room right now
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.limit)
        async with self._cond:
            if self.in_use + size > self.limit:
                self.waiting += 1
                try:
                    await self._cond.wait_for(lambda: self.in_use + size <= self.limit)
                finally:
                    self.waiting -= 1
            self.in_use += size
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            async with self._cond:
                self.in_use -= size
                self._cond.notify_all()


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
        if md5 is not None and want is not None and not hmac.compare_digest(md5.digest(), want):
            raise ContentMD5Mismatch()


class Uploader:
    """Moves one request body into the store under ``key``; see the module docstring."""

    def __init__(
        self, store: ObjectStore, part_size: int, max_size: int, budget: BufferBudget
    ) -> None:
        self._store = store
        self._part_size = part_size
        self._max_size = max_size
        self._budget = budget

    async def upload(
        self,
        key: str,
        body: AsyncIterable[bytes],
        *,
        length: int | None,
        content_type: str,
        content_md5: bytes | None = None,
    ) -> UploadResult:
        digests = _Digests(content_md5)
        if length is not None and length <= SINGLE_PUT_LIMIT:
            if length == 0:
                etag = await self._store.put_bytes(key, b"", content_type)
                digests.check_md5()
            else:
                streamed = self._held_back(body, digests, length)
                etag = await self._store.put_stream(key, streamed, length, content_type)
        else:
            etag = await self._multipart(key, body, digests, length, content_type)
        sha256 = digests.sha256.hexdigest()
        await self._store.set_sha256(key, sha256)
        return UploadResult(digests.size, sha256, etag)

    async def _held_back(
        self, body: AsyncIterable[bytes], digests: _Digests, length: int
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
        if digests.size != length:
            raise IncompleteBody()
        digests.check_md5()
        yield held

    async def _multipart(
        self,
        key: str,
        body: AsyncIterable[bytes],
        digests: _Digests,
        length: int | None,
        content_type: str,
    ) -> str:
        upload_id: str | None = None
        etags: list[str] = []
        try:
            async with self._budget.reserve(self._part_size):
                async for part, last in self._parts(body, digests):
                    if last and upload_id is None:
                        # The whole body fit in one part: a plain PUT, no multipart bookkeeping.
                        self._check_end(digests, length)
                        return await self._store.put_bytes(key, part, content_type)
                    if upload_id is None:
                        upload_id = await self._store.create_multipart(key, content_type)
                    if last:
                        self._check_end(digests, length)
                    etags.append(
                        await self._store.upload_part(key, upload_id, len(etags) + 1, part)
                    )
                assert upload_id is not None
                return await self._store.complete_multipart(key, upload_id, etags)
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(key, upload_id))
            raise

    def _check_end(self, digests: _Digests, length: int | None) -> None:
        if length is not None and digests.size != length:
            raise IncompleteBody()
        digests.check_md5()

    async def _parts(
        self, body: AsyncIterable[bytes], digests: _Digests
    ) -> AsyncIterator[tuple[bytes, bool]]:
        """Yield ``(part, is_last)``: full parts, the last one short (empty only for an empty body).

        A full part is held until more data arrives, so the last part is never an empty one."""
        pending: list[bytes] = []
        pending_size = 0
        ready: bytes | None = None
        async for chunk in body:
            if not chunk:
                continue
            digests.update(chunk)
            if digests.size > self._max_size:
                raise PayloadTooLarge(f"upload is larger than {self._max_size} bytes")
            if ready is not None:
                yield ready, False
                ready = None
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size >= self._part_size:
                joined = b"".join(pending)
                ready = joined[: self._part_size]
                rest = joined[self._part_size :]
                pending, pending_size = ([rest] if rest else []), len(rest)
                while pending_size >= self._part_size:  # one huge chunk: several full parts
                    yield ready, False
                    ready, rest = rest[: self._part_size], rest[self._part_size :]
                    pending, pending_size = ([rest] if rest else []), len(rest)
        if ready is not None and pending_size == 0:
            yield ready, True
            return
        if ready is not None:
            yield ready, False
        yield b"".join(pending), True

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._store.abort_multipart(key, upload_id)
        except Exception:
            # The lifecycle rule aborts incomplete uploads after a day; none of it is visible.
            log.exception("could not abort multipart upload for %s", key)
