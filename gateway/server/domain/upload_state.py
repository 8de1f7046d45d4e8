"""The state of one resumable upload: one small JSON object in the bucket, changed only by CAS.

Created with ``If-None-Match: *`` and replaced only with ``If-Match`` on the ETag last read, so
every instance sees one history: a writer whose compare-and-swap fails has been overtaken (a newer
request bumped the generation, or the upload was cancelled) and must stop without acknowledging
anything. The offset is the state's, never the store's listing of parts.

Keys, all under ``sources.resumable.prefix`` (``{prefix}{source id}/{upload id}/``): ``state``
(this object), ``data`` (the staging object the parts complete into, checked before it is copied
to the source's key) and ``tail-{generation}-{offset}`` (the bytes short of a part, immutable).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import ObjectNotFound, UploadNotFound, UploadSuperseded, WriteConflict
from gateway.server.domain.storage import JsonObjects, ObjectStore

log = logging.getLogger(__name__)

Status = Literal["open", "done", "failed"]
# How often a request retries bumping the generation when another request bumped it meanwhile:
# the newest request wins, so each retry is against a request that arrived at the same moment.
CLAIM_ATTEMPTS = 5
STATE_VERSION = 1


@dataclass
class UploadState:
    """What is known of one upload; ``offset`` counts committed bytes only."""

    source_id: str
    upload_id: str
    expires_at: int
    part_size: int
    content_type: str
    length: int | None = None
    # The SHA-256 (hex) the client announced for the whole upload; checked at completion.
    expected_sha256: str | None = None
    # What the protocol adapter keeps with the upload (tus metadata, a Repr-Digest...).
    meta: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    status: Status = "open"
    multipart: str | None = None
    parts: list[tuple[int, str]] = field(default_factory=list)  # (part number, ETag)
    offset: int = 0  # bytes committed: in parts, and in the tail
    tail: str | None = None  # its key
    tail_size: int = 0
    # The staging object's ETag once the parts are completed into it.
    assembled: str | None = None
    answer: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # {"status", "message", "code"} of a failed completion

    @property
    def prefix(self) -> str:
        return f"{self.source_id}/{self.upload_id}/"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["parts"] = [list(p) for p in self.parts]
        data["v"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: Any) -> UploadState:
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise ValueError("not an upload state")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["parts"] = [(int(n), str(e)) for n, e in values.get("parts", [])]
        return cls(**values)


class UploadStates:
    """Upload states in the bucket under ``prefix``, through conditional JSON writes."""

    def __init__(self, objects: JsonObjects, store: ObjectStore, prefix: str) -> None:
        self._objects = objects
        self._store = store
        self.prefix = prefix

    def key(self, state: UploadState, name: str) -> str:
        """The key of one of the upload's objects (``state``, ``data``, a tail)."""
        return f"{self.prefix}{state.prefix}{name}"

    def _state_key(self, source_id: str, upload_id: str) -> str:
        return f"{self.prefix}{source_id}/{upload_id}/state"

    async def create(self, state: UploadState) -> str:
        """Store a new state; ``UploadSuperseded`` if one exists (an upload id used twice)."""
        try:
            return await self._objects.put_json(
                self._state_key(state.source_id, state.upload_id), state.to_json(), if_absent=True
            )
        except WriteConflict:
            raise UploadSuperseded() from None

    async def load(self, source_id: str, upload_id: str) -> tuple[UploadState, str]:
        """The state and its ETag; ``UploadNotFound`` when there is none."""
        try:
            data, etag = await self._objects.get_json(self._state_key(source_id, upload_id))
        except ObjectNotFound:
            raise UploadNotFound() from None
        try:
            return UploadState.from_json(data), etag
        except (ValueError, TypeError):
            log.warning(
                "upload state %s/%s is unreadable; treated as missing", source_id, upload_id
            )
            raise UploadNotFound() from None

    async def commit(self, state: UploadState, etag: str) -> str:
        """Replace the state read with ETag ``etag`` by ``state``; return the new ETag.
        ``UploadSuperseded`` if it changed meanwhile (or was removed)."""
        try:
            return await self._objects.put_json(
                self._state_key(state.source_id, state.upload_id), state.to_json(), if_match=etag
            )
        except (WriteConflict, ObjectNotFound):
            raise UploadSuperseded() from None

    async def remove(self, state: UploadState) -> None:
        """Delete the state: every later request on the upload finds none, and every request
        still writing fails its next compare-and-swap."""
        await self._store.delete(self._state_key(state.source_id, state.upload_id))

    async def probe(self) -> bool:
        """Whether the store honours conditional writes (create-only and replace-if-match), on
        which every guarantee of resumable uploads rests; leaves nothing behind."""
        key = f"{self.prefix}probe-{secrets.token_hex(8)}"
        try:
            await self._objects.put_json(key, {"probe": 1}, if_absent=True)
            for condition in ({"if_absent": True}, {"if_match": '"0123456789abcdef"'}):
                try:
                    await self._objects.put_json(key, {"probe": 2}, **condition)
                except WriteConflict:
                    continue
                return False  # the write went through: the condition was ignored
            return True
        finally:
            await self._store.delete(key)

    async def states_of(self, source_id: str) -> list[UploadState]:
        """Every readable upload state of ``source_id`` (a few: creation is capped per source)."""
        page = await self._objects.list_keys(f"{self.prefix}{source_id}/")
        states = []
        for key in page.keys:
            if key.endswith("/state"):
                upload_id = key[len(self.prefix) :].split("/")[1]
                try:
                    states.append((await self.load(source_id, upload_id))[0])
                except UploadNotFound:
                    continue
        return states
