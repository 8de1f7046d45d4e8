"""Object storage: the narrow interfaces the gateway needs (objects, small JSON objects), their
value types.

Every method of ``ObjectStore`` raises ``GatewayError`` subclasses only (``gateway.errors``):
``ObjectNotFound`` for a missing key, ``StorageUnavailable``, ``StorageFailed``, ``ObjectChanged``
and ``WriteConflict``. ``gateway.server.adapters.s3.S3Store`` is the implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    last_modified: datetime
    content_type: str
    sha256: str | None
    # The tags set with the sha256 (``set_sha256``'s ``extra``), of this version only.
    tags: Mapping[str, str] = field(default_factory=dict)
    # Held back from reads (see ``create_multipart``): only ``stat(held=True)`` describes it.
    held: bool = False


# The largest object one CopyObject call copies (S3's limit; larger needs UploadPartCopy).
MAX_COPY_SIZE = 5 * 1024**3

# Bytes held in memory: a part buffer, or a view of the filled front of one.
Buffer = bytes | bytearray | memoryview


class ObjectStore(Protocol):
    """What the gateway asks of a store. Every method raises ``GatewayError`` subclasses only."""

    async def put_stream(
        self, key: str, body: AsyncIterable[bytes], length: int, content_type: str
    ) -> str:
        """Store exactly ``length`` bytes from ``body`` as one object; return its ETag.

        If ``body`` raises, nothing is stored and the exception propagates unchanged."""

    async def put_bytes(self, key: str, data: Buffer, content_type: str) -> str:
        """Store ``data`` as one object; return its ETag. ``data`` is not copied: the caller
        leaves it unchanged until this returns."""

    async def create_multipart(self, key: str, content_type: str, *, held: bool = False) -> str:
        """Start a multipart upload; return its upload id. ``held``: the object it completes
        into is held back (``stat`` calls it missing) until ``set_sha256`` describes it."""

    async def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> str:
        """Upload part ``number`` (from 1); return its ETag. ``data`` as in ``put_bytes``."""

    async def stream_part(
        self, key: str, upload_id: str, number: int, body: AsyncIterable[Buffer], length: int
    ) -> str:
        """Upload part ``number`` from exactly ``length`` bytes of ``body``, sent as they come;
        return its ETag. If ``body`` raises, no part is stored and the exception propagates."""

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str:
        """Make the parts (in order) one visible object; return its ETag."""

    async def complete_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        *,
        if_absent: bool = False,
    ) -> str:
        """Make the listed parts (``(number, ETag)``, numbers ascending, gaps allowed) one visible
        object; return its ETag. ``StorageFailed`` if a part's ETag is not the one it holds;
        ``if_absent``: only if no object is at ``key``, else ``WriteConflict`` (the upload stays
        open)."""

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an unfinished multipart upload and its parts."""

    async def create_bytes(self, key: str, data: Buffer, content_type: str) -> str:
        """Store ``data`` as a new object only if ``key`` is free; return its ETag, or raise
        ``WriteConflict`` when an object is there already."""

    async def copy(self, source: str, key: str, content_type: str) -> str:
        """Make ``key`` a copy of the object at ``source`` (at most ``MAX_COPY_SIZE`` bytes) with
        ``content_type`` and no tags; return the new ETag (``ObjectNotFound`` without source)."""

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        """Remove the object at ``key``; a key that does not exist is not an error. With
        ``etag``, only that version: ``WriteConflict`` if another one is there."""

    async def set_sha256(
        self, key: str, sha256: str, etag: str, extra: Mapping[str, str] | None = None
    ) -> None:
        """Record the SHA-256 (hex) of the object version whose ETag is ``etag``, and ``extra``
        (what else is known of that version: at most 8 tags, values S3 accepts in tags)."""

    async def stat(self, key: str, *, held: bool = False) -> ObjectInfo:
        """Describe the object, or raise ``ObjectNotFound`` (also for a held one, unless
        ``held``)."""

    def read(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open bytes ``start`` to ``end`` (inclusive) of the object as a stream of chunks; with
        ``etag``, of that version only (``ObjectChanged`` if it was replaced meanwhile)."""

    async def presign_get(
        self, key: str, expires_in: int, content_disposition: str | None = None
    ) -> str:
        """A URL that GETs the object without credentials for ``expires_in`` seconds; the store
        answers it with ``content_disposition`` as the ``Content-Disposition`` when given."""

    async def check(self) -> None:
        """Return when the bucket answers; raise ``StorageUnavailable`` otherwise."""


# ListObjectsV2 answers at most this many keys per call.
MAX_KEYS = 1000


@dataclass(frozen=True)
class KeyPage:
    """One listing: keys in order, and whether more follow the last one."""

    keys: list[str]
    truncated: bool


class JsonObjects(Protocol):
    """Small JSON objects. Every method raises ``GatewayError`` subclasses only."""

    async def put_json(
        self, key: str, value: Any, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """Store ``value`` as JSON; return the new ETag. ``if_absent``: only if the key does not
        exist; ``if_match``: only if its ETag is still that. ``WriteConflict`` otherwise."""

    async def get_json(self, key: str) -> tuple[Any, str]:
        """The JSON value at ``key`` and its ETag, or ``ObjectNotFound``."""

    async def list_keys(
        self, prefix: str, start_after: str | None = None, max_keys: int = MAX_KEYS
    ) -> KeyPage:
        """One ListObjectsV2 call: keys under ``prefix`` after ``start_after``, in order."""
