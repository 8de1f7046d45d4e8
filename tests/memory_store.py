"""``MemoryStore``: the whole ``ObjectStore`` and ``JsonObjects`` interfaces in memory, for tests.

It keeps S3's observable rules (the conformance suite, ``test_store_conformance.py``, runs the same
tests on it and on ``S3Store``): ETags are quoted MD5s (``"<md5 of md5s>-N"`` for a multipart
object), an object is visible only once complete, a part's ETag must match when the parts are put
together, the SHA-256 describes only the version it was recorded for, and conditional writes
(create only, replace only the version read) fail with ``WriteConflict``. It also remembers
every call (``calls``) and how many parts were uploading at once, for tests of the uploader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from gateway import errors
from gateway.errors import WriteConflict
from gateway.server.domain.storage import MAX_KEYS, Buffer, KeyPage, ObjectInfo

# Pieces ``read`` yields, small so that a test sees a stream, not one block.
READ_CHUNK = 64 * 1024
URL_PREFIX = "memory://"


@dataclass
class StoredObject:
    data: bytes
    etag: str
    content_type: str
    last_modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The SHA-256 recorded by set_sha256 and the ETag of the version it describes.
    sha256: tuple[str, str] | None = None
    tags: dict[str, str] = field(default_factory=dict)  # set with the sha256
    held: bool = False  # until set_sha256


@dataclass
class Upload:
    key: str
    content_type: str
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    held: bool = False


def quoted_md5(data: Buffer) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


class MemoryStore:
    """``ObjectStore`` in a dict. ``available = False`` makes every call fail as an unreachable
    store does (``StorageUnavailable``); ``part_delay`` is how long a part takes to upload."""

    def __init__(self, *, part_delay: float = 0.001) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, Upload] = {}
        self.calls: list[str] = []
        self.available = True
        self.part_delay = part_delay
        self.concurrent_parts = 0
        self.max_concurrent_parts = 0

    def _enter(self, call: str) -> None:
        self.calls.append(call)
        if not self.available:
            raise errors.StorageUnavailable("storage is unreachable, try again later")

    def _object(self, key: str) -> StoredObject:
        try:
            return self.objects[key]
        except KeyError:
            raise errors.ObjectNotFound() from None

    def _upload(self, key: str, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise errors.StorageFailed("storage error")  # S3: NoSuchUpload
        return upload

    def _store(self, key: str, data: bytes, content_type: str, etag: str) -> str:
        self.objects[key] = StoredObject(data, etag, content_type)
        return etag

    async def put_stream(
        self, key: str, body: AsyncIterable[bytes], length: int, content_type: str
    ) -> str:
        self._enter("stream")
        data = bytearray()
        async for chunk in body:  # whatever the body raises propagates; nothing is stored
            data += chunk
        if len(data) != length:
            raise errors.StorageFailed("storage error")  # S3: not the Content-Length it said
        return self._store(key, bytes(data), content_type, quoted_md5(data))

    async def put_bytes(self, key: str, data: Buffer, content_type: str) -> str:
        self._enter("put")
        return self._store(key, bytes(data), content_type, quoted_md5(data))

    async def create_multipart(self, key: str, content_type: str, *, held: bool = False) -> str:
        self._enter("create")
        upload_id = uuid.uuid4().hex
        self.uploads[upload_id] = Upload(key, content_type, held=held)
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> str:
        self._enter(f"part {number}")
        upload = self._upload(key, upload_id)
        self.concurrent_parts += 1
        self.max_concurrent_parts = max(self.max_concurrent_parts, self.concurrent_parts)
        try:
            await asyncio.sleep(self.part_delay)
        finally:
            self.concurrent_parts -= 1
        etag = quoted_md5(data)
        upload.parts[number] = (etag, bytes(data))
        return etag

    async def stream_part(
        self, key: str, upload_id: str, number: int, body: AsyncIterable[Buffer], length: int
    ) -> str:
        self._enter(f"stream part {number}")
        self._upload(key, upload_id)
        data = bytearray()
        async for chunk in body:  # whatever the body raises propagates; nothing is stored
            data += chunk
        if len(data) != length:
            raise errors.StorageFailed("storage error")  # S3: not the Content-Length it said
        upload = self._upload(key, upload_id)
        etag = quoted_md5(data)
        upload.parts[number] = (etag, bytes(data))
        return etag

    def parts_uploaded(self, key: str) -> int:
        """How many parts the unfinished uploads of ``key`` hold."""
        return sum(len(u.parts) for u in self.uploads.values() if u.key == key)

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str:
        self._enter("complete")
        upload = self._upload(key, upload_id)
        parts = [upload.parts.get(number) for number in range(1, len(etags) + 1)]
        if not etags or any(p is None or p[0] != e for p, e in zip(parts, etags, strict=True)):
            raise errors.StorageFailed("storage error")  # S3: InvalidPart / MalformedXML
        chosen = [p for p in parts if p is not None]
        digests = b"".join(hashlib.md5(data).digest() for _, data in chosen)
        etag = f'"{hashlib.md5(digests).hexdigest()}-{len(chosen)}"'
        del self.uploads[upload_id]
        etag = self._store(key, b"".join(data for _, data in chosen), upload.content_type, etag)
        self.objects[key].held = upload.held
        return etag

    async def complete_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        *,
        if_absent: bool = False,
    ) -> str:
        self._enter("complete")
        upload = self._upload(key, upload_id)
        if if_absent and key in self.objects:
            raise WriteConflict()
        numbers = [number for number, _ in parts]
        held = [upload.parts.get(number) for number in numbers]
        if (
            not parts
            or numbers != sorted(set(numbers))
            or any(p is None or p[0] != etag for p, (_, etag) in zip(held, parts, strict=True))
        ):
            raise errors.StorageFailed("storage error")  # S3: InvalidPart / InvalidPartOrder
        chosen = [p for p in held if p is not None]
        digests = b"".join(hashlib.md5(data).digest() for _, data in chosen)
        etag = f'"{hashlib.md5(digests).hexdigest()}-{len(chosen)}"'
        del self.uploads[upload_id]
        etag = self._store(key, b"".join(data for _, data in chosen), upload.content_type, etag)
        self.objects[key].held = upload.held
        return etag

    async def create_bytes(self, key: str, data: Buffer, content_type: str) -> str:
        self._enter("create_bytes")
        if key in self.objects:
            raise WriteConflict()
        return self._store(key, bytes(data), content_type, quoted_md5(data))

    async def copy(self, source: str, key: str, content_type: str) -> str:
        self._enter("copy")
        obj = self._object(source)
        return self._store(key, obj.data, content_type, quoted_md5(obj.data))

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        self._enter("delete")
        if etag is not None and key in self.objects and self.objects[key].etag != etag:
            raise WriteConflict()
        self.objects.pop(key, None)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._enter("abort")
        self._upload(key, upload_id)
        del self.uploads[upload_id]

    async def set_sha256(
        self, key: str, sha256: str, etag: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self._enter("sha256")
        obj = self._object(key)
        obj.sha256 = (sha256, etag)
        obj.tags = dict(extra or {})
        obj.held = False

    async def stat(self, key: str, *, held: bool = False) -> ObjectInfo:
        self._enter("stat")
        obj = self._object(key)
        if obj.held and not held:
            raise errors.ObjectNotFound()
        this_version = obj.sha256 is not None and obj.sha256[1] == obj.etag
        sha256 = obj.sha256[0] if obj.sha256 and this_version else None
        tags = obj.tags if this_version else {}
        return ObjectInfo(
            len(obj.data), obj.etag, obj.last_modified, obj.content_type, sha256, tags, obj.held
        )

    @contextlib.asynccontextmanager
    async def read(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        self._enter("read")
        obj = self._object(key)
        if etag is not None and etag != obj.etag:
            raise errors.ObjectChanged()
        data = obj.data[start : end + 1]

        async def chunks() -> AsyncIterator[bytes]:
            for at in range(0, len(data), READ_CHUNK):
                yield data[at : at + READ_CHUNK]

        yield chunks()

    async def presign_get(
        self, key: str, expires_in: int, content_disposition: str | None = None
    ) -> str:
        self._enter("presign")
        query = {"expires": str(time.time() + expires_in)}
        if content_disposition is not None:
            query["disposition"] = content_disposition
        return f"{URL_PREFIX}{quote(key)}?{urlencode(query)}"

    def fetch(self, url: str) -> tuple[bytes, str | None] | None:
        """What a GET of a ``presign_get`` URL answers: the bytes and the Content-Disposition,
        or None (expired, missing)."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        obj = self.objects.get(unquote(url[len(URL_PREFIX) :].split("?", 1)[0]))
        if obj is None or time.time() >= float(query["expires"][0]):
            return None
        return obj.data, query.get("disposition", [None])[0]

    async def check(self) -> None:
        self._enter("check")

    # --- JsonObjects ---------------------------------------------------------------------------

    async def put_json(
        self, key: str, value: Any, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        self._enter("put_json")
        current = self.objects.get(key)
        if (if_absent and current is not None) or (
            if_match is not None and (current is None or current.etag != if_match)
        ):
            raise WriteConflict()
        data = json.dumps(value, separators=(",", ":")).encode()
        return self._store(key, data, "application/json", quoted_md5(data))

    async def get_json(self, key: str) -> tuple[Any, str]:
        self._enter("get_json")
        obj = self._object(key)
        try:
            return json.loads(obj.data), obj.etag
        except ValueError:
            raise errors.ObjectNotFound() from None

    async def list_keys(
        self, prefix: str, start_after: str | None = None, max_keys: int = MAX_KEYS
    ) -> KeyPage:
        self._enter("list_keys")
        keys = sorted(k for k in self.objects if k.startswith(prefix) and k > (start_after or ""))
        return KeyPage(keys[:max_keys], len(keys) > max_keys)
