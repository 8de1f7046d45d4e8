"""The upload-session core of resumable uploads: no HTTP, no protocol.

tus and the IETF draft are thin adapters over ``UploadSessions``: create an upload, ``claim`` it
(each request does, bumping the writer generation so that an older request on any instance fails
its next compare-and-swap and acknowledges nothing), ``append`` bytes at its offset, ``cancel``.

An append fills part-sized buffers (counted against ``sources.max_buffer_bytes``, as chunked
uploads are) and uploads each full one as a part of the staging object's multipart upload,
committing it in the state; the bytes short of a part at the end of a request become a new,
immutable tail object (written with ``If-None-Match``), committed before the previous tail is
removed; the next append starts by reading it back. Part numbers spread by generation (see
``part_number``), so a stale writer's late part never lands on a number a newer writer committed.
When the last byte is committed, the ``Finisher`` completes and checks the upload.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import (
    GatewayError,
    InconsistentLength,
    OffsetMismatch,
    PayloadTooLarge,
    TooManyUploads,
    UploadNotFound,
    UploadSuperseded,
)
from gateway.server.domain.resumable_finish import Authorize, Claim, Finisher, Verifier
from gateway.server.domain.storage import MAX_COPY_SIZE, ObjectStore
from gateway.server.domain.upload_state import CLAIM_ATTEMPTS, UploadState, UploadStates
from gateway.server.domain.uploads import BufferBudget

log = logging.getLogger(__name__)

# S3 numbers parts 1 to 10000.
MAX_PART_NUMBER = 10_000
# Bits of randomness in an upload id (the SPEC asks for at least 128).
UPLOAD_ID_BYTES = 16


def new_upload_id() -> str:
    return secrets.token_hex(UPLOAD_ID_BYTES)


def part_number(index: int, generation: int, max_size: int, part_size: int) -> int:
    """S3's number for the ``index``-th part (from 0) written by ``generation``: ascending with
    the index (completion lists parts in order, gaps allowed) and, within one index, different
    for generations less than ``spread`` apart, so a stale writer's late part never replaces
    the one a newer writer committed at that index."""
    max_parts = -(-max_size // part_size) + 1
    spread = max(1, MAX_PART_NUMBER // max_parts)
    return index * spread + generation % spread + 1


class ChunkCheck(Protocol):
    """A client's checksum over one request's bytes (tus ``Upload-Checksum``...)."""

    def update(self, chunk: bytes) -> None: ...

    def verify(self) -> None:
        """Raise the protocol's error if the bytes seen do not match."""


@dataclass(frozen=True)
class SessionLimits:
    part_size: int
    max_size: int
    ttl_seconds: int
    max_open: int


class UploadSessions:
    """Resumable uploads kept in the bucket; any instance continues any upload."""

    def __init__(
        self,
        store: ObjectStore,
        states: UploadStates,
        budget: BufferBudget,
        finisher: Finisher,
        limits: SessionLimits,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._states = states
        self._budget = budget
        self._finisher = finisher
        self.limits = limits
        self._clock = clock

    @property
    def max_size(self) -> int:
        return min(self.limits.max_size, MAX_COPY_SIZE)

    async def create(
        self,
        source_id: str,
        *,
        length: int | None,
        content_type: str,
        meta: dict[str, str],
        expected_sha256: str | None = None,
    ) -> Claim:
        """A new upload of ``source_id``; ``TooManyUploads`` past ``max_open`` open ones."""
        if length is not None and length > self.max_size:
            raise PayloadTooLarge(f"upload is larger than the limit of {self.max_size} bytes")
        now = self._clock()
        states = await self._states.states_of(source_id)
        open_now = [s for s in states if s.status == "open" and s.expires_at > now]
        if len(open_now) >= self.limits.max_open:
            raise TooManyUploads(
                f"this source has {len(open_now)} unfinished uploads already; finish or cancel one"
            )
        state = UploadState(
            source_id=source_id,
            upload_id=new_upload_id(),
            expires_at=int(now) + self.limits.ttl_seconds,
            part_size=self.limits.part_size,
            content_type=content_type,
            length=length,
            meta=meta,
            expected_sha256=expected_sha256,
        )
        return Claim(state, await self._states.create(state))

    async def claim(self, source_id: str, upload_id: str) -> Claim:
        """Take the upload for this request: the newest request on an upload wins, on any
        instance. ``UploadNotFound`` once expired, cancelled or never created."""
        for _ in range(CLAIM_ATTEMPTS):
            state, etag = await self._states.load(source_id, upload_id)
            if state.expires_at <= self._clock():
                raise UploadNotFound()
            if state.status != "open":
                return Claim(state, etag)
            state.generation += 1
            try:
                return Claim(state, await self._states.commit(state, etag))
            except UploadSuperseded:
                continue  # another request claimed it at the same moment: read again
        raise UploadSuperseded()

    async def finish_pending(self, claim: Claim, authorize: Authorize) -> None:
        """Complete an upload whose bytes are all committed but whose completer stopped (an
        instance that died between its last part and the answer)."""
        state = claim.state
        if state.status == "open" and state.length is not None and state.offset == state.length:
            await self._finisher.finish(claim, None, authorize)

    async def append(
        self,
        claim: Claim,
        offset: int,
        body: AsyncIterable[bytes],
        *,
        complete: bool | None,
        length: int | None = None,
        body_length: int | None = None,
        check: ChunkCheck | None = None,
        authorize: Authorize,
    ) -> None:
        """Add ``body`` at ``offset``. ``complete``: True ends the upload with this request,
        False never, None when the declared length is reached. ``length`` declares the total
        (once). Bytes up to a failure of the body (client gone) are kept, unless ``check``
        judges the request's bytes as a whole: then nothing is kept unless it passes.
        ``body_length`` (the request's Content-Length) lets a body past the limits be refused
        before it is read; one that passes the size limit as it streams fails the upload."""
        state = claim.state
        if state.status != "open" or offset != state.offset:
            raise OffsetMismatch(state.offset, offset)
        if length is not None:
            if state.length is not None and state.length != length:
                raise InconsistentLength("Upload-Length differs from the one declared")
            if length < state.offset:
                raise InconsistentLength("Upload-Length is below the upload's offset")
            if length > self.max_size:
                raise PayloadTooLarge(f"upload is larger than the limit of {self.max_size} bytes")
            state.length = length
        if body_length is not None:
            limit = state.length if state.length is not None else self.max_size
            if offset + body_length > limit:
                if state.length is None:
                    raise PayloadTooLarge(f"upload is larger than the limit of {limit} bytes")
                raise InconsistentLength("the body goes past the upload's declared length")
        held = await self._budget.acquire(state.part_size)
        try:
            writer = _Append(self, claim, check)
            await writer.run(body, complete, authorize)
        finally:
            self._budget.release(held)

    async def cancel(self, claim: Claim) -> None:
        """Abort the upload and remove its objects; later requests on it get ``UploadNotFound``."""
        state = claim.state
        if state.multipart is not None and state.status == "open":
            try:
                await self._store.abort_multipart(self._states.key(state, "data"), state.multipart)
            except GatewayError:
                log.warning("could not abort the parts of upload %s", state.upload_id)
        await self._finisher.clean(state)
        await self._states.remove(state)


class _Append:
    """One request's bytes going into one upload (``UploadSessions.append``)."""

    def __init__(self, sessions: UploadSessions, claim: Claim, check: ChunkCheck | None) -> None:
        self.s = sessions
        self.claim = claim
        self.state = claim.state
        self.check = check
        self.buffer = bytearray(claim.state.part_size)
        self.filled = 0
        self.received = 0
        self.start = claim.state.offset
        self.pending: list[tuple[int, str]] = []  # parts sent, committed with the check
        self.staging = sessions._states.key(claim.state, "data")

    async def run(self, body: AsyncIterable[bytes], complete: bool | None, auth: Authorize) -> None:
        state = self.state
        verifier = self.s._finisher.verifier() if self.start == 0 else None
        try:
            await self._load_tail()
            try:
                await self._consume(body, verifier)
            except PayloadTooLarge as exc:
                # It can never complete: nothing of it is kept, and it answers 413 from now on.
                await self.s._finisher.fail(self.claim, exc)
                raise
            except (InconsistentLength, UploadSuperseded):
                raise
            except BaseException:
                if self.check is None and self.received:
                    # The client went away (or stalled): what arrived is the upload's, in order.
                    await asyncio.shield(self._save_tail())
                raise
            if self.check is not None:
                self.check.verify()
            total = self.start + self.received
            if complete is True or (complete is None and state.length == total):
                if state.length is not None and state.length != total:
                    raise InconsistentLength("the upload ended short of its declared length")
                state.length = total
                await self._last_part()
                await self.s._finisher.finish(self.claim, verifier, auth)
            elif self.received:
                await self._save_tail()
        finally:
            if verifier is not None:
                verifier.close()

    async def _consume(self, body: AsyncIterable[bytes], verifier: Verifier | None) -> None:
        state, size = self.state, self.state.part_size
        limit = state.length if state.length is not None else self.s.max_size
        async for chunk in _pieces(body):
            if self.start + self.received + len(chunk) > limit:
                if state.length is not None:
                    raise InconsistentLength("the body goes past the upload's declared length")
                raise PayloadTooLarge(f"upload is larger than the limit of {limit} bytes")
            if self.check is not None:
                self.check.update(chunk)
            if verifier is not None:
                await verifier.feed(chunk)
            view = memoryview(chunk)
            while view:
                taken = min(len(view), size - self.filled)
                self.buffer[self.filled : self.filled + taken] = view[:taken]
                self.filled += taken
                self.received += taken
                view = view[taken:]
                if self.filled == size:
                    await self._send_part(self.buffer)

    async def _load_tail(self) -> None:
        state = self.state
        if state.tail is None or not state.tail_size:
            return
        async with self.s._store.read(state.tail, 0, state.tail_size - 1) as chunks:
            async for chunk in chunks:
                self.buffer[self.filled : self.filled + len(chunk)] = chunk
                self.filled += len(chunk)
        if self.filled != state.tail_size:
            raise UploadNotFound()  # the tail is gone: the upload cannot go on

    async def _send_part(self, data: bytes | bytearray | memoryview) -> None:
        state, store = self.state, self.s._store
        if state.multipart is None:
            state.multipart = await store.create_multipart(self.staging, state.content_type)
            self.claim.etag = await self.s._states.commit(state, self.claim.etag)
        index = len(state.parts) + len(self.pending)
        number = part_number(index, state.generation, self.s.max_size, state.part_size)
        etag = await store.upload_part(self.staging, state.multipart, number, data)
        self.filled = 0
        self.pending.append((number, etag))
        if self.check is None:
            await self._commit(None, 0)

    async def _commit(self, tail: str | None, tail_size: int) -> None:
        """Record the pending parts and the new tail (the bytes in the buffer, ``tail_size``
        of them, or none); only then remove the old tail."""
        state = self.state
        old_tail = state.tail
        state.parts.extend(self.pending)
        self.pending = []
        state.tail, state.tail_size = tail, tail_size
        state.offset = self.start + self.received - self.filled + tail_size
        self.claim.etag = await self.s._states.commit(state, self.claim.etag)
        if old_tail is not None and old_tail != tail:
            await _remove(self.s._store, old_tail)

    async def _save_tail(self) -> None:
        tail = None
        if self.filled:
            name = f"tail-{self.state.generation}-{self.start + self.received}"
            tail = self.s._states.key(self.state, name)
            await self.s._store.create_bytes(
                tail, memoryview(self.buffer)[: self.filled], "application/octet-stream"
            )
        try:
            await self._commit(tail, self.filled)
        except UploadSuperseded:
            if tail is not None:
                await _remove(self.s._store, tail)
            raise

    async def _last_part(self) -> None:
        state = self.state
        if not state.parts and not self.pending and state.multipart is None:
            # Under one part in all: the staging object is one PUT, no multipart upload.
            data = memoryview(self.buffer)[: self.filled]
            state.assembled = await self.s._store.put_bytes(self.staging, data, state.content_type)
            self.filled = 0
            await self._commit(None, 0)
            return
        if self.filled or not (state.parts or self.pending):
            await self._send_part(memoryview(self.buffer)[: self.filled])
        await self._commit(None, 0)


async def _pieces(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    async for chunk in body:
        if chunk:
            yield chunk


async def _remove(store: ObjectStore, key: str) -> None:
    try:
        await store.delete(key)
    except GatewayError:
        log.warning("could not remove %s; the lifecycle rule will", key)
