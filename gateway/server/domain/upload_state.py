"""The state of one resumable upload: one small JSON object in the bucket, changed only by CAS.

Created with ``If-None-Match: *`` and replaced only with ``If-Match`` on the ETag last read, so
every instance sees one history: a writer whose compare-and-swap fails has been overtaken (a newer
request bumped the generation, or the upload was cancelled) and must stop without acknowledging
anything. The offset is the state's, never the store's listing of parts.

Keys, all under ``sources.resumable.prefix`` (``{prefix}{source id}/{upload id}/``): ``state``
(this object), ``data`` (the staging object the parts complete into, checked before it is copied
to the source's key, unless they complete at the source's key itself: ``direct``) and
``tail-{generation}-{offset}`` (the bytes short of a part, immutable);
per source, ``{prefix}{source id}/slot-{n}``, the ``max_open_per_source`` slots for open uploads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import ObjectNotFound, UploadNotFound, UploadSuperseded, WriteConflict
from gateway.server.domain.storage import JsonObjects, ObjectStore

log = logging.getLogger(__name__)

Status = Literal["open", "done", "failed"]
# How often a request retries bumping the generation when another request bumped it meanwhile:
# the newest request wins, so each retry is against a request that arrived at the same moment.
CLAIM_ATTEMPTS = 5
# The states this instance wrote or read last, kept as JSON up to this many characters in all: a
# claim tries the one it knows before reading it again (its compare-and-swap proves it current).
KNOWN_STATES_CHARS = 4 * 1024 * 1024
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
    # The upload token's creator tag: the uploads of one identity are counted together
    # (auth.limits.concurrent_uploads); None for tokens without one.
    created_by: str | None = None
    # What the protocol adapter keeps with the upload (tus metadata, a Repr-Digest...).
    meta: dict[str, str] = field(default_factory=dict)
    generation: int = 0
    status: Status = "open"
    multipart: str | None = None
    # The multipart upload completes at the source's key (held until checked), not at ``data``.
    direct: bool = False
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
        self._known: OrderedDict[str, tuple[str, str]] = OrderedDict()  # key: (JSON, ETag)
        self._known_chars = 0

    def known(self, source_id: str, upload_id: str) -> tuple[UploadState, str] | None:
        """The state this instance wrote or read last for the upload and its ETag, if it still
        has them: current unless another instance changed it since, which a compare-and-swap
        against the ETag finds out (``commit`` fails: read it again). A copy, the caller's."""
        entry = self._known.get(self._state_key(source_id, upload_id))
        if entry is None:
            return None
        return UploadState.from_json(json.loads(entry[0])), entry[1]

    def _remember(self, key: str, data: dict[str, Any], etag: str) -> None:
        self._forget(key)
        text = json.dumps(data)
        self._known[key] = (text, etag)
        self._known_chars += len(text)
        while self._known_chars > KNOWN_STATES_CHARS:
            self._forget(next(iter(self._known)))

    def _forget(self, key: str) -> None:
        entry = self._known.pop(key, None)
        if entry is not None:
            self._known_chars -= len(entry[0])

    def key(self, state: UploadState, name: str) -> str:
        """The key of one of the upload's objects (``state``, ``data``, a tail)."""
        return f"{self.prefix}{state.prefix}{name}"

    def _state_key(self, source_id: str, upload_id: str) -> str:
        return f"{self.prefix}{source_id}/{upload_id}/state"

    async def create(self, state: UploadState) -> str:
        """Store a new state; ``UploadSuperseded`` if one exists (an upload id used twice)."""
        key, data = self._state_key(state.source_id, state.upload_id), state.to_json()
        try:
            etag = await self._objects.put_json(key, data, if_absent=True)
        except WriteConflict:
            raise UploadSuperseded() from None
        self._remember(key, data, etag)
        return etag

    async def load(self, source_id: str, upload_id: str) -> tuple[UploadState, str]:
        """The state and its ETag; ``UploadNotFound`` when there is none."""
        key = self._state_key(source_id, upload_id)
        try:
            data, etag = await self._objects.get_json(key)
        except ObjectNotFound:
            self._forget(key)
            raise UploadNotFound() from None
        try:
            state = UploadState.from_json(data)
        except (ValueError, TypeError):
            self._forget(key)
            log.warning(
                "upload state %s/%s is unreadable; treated as missing", source_id, upload_id
            )
            raise UploadNotFound() from None
        self._remember(key, data, etag)
        return state, etag

    async def commit(self, state: UploadState, etag: str) -> str:
        """Replace the state read with ETag ``etag`` by ``state``; return the new ETag.
        ``UploadSuperseded`` if it changed meanwhile (or was removed)."""
        key, data = self._state_key(state.source_id, state.upload_id), state.to_json()
        try:
            new_etag = await self._objects.put_json(key, data, if_match=etag)
        except (WriteConflict, ObjectNotFound):
            self._forget(key)
            raise UploadSuperseded() from None
        self._remember(key, data, new_etag)
        return new_etag

    async def remove(self, state: UploadState) -> None:
        """Delete the state: every later request on the upload finds none, and every request
        still writing fails its next compare-and-swap."""
        key = self._state_key(state.source_id, state.upload_id)
        self._forget(key)
        await self._store.delete(key)

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

    def _slot_key(self, source_id: str, number: int) -> str:
        return f"{self.prefix}{source_id}/slot-{number}"

    async def take_slot(self, state: UploadState, slots: int, now: float) -> bool:
        """Give the upload of ``state`` (already stored) one of its source's ``slots`` slots for
        open uploads; False when every one is held by an open upload.

        A slot is a small object naming its upload, created with ``If-None-Match: *`` and taken
        over with ``If-Match`` only once the upload it names is no longer open (done, failed,
        cancelled, expired): two creations at once, on any instances, never both get the last
        one, where counting the open states and then creating could let both through."""
        mine = {"upload_id": state.upload_id}
        for number in range(slots):
            key = self._slot_key(state.source_id, number)
            try:
                await self._objects.put_json(key, mine, if_absent=True)
                return True
            except WriteConflict:
                pass
            try:
                held, etag = await self._objects.get_json(key)
            except ObjectNotFound:
                continue  # freed this instant: the next slot, rather than a loop
            if await self._is_open(state.source_id, held, now):
                continue
            try:
                await self._objects.put_json(key, mine, if_match=etag)
                return True
            except (WriteConflict, ObjectNotFound):
                continue  # another creation took it over first
        return False

    async def release_slot(self, state: UploadState, slots: int) -> None:
        """Remove the slot the upload of ``state`` holds. Only while it is open: then no
        creation can have taken the slot over, and what names it is still its own."""
        if state.status != "open":
            return  # its slot is free to take over already (and may have been)
        for number in range(slots):
            key = self._slot_key(state.source_id, number)
            try:
                held, _ = await self._objects.get_json(key)
            except ObjectNotFound:
                continue
            if isinstance(held, dict) and held.get("upload_id") == state.upload_id:
                await self._store.delete(key)
                return

    async def _is_open(self, source_id: str, held: Any, now: float) -> bool:
        upload_id = held.get("upload_id") if isinstance(held, dict) else None
        if not isinstance(upload_id, str):
            return False
        try:
            state, _ = await self.load(source_id, upload_id)
        except UploadNotFound:
            return False
        return state.status == "open" and state.expires_at > now
