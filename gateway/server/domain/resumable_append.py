"""One request's bytes going into one resumable upload (``UploadSessions.append``): parts of the
upload's multipart upload (at the source's key or its staging object: ``Finisher.parts_key``)
committed in the state, the bytes short of a part at the end saved as a new immutable tail, the
last part and completion.

A part the request will fill (its ``Content-Length`` says so) streams to the store as its bytes
arrive (``resumable_stream``), the pieces kept as received; other parts are copied into a part
buffer and sent when it is full. With two part buffers (the budget allowing), one part uploads
while the next fills, as the plain multipart upload does; parts are still sent and committed in
order, and a part that fails in the background keeps every byte after it out of the state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import (
    ArchiveInvalid,
    GatewayError,
    InconsistentLength,
    ObjectNotFound,
    PayloadTooLarge,
    UploadNotFound,
    UploadSuperseded,
)
from gateway.server.domain.resumable_finish import Authorize, Claim, Finisher
from gateway.server.domain.resumable_stream import Filled, PartStream, gather, part_number
from gateway.server.domain.resumable_verify import Carried, Verifier
from gateway.server.domain.storage import ObjectStore
from gateway.server.domain.upload_state import UploadStates
from gateway.server.domain.uploads import BufferBudget

log = logging.getLogger(__name__)


class ChunkCheck(Protocol):
    """A client's checksum over one request's bytes (tus ``Upload-Checksum``...)."""

    def update(self, chunk: bytes) -> None: ...

    def verify(self) -> None:
        """Raise the protocol's error if the bytes seen do not match."""


@dataclass(frozen=True)
class Writing:
    """What an append writes with: the store, the states, the finisher, the size limit, the
    verifiers this instance carries from one append to the next, the buffer budget."""

    store: ObjectStore
    states: UploadStates
    finisher: Finisher
    max_size: int
    carried: Carried
    budget: BufferBudget


class Append:
    """One request's bytes going into one upload (``UploadSessions.append``)."""

    def __init__(
        self,
        sessions: Writing,
        claim: Claim,
        check: ChunkCheck | None,
        pipelined: bool,
        body_length: int | None = None,
    ) -> None:
        self.s = sessions
        self.claim = claim
        self.state = claim.state
        self.check = check
        # The part being filled: ``filled`` bytes, the first ``copied`` of them in ``buffer``
        # (made when first needed), the rest the pieces received while the part streams, kept
        # as they are (``deferred``): copied only if they are needed whole.
        self.buffer: bytearray | None = None
        self.filled = 0
        self.copied = 0
        self.deferred: list[memoryview] = []
        self.received = 0
        self.start = claim.state.offset
        self.committed = claim.state.offset  # as the state last written by this request says
        self.pending: list[tuple[int, str]] = []  # parts sent, committed with the check
        self.verifier: Verifier | None = None  # the running check, when it saw every byte
        self.pipelined = pipelined
        self.sending: asyncio.Task[None] | None = None  # the part in flight, with its commit
        self.spare: bytearray | None = None  # the buffer that part came from, once sent
        self.lost = False  # a part sent in the background failed
        self.body_length = body_length  # the request's Content-Length, when it has one
        self.stream: PartStream | None = None  # the part the buffer fills, going out already
        self.next_index = len(claim.state.parts)  # the index of the next part started

    async def run(self, body: AsyncIterable[bytes], complete: bool | None, auth: Authorize) -> None:
        state = self.state
        self.verifier = verifier = (
            self.s.finisher.verifier() if self.start == 0 else self.s.carried.take(state)
        )
        # The check may fall a part behind, and go on while this request waits for its part
        # and commit, or for the client's next request.
        fed = verifier.fall_behind(self.s.budget, state.part_size) if verifier else None
        try:
            await self._load_tail()
            try:
                await self._consume(body)
                await self._drain()
            except (PayloadTooLarge, ArchiveInvalid) as exc:
                # It can never complete: nothing of it is kept, and it answers 413 (or 422, the
                # running check refused the archive) from now on.
                await self._settle()
                await self.s.finisher.fail(self.claim, exc)
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
                await self.s.finisher.finish(self.claim, verifier, auth)
            elif self.received:
                await self._save_tail()
        finally:
            try:
                await self._settle()
            finally:
                self._let_go(verifier, fed)

    def _let_go(self, verifier: Verifier | None, fed: Callable[[], None] | None) -> None:
        if verifier is not None:
            # Kept only if it saw exactly the committed bytes: a request cut after its last
            # commit, or one whose chunk a checksum refused, leaves it behind.
            self.s.carried.keep(self.state, verifier, self.committed)
        if fed is not None:
            fed()  # the room its check took is given back once the check catches up

    async def _consume(self, body: AsyncIterable[bytes]) -> None:
        state, size, verifier = self.state, self.state.part_size, self.verifier
        limit = state.length if state.length is not None else self.s.max_size
        await self._stream_if_filled()
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
                if self.stream is not None:
                    # The piece just received goes out, still in the CPU's caches, and is kept
                    # as it is: copied only if the part must be sent again or become a tail.
                    self.deferred.append(view[:taken])
                    await self.stream.add(view[:taken])
                else:
                    self._room()[self.filled : self.filled + taken] = view[:taken]
                    self.copied += taken
                self.filled += taken
                self.received += taken
                view = view[taken:]
                if self.filled == size:
                    await self._send_part(None)
                    await self._stream_if_filled()

    def _room(self) -> bytearray:
        """The part buffer, made (or taken back from the part sent last) when first needed."""
        if self.buffer is None:
            self.buffer, self.spare = self.spare or bytearray(self.state.part_size), None
        return self.buffer

    def _whole(self) -> memoryview:
        """The bytes of the part being filled, in the buffer (the kept pieces copied in)."""
        buffer = self._room()
        self.copied = gather(buffer, self.copied, self.deferred)
        self.deferred = []
        return memoryview(buffer)[: self.filled]

    async def _stream_if_filled(self) -> None:
        """Start sending the part the buffer fills, if this request will fill it."""
        state = self.state
        if self.stream is not None or self.body_length is None:
            return
        if self.filled + self.body_length - self.received < state.part_size:
            return
        await self._ensure_multipart()
        assert state.multipart is not None
        key = self.s.finisher.parts_key(state)
        number = self._next_number()
        self.stream = PartStream(self.s.store, key, state.multipart, number, state.part_size)
        if self.filled:
            await self.stream.add(self._whole())  # the tail read back

    def _next_number(self) -> int:
        state = self.state
        index, self.next_index = self.next_index, self.next_index + 1
        return part_number(index, state.generation, self.s.max_size, state.part_size)

    async def _ensure_multipart(self) -> None:
        state = self.state
        if state.multipart is None:
            # Checked as they stream, the parts may complete where they belong (no copy).
            state.direct = self.verifier is not None and await self.s.finisher.direct(state)
            state.multipart = await self.s.store.create_multipart(
                self.s.finisher.parts_key(state), state.content_type, held=state.direct
            )
            self.claim.etag = await self.s.states.commit(state, self.claim.etag)

    async def _load_tail(self) -> None:
        state = self.state
        if state.tail is None or not state.tail_size:
            return
        try:
            async with self.s.store.read(state.tail, 0, state.tail_size - 1) as chunks:
                async for chunk in chunks:
                    self._room()[self.filled : self.filled + len(chunk)] = chunk
                    self.filled += len(chunk)
                    self.copied = self.filled
        except ObjectNotFound:
            pass
        if self.filled != state.tail_size:
            # The tail is gone: replaced by a newer request that took the upload over since this
            # one claimed it (a superseded request, 409), else the upload cannot go on (404).
            await self._still_ours()
            raise UploadNotFound()

    async def _send_part(self, last: memoryview | None) -> None:
        """Upload the part being filled (full; or ``last``, the short last one), then commit it
        (unless a check judges the request first). Pipelined, a full part goes in the background
        while the next one fills; parts are still sent and committed in order (the previous one
        is done before)."""
        state = self.state
        await self._drain()
        stream, self.stream = self.stream, None
        if stream is None:
            await self._ensure_multipart()
            number = self._next_number()
        else:
            number = stream.number
        if self.pipelined and last is None:
            # The part's bytes move to the task: they are no longer the append's.
            part = Filled(self.buffer, self.copied, self.deferred, state.part_size)
            self.buffer, self.deferred, self.filled, self.copied = None, [], 0, 0
            self.sending = asyncio.ensure_future(
                self._upload(number, part.whole, in_line=False, stream=stream, part=part)
            )
        else:
            whole = self._whole if last is None else lambda: last
            await self._upload(number, whole, in_line=True, stream=stream)

    async def _upload(
        self,
        number: int,
        whole: Callable[[], memoryview],
        *,
        in_line: bool,
        stream: PartStream | None = None,
        part: Filled | None = None,
    ) -> None:
        state = self.state
        assert state.multipart is not None
        try:
            etag = await stream.etag() if stream is not None else None
            if etag is None:  # not streamed, or the store failed the stream: sent whole
                key = self.s.finisher.parts_key(state)
                etag = await self.s.store.upload_part(key, state.multipart, number, whole())
        except BaseException:
            # The bytes filling the other buffer come after these: none of them may be kept.
            self.lost = not in_line
            raise
        if in_line:
            # The part's bytes stayed counted in it until S3 had them.
            self.filled, self.copied, self.deferred = 0, 0, []
        self.pending.append((number, etag))
        if self.check is None:
            await self._commit(None, 0)
        if part is not None and part.buffer is not None:
            self.spare = part.buffer

    async def _drain(self) -> None:
        """Wait until the part in flight is sent and committed; its failure is raised here.
        Shielded: a client that goes meanwhile does not cancel a part under way."""
        sending, self.sending = self.sending, None
        if sending is not None:
            await asyncio.shield(sending)

    async def _settle(self) -> None:
        """Let the part in flight end, raising nothing (the append is failing already); give
        up the part still filling."""
        await self._stop_stream()
        sending, self.sending = self.sending, None
        if sending is not None:
            await asyncio.wait([sending])
            if not sending.cancelled():
                sending.exception()

    async def _commit(self, tail: str | None, tail_size: int) -> None:
        """Record the pending parts and the new tail (the bytes in the buffer, ``tail_size``
        of them, or none); only then remove the old tail."""
        state = self.state
        old_tail = state.tail
        state.parts.extend(self.pending)
        self.pending = []
        state.tail, state.tail_size = tail, tail_size
        state.offset = self.start + self.received - self.filled + tail_size
        self.claim.etag = await self.s.states.commit(state, self.claim.etag)
        self.committed = state.offset
        if old_tail is not None and old_tail != tail:
            await _remove(self.s.store, old_tail)

    async def _stop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.cancel()

    async def _save_tail(self) -> None:
        await self._stop_stream()  # its bytes, short of a part, become the tail
        await self._drain()
        if self.lost:
            await self._still_ours()
            return  # the part's own failure is what the request answers
        if (
            not self.filled
            and not self.pending
            and self.state.tail is None
            and self.committed == self.start + self.received
        ):
            return  # it ended on a part boundary: all it sent is committed already
        tail = None
        if self.filled:
            name = f"tail-{self.state.generation}-{self.start + self.received}"
            tail = self.s.states.key(self.state, name)
            await self.s.store.create_bytes(tail, self._whole(), "application/octet-stream")
        try:
            await self._commit(tail, self.filled)
        except UploadSuperseded:
            if tail is not None:
                await _remove(self.s.store, tail)
            raise

    async def _still_ours(self) -> None:
        """``UploadSuperseded`` (``UploadNotFound``) when a newer request took the upload over
        (or cancelled it): that, not the store's answer to a part of a stale writer, is why
        this append failed."""
        state = self.state
        current, _ = await self.s.states.load(state.source_id, state.upload_id)
        if current.generation != state.generation:
            raise UploadSuperseded()

    async def _last_part(self) -> None:
        await self._stop_stream()  # (never one: a stream starts only for a part filled whole)
        await self._drain()
        state = self.state
        if not state.parts and not self.pending and state.multipart is None:
            # Under one part in all: the staging object is one PUT, no multipart upload.
            data = self._whole()
            staging = self.s.finisher.parts_key(state)  # not direct: no multipart upload
            state.assembled = await self.s.store.put_bytes(staging, data, state.content_type)
            self.filled = 0
            await self._commit(None, 0)
            return
        if self.filled or not (state.parts or self.pending):
            await self._send_part(self._whole())
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
