"""The upload-session core of resumable uploads: no HTTP, no protocol.

tus and the IETF draft are thin adapters over ``UploadSessions``: create an upload, ``claim`` it
(each request does, bumping the writer generation so that an older request on any instance fails
its next compare-and-swap and acknowledges nothing), ``append`` bytes at its offset, ``cancel``.

An append (``resumable_append.Append``) fills part-sized buffers (counted against
``sources.max_buffer_bytes``, as chunked uploads are) and uploads each full one as a part of the
upload's multipart upload (streamed as its bytes arrive when the request fills it), committing it
in the state; the bytes short of a part at the
end of a request become a new, immutable tail object (written with ``If-None-Match``), committed
before the previous tail is removed; the next append starts by reading it back. Part numbers
spread by generation (see ``part_number``), so a stale writer's late part never lands on a number
a newer writer committed. When the last byte is committed, the ``Finisher`` completes and checks
the upload.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from gateway.errors import (
    GatewayError,
    InconsistentLength,
    OffsetMismatch,
    PayloadTooLarge,
    TooManyUploads,
    UploadNotFound,
    UploadSuperseded,
)
from gateway.server.domain.resumable_append import Append, ChunkCheck, Writing
from gateway.server.domain.resumable_finish import Authorize, Claim, Finisher
from gateway.server.domain.resumable_verify import Carried
from gateway.server.domain.storage import MAX_COPY_SIZE, ObjectStore
from gateway.server.domain.upload_state import CLAIM_ATTEMPTS, UploadState, UploadStates
from gateway.server.domain.uploads import BufferBudget

log = logging.getLogger(__name__)

# Bits of randomness in an upload id (the SPEC asks for at least 128).
UPLOAD_ID_BYTES = 16


def new_upload_id() -> str:
    return secrets.token_hex(UPLOAD_ID_BYTES)


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
        self.carried = Carried(clock)

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
        created_by: str | None = None,
    ) -> Claim:
        """A new upload of ``source_id``; ``TooManyUploads`` past ``max_open`` open ones.
        ``created_by``: who created the source (its uploads are counted together)."""
        if length is not None and length > self.max_size:
            raise PayloadTooLarge(f"upload is larger than the limit of {self.max_size} bytes")
        now = self._clock()
        state = UploadState(
            source_id=source_id,
            upload_id=new_upload_id(),
            expires_at=int(now) + self.limits.ttl_seconds,
            part_size=self.limits.part_size,
            content_type=content_type,
            length=length,
            meta=meta,
            expected_sha256=expected_sha256,
            created_by=created_by,
        )
        etag = await self._states.create(state)
        # Stored first, then counted: a slot names an upload whose state exists, so a creation
        # that finds a slot's upload missing may take it over.
        if not await self._states.take_slot(state, self.limits.max_open, now):
            await self._states.remove(state)
            raise TooManyUploads(
                f"this source has {self.limits.max_open} unfinished uploads already; finish or"
                " cancel one"
            )
        return Claim(state, etag)

    async def claim(self, source_id: str, upload_id: str) -> Claim:
        """Take the upload for this request: the newest request on an upload wins, on any
        instance. ``UploadNotFound`` once expired, cancelled or never created.

        An open upload's state this instance knows (it wrote or read it last) is tried first:
        the compare-and-swap that claims it fails if it is not current, then it is read."""
        known = self._states.known(source_id, upload_id)
        for _ in range(CLAIM_ATTEMPTS):
            if known is not None and known[0].status == "open":
                state, etag = known
            else:
                state, etag = await self._states.load(source_id, upload_id)
            known = None
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
        # Two part buffers when the body may fill more than one part: one uploads while the
        # next fills (as a plain multipart upload does); one when the budget allows no more.
        more = body_length is None or body_length + state.tail_size > state.part_size
        held = await self._budget.acquire(state.part_size * (2 if more else 1))
        try:
            writing = Writing(
                self._store, self._states, self._finisher, self.max_size, self.carried, self._budget
            )
            writer = Append(
                writing,
                claim,
                check,
                pipelined=held >= 2 * state.part_size,
                body_length=body_length,
            )
            await writer.run(body, complete, authorize)
        finally:
            self._budget.release(held)

    async def cancel(self, claim: Claim) -> None:
        """Abort the upload and remove its objects; later requests on it get ``UploadNotFound``."""
        state = claim.state
        self.carried.drop(state)
        if state.status == "open":
            await self._finisher.discard(state)
        try:
            await self._states.release_slot(state, self.limits.max_open)
        except GatewayError:
            log.warning("could not free the slot of upload %s", state.upload_id)
        await self._finisher.clean(state)
        await self._states.remove(state)
