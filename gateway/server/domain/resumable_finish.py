"""Completing a resumable upload: what a single PUT gives, checked before anything is visible.

Where the parts go is chosen when the first one is sent (``Finisher.direct``):
- **At the source's key** (``state.direct``), when the request sending it checks the bytes as they
  stream (it started at offset 0, or carries the check of the bytes before) and no object is at
  the source's key yet. The multipart upload is created *held*: the object it completes into is
  invisible to every read of the gateway until its sha256 is recorded. When a ``Verifier`` saw every
  byte, the upload is judged first and only then completed; otherwise (bytes that came through
  another instance) it is completed held, but only if the key is still free, read back once,
  judged, and released by recording its sha256, or removed if refused. No copy either way.
- **At a staging object** under ``sources.resumable.prefix`` (no download reads there) otherwise:
  checked by the verifier or read back, then copied to the source's key. An earlier complete
  upload of the source therefore stays whole whatever becomes of this one.

Either way the object is tagged like a single PUT's and the answer recorded in the state. A
refused archive leaves nothing at the source's key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.error_codes import Code
from gateway.errors import (
    ArchiveInvalid,
    BadGateway,
    BadRequest,
    Conflict,
    GatewayError,
    ObjectChanged,
    ObjectNotFound,
    WriteConflict,
)
from gateway.server.adapters.archive_tags import archive_tags
from gateway.server.domain.archive.check import ArchivePolicy
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.resumable_verify import Verifier
from gateway.server.domain.sources import object_key
from gateway.server.domain.storage import ObjectStore
from gateway.server.domain.upload_state import UploadState, UploadStates

log = logging.getLogger(__name__)

Authorize = Callable[[], None]
Judged = tuple[str, ArchiveFacts | None]


def _replaced() -> Conflict:
    return Conflict(
        "another upload of this source completed while this one was being checked; the source"
        " has that upload's archive"
    )


@dataclass
class Claim:
    """An upload as one request holds it: the state and the ETag of the version it wrote last.
    Every write of the request is a compare-and-swap on ``etag``."""

    state: UploadState
    etag: str


class Finisher:
    """Completes uploads whose bytes are all committed; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        states: UploadStates,
        archive: ArchivePolicy,
        sources_prefix: str,
        on_read_back: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._store = store
        self._states = states
        self._archive = archive
        self._sources_prefix = sources_prefix
        self._on_read_back = on_read_back

    def verifier(self) -> Verifier:
        return Verifier(self._archive.start())

    def source_key(self, state: UploadState) -> str:
        return object_key(self._sources_prefix, state.source_id)

    def parts_key(self, state: UploadState) -> str:
        """The key the upload's multipart upload completes into."""
        return self.source_key(state) if state.direct else self._states.key(state, "data")

    async def direct(self, state: UploadState) -> bool:
        """Whether a multipart upload starting now may complete at the source's key: nothing is
        there that a refusal could take away (a held object of another upload is nothing)."""
        try:
            await self._store.stat(self.source_key(state))
        except ObjectNotFound:
            return True
        return False

    async def finish(self, claim: Claim, verifier: Verifier | None, authorize: Authorize) -> None:
        """Make the upload of ``claim`` (offset == length) the source's object; record the
        answer in its state. ``verifier`` has seen every byte, or is None (read back)."""
        if claim.state.direct:
            await self._finish_direct(claim, verifier, authorize)
            return
        state = claim.state
        staging = self._states.key(state, "data")
        if state.assembled is None:
            state.assembled = await self._assemble(state, staging)
            claim.etag = await self._states.commit(state, claim.etag)
        if verifier is not None:
            sha256, facts = await self._judge(claim, verifier)
        else:
            sha256, facts = await self._read_and_judge(claim, staging, None)
        authorize()  # the URL may have lost its key meanwhile: completion is judged again
        key = self.source_key(state)
        etag = await self._store.copy(staging, key, state.content_type)
        try:
            await self._tag(state, etag, sha256, facts)
        except GatewayError:
            log.warning("archive %s stored, but its sha256 tag could not be set", key)
        await self._done(claim, etag, sha256, facts)

    async def _finish_direct(
        self, claim: Claim, verifier: Verifier | None, authorize: Authorize
    ) -> None:
        state = claim.state
        key = self.source_key(state)
        if verifier is not None and state.assembled is None:
            # Every byte was checked as it came: judged first, then completed where it belongs.
            sha256, facts = await self._judge(claim, verifier)
            authorize()
            state.assembled = await self._assemble(state, key)
            claim.etag = await self._states.commit(state, claim.etag)
        else:
            if state.assembled is None:
                try:
                    state.assembled = await self._assemble(state, key, if_absent=True)
                except WriteConflict:
                    await self.fail(claim, _replaced())
                    raise _replaced() from None
                claim.etag = await self._states.commit(state, claim.etag)
            sha256, facts = await self._read_and_judge(claim, key, state.assembled)
            authorize()
        try:
            await self._tag(state, state.assembled, sha256, facts)
        except GatewayError:
            # Held back until tagged: the next request on the upload reads it back and tags it.
            raise BadGateway("the archive is stored but could not be released; try again") from None
        await self._done(claim, state.assembled, sha256, facts)

    async def _judge(self, claim: Claim, verifier: Verifier) -> Judged:
        """The sha256 and facts of the bytes ``verifier`` saw; on a refusal the upload fails."""
        state = claim.state
        try:
            sha256, facts = await verifier.finish()
        except ArchiveInvalid as exc:
            await self.fail(claim, exc)
            raise
        if verifier.size != state.length:
            # Only committed bytes are ever counted: a stored object of another size is the
            # store's fault, and nothing of it may become visible.
            short = BadGateway("the stored upload does not have its length; start over")
            await self.fail(claim, short)
            raise short
        if state.expected_sha256 is not None and state.expected_sha256 != sha256:
            digest = BadRequest(
                "the upload does not match its Repr-Digest", code=Code.DIGEST_MISMATCH
            )
            await self.fail(claim, digest)
            raise digest
        return sha256, facts

    async def _read_and_judge(self, claim: Claim, key: str, etag: str | None) -> Judged:
        """Read the completed object back (the version ``etag``, when given) and judge it."""
        verifier = self.verifier()
        try:
            try:
                await self._read_back(key, verifier, etag)
            except (ObjectChanged, ObjectNotFound):
                if etag is None:
                    raise
                await self.fail(claim, _replaced())  # a newer upload of the source won
                raise _replaced() from None
            return await self._judge(claim, verifier)
        finally:
            verifier.close()

    async def _assemble(self, state: UploadState, key: str, *, if_absent: bool = False) -> str:
        if state.multipart is None:
            raise BadGateway("upload has no parts to complete")
        try:
            return await self._store.complete_parts(
                key, state.multipart, state.parts, if_absent=if_absent
            )
        except WriteConflict:
            raise
        except GatewayError:
            # An earlier completer may have completed it and died before recording so.
            try:
                info = await self._store.stat(key, held=True)
            except GatewayError:
                raise BadGateway("the upload's parts could not be completed") from None
            if info.size != state.length or (state.direct and not info.held):
                raise
            return info.etag

    async def _read_back(self, key: str, verifier: Verifier, etag: str | None) -> None:
        """Feed ``verifier`` the object at ``key`` (the version ``etag``, held or not, when
        given; ``ObjectChanged`` if it was replaced)."""
        info = await self._store.stat(key, held=etag is not None)
        if etag is not None and info.etag != etag:
            raise ObjectChanged()
        if info.size == 0:
            return
        async with self._store.read(key, 0, info.size - 1, info.etag) as chunks:
            async for chunk in chunks:
                await verifier.feed(chunk)
                self._on_read_back(len(chunk))

    async def _tag(
        self, state: UploadState, etag: str, sha256: str, facts: ArchiveFacts | None
    ) -> None:
        tags = archive_tags(facts) if facts else None
        await self._store.set_sha256(self.source_key(state), sha256, etag, tags)

    async def _done(self, claim: Claim, etag: str, sha256: str, facts: ArchiveFacts | None) -> None:
        state = claim.state
        body: dict[str, Any] = {"id": state.source_id, "size": state.length, "sha256": sha256}
        if facts is not None:
            body["archive"] = facts.as_json()
        state.status = "done"
        state.answer = {"body": body, "etag": etag}
        claim.etag = await self._states.commit(state, claim.etag)
        await self.clean(state)

    async def fail(self, claim: Claim, error: GatewayError) -> None:
        """End the upload with ``error``, which every later request on it is answered; keep
        none of its bytes."""
        state = claim.state
        await self.discard(state)
        state.status = "failed"
        state.error = {"status": error.status, "body": error.body()}
        claim.etag = await self._states.commit(state, claim.etag)
        await self.clean(state)

    async def discard(self, state: UploadState) -> None:
        """Drop the upload's parts, or the held object they completed into (that version only:
        a newer upload's object at the source's key stays)."""
        if state.multipart is not None and state.assembled is None:
            try:
                await self._store.abort_multipart(self.parts_key(state), state.multipart)
            except GatewayError:
                log.warning("could not abort the parts of upload %s", state.upload_id)
        elif state.direct and state.assembled is not None and state.status == "open":
            try:
                await self._store.delete(self.source_key(state), etag=state.assembled)
            except WriteConflict:
                pass  # replaced by a newer upload of the source: not ours to remove
            except GatewayError:
                log.warning("could not remove the refused archive of upload %s", state.upload_id)

    async def clean(self, state: UploadState) -> None:
        """Remove the staging and tail objects of a finished or cancelled upload (best effort:
        the lifecycle rule removes what is left)."""
        keys = [] if state.direct else [self._states.key(state, "data")]
        if state.tail is not None:
            keys.append(state.tail)
        for key in keys:
            try:
                await self._store.delete(key)
            except GatewayError:
                log.warning("could not remove %s; the lifecycle rule will", key)
