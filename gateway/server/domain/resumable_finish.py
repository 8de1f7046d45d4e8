"""Completing a resumable upload: what a single PUT gives, checked before anything is visible.

The parts complete into the upload's staging object (under ``sources.resumable.prefix``, which no
download reads); its bytes are checked (size, sha256, the archive check) by the ``Verifier`` that
ran while they streamed, when one request carried them all, else by reading the staging object
back once; only then is it copied to the source's key, tagged like a single PUT's object, and the
answer recorded in the state. A refused archive leaves nothing at the source's key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.error_codes import Code
from gateway.errors import ArchiveInvalid, BadGateway, BadRequest, GatewayError
from gateway.server.adapters.archive_tags import archive_tags
from gateway.server.domain.archive.check import ArchiveCheck, ArchivePolicy
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.sources import object_key
from gateway.server.domain.storage import ObjectStore
from gateway.server.domain.upload_state import UploadState, UploadStates

log = logging.getLogger(__name__)

Authorize = Callable[[], None]


@dataclass
class Claim:
    """An upload as one request holds it: the state and the ETag of the version it wrote last.
    Every write of the request is a compare-and-swap on ``etag``."""

    state: UploadState
    etag: str


class Verifier:
    """Size, sha256 and archive check over an upload's bytes, fed in order from the first."""

    def __init__(self, check: ArchiveCheck | None) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._check = check

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        if self._check is not None:
            await self._check.feed(chunk)

    async def finish(self) -> tuple[str, ArchiveFacts | None]:
        """The sha256 (hex) and the archive's facts; ``ArchiveInvalid`` in enforce mode."""
        facts = await self._check.finish() if self._check is not None else None
        return self._sha256.hexdigest(), facts

    def close(self) -> None:
        if self._check is not None:
            self._check.close()


class Finisher:
    """Completes uploads whose bytes are all committed; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        states: UploadStates,
        archive: ArchivePolicy,
        sources_prefix: str,
    ) -> None:
        self._store = store
        self._states = states
        self._archive = archive
        self._sources_prefix = sources_prefix

    def verifier(self) -> Verifier:
        return Verifier(self._archive.start())

    async def finish(self, claim: Claim, verifier: Verifier | None, authorize: Authorize) -> None:
        """Make the upload of ``claim`` (offset == length) the source's object; record the
        answer in its state. ``verifier`` has seen every byte, or is None (read back)."""
        state = claim.state
        staging = self._states.key(state, "data")
        if state.assembled is None:
            state.assembled = await self._assemble(state, staging)
            claim.etag = await self._states.commit(state, claim.etag)
        own = verifier is None
        if verifier is None:
            verifier = self.verifier()
            await self._read_back(staging, verifier)
        try:
            sha256, facts = await verifier.finish()
        except ArchiveInvalid as exc:
            await self.fail(claim, exc)
            raise
        finally:
            if own:
                verifier.close()
        if verifier.size != state.length:
            # Only committed bytes are ever counted: a staging object of another size is the
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
        authorize()  # the URL may have lost its key meanwhile: completion is judged again
        await self._publish(claim, sha256, facts)

    async def _assemble(self, state: UploadState, staging: str) -> str:
        if state.multipart is None:
            raise BadGateway("upload has no parts to complete")
        try:
            return await self._store.complete_parts(staging, state.multipart, state.parts)
        except GatewayError:
            # An earlier completer may have completed it and died before recording so.
            try:
                info = await self._store.stat(staging)
            except GatewayError:
                raise BadGateway("the upload's parts could not be completed") from None
            if info.size != state.length:
                raise
            return info.etag

    async def _read_back(self, staging: str, verifier: Verifier) -> None:
        info = await self._store.stat(staging)
        if info.size == 0:
            return
        async with self._store.read(staging, 0, info.size - 1, info.etag) as chunks:
            async for chunk in chunks:
                await verifier.feed(chunk)

    async def _publish(self, claim: Claim, sha256: str, facts: ArchiveFacts | None) -> None:
        state = claim.state
        staging = self._states.key(state, "data")
        key = object_key(self._sources_prefix, state.source_id)
        etag = await self._store.copy(staging, key, state.content_type)
        try:
            await self._store.set_sha256(key, sha256, etag, archive_tags(facts) if facts else None)
        except GatewayError:
            log.warning("archive %s stored, but its sha256 tag could not be set", key)
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
        if state.multipart is not None and state.assembled is None:
            try:
                await self._store.abort_multipart(self._states.key(state, "data"), state.multipart)
            except GatewayError:
                log.warning("could not abort the parts of upload %s", state.upload_id)
        state.status = "failed"
        state.error = {"status": error.status, "body": error.body()}
        claim.etag = await self._states.commit(state, claim.etag)
        await self.clean(state)

    async def clean(self, state: UploadState) -> None:
        """Remove the staging and tail objects of a finished or cancelled upload (best effort:
        the lifecycle rule removes what is left)."""
        keys = [self._states.key(state, "data")]
        if state.tail is not None:
            keys.append(state.tail)
        for key in keys:
            try:
                await self._store.delete(key)
            except GatewayError:
                log.warning("could not remove %s; the lifecycle rule will", key)
