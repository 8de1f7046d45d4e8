"""Completing a resumable upload: what a single PUT gives, checked before anything is visible.

The parts complete into the upload's staging object (under ``sources.resumable.prefix``, which no
download reads); its bytes are checked (size, sha256, the archive check) by the ``Verifier`` that
ran while they streamed, when it saw them all (one request carried them, or each request found the
previous one's verifier in this instance's ``Carried`` at its offset), else by reading the staging
object back once; only then is it copied to the source's key, tagged like a single PUT's object,
and the answer recorded in the state. A refused archive leaves nothing at the source's key.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
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

# Verifiers an instance keeps for the next append of their upload, and for how long (seconds)
# an unused one is kept: each holds its archive check's state and up to a batch of bytes.
MAX_CARRIED = 64
CARRIED_IDLE_SECONDS = 900


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
        # A feed that raised (a refusal, a cancellation) may have left the check half-fed:
        # such a verifier judges nothing more, and is never carried to another request.
        self.broken = False

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        if self._check is not None:
            try:
                await self._check.feed(chunk)
            except BaseException:
                self.broken = True
                raise

    async def finish(self) -> tuple[str, ArchiveFacts | None]:
        """The sha256 (hex) and the archive's facts; ``ArchiveInvalid`` in enforce mode."""
        self.broken = True  # judged: it takes no more bytes
        facts = await self._check.finish() if self._check is not None else None
        return self._sha256.hexdigest(), facts

    def close(self) -> None:
        if self._check is not None:
            self._check.close()


class Carried:
    """The verifiers of uploads whose last request ended on this instance, each at the offset it
    has seen: the next append that reaches this instance at that offset goes on with it, and the
    upload completes without being read back (SPEC: "an instance may instead carry its running
    checks in memory"). At most ``MAX_CARRIED``, each for ``CARRIED_IDLE_SECONDS``; one taken
    is the taker's alone."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str], tuple[int, float, Verifier]] = OrderedDict()

    def take(self, state: UploadState) -> Verifier | None:
        """The verifier that has seen exactly the upload's committed bytes, or None."""
        kept = self._kept.pop((state.source_id, state.upload_id), None)
        if kept is None:
            return None
        offset, _, verifier = kept
        if offset != state.offset or verifier.size != offset:
            verifier.close()  # other bytes were committed since, elsewhere
            return None
        return verifier

    def keep(self, state: UploadState, verifier: Verifier, committed: int) -> None:
        """Keep ``verifier`` for the next append if it has seen exactly the ``committed`` bytes
        of the open upload and nothing went wrong in it; else close it."""
        if verifier.broken or verifier.size != committed or state.status != "open":
            verifier.close()
            return
        now = self._clock()
        key = (state.source_id, state.upload_id)
        self._kept[key] = (committed, now, verifier)
        self._kept.move_to_end(key)
        while self._kept:
            oldest_key, (_, since, oldest) = next(iter(self._kept.items()))
            if len(self._kept) <= MAX_CARRIED and since > now - CARRIED_IDLE_SECONDS:
                break
            del self._kept[oldest_key]
            oldest.close()

    def drop(self, state: UploadState) -> None:
        kept = self._kept.pop((state.source_id, state.upload_id), None)
        if kept is not None:
            kept[2].close()

    def __len__(self) -> int:
        return len(self._kept)


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
                self._on_read_back(len(chunk))

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
