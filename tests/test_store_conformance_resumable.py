"""The store calls resumable uploads add, on every store (``any_store``: ``MemoryStore`` and
``S3Store`` on moto), as ``test_store_conformance.py`` does for the others: each section is one
method, its first line the contract in one sentence."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.errors import (
    GatewayError,
    ObjectNotFound,
    StorageFailed,
    StorageUnavailable,
    WriteConflict,
)
from gateway.server.domain.storage import ObjectStore

from .helpers import SMALL_PART, StoreUnderTest

GZIP = "application/gzip"


def new_key() -> str:
    return f"conformance/{uuid.uuid4().hex}"


async def read_all(store: ObjectStore, key: str) -> bytes:
    size = (await store.stat(key)).size
    async with store.read(key, 0, size - 1) as chunks:
        return b"".join([chunk async for chunk in chunks])


# --- complete_parts: the listed parts (number, ETag; ascending, gaps allowed) become one visible
# object; StorageFailed if a part's ETag is not the one it holds --------------------------------


async def test_parts_with_gaps_complete_in_order(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    first, second, last = os.urandom(SMALL_PART), os.urandom(SMALL_PART), b"end"
    upload_id = await store.create_multipart(key, GZIP)
    listed = []
    for number, data in ((3, first), (120, second), (7001, last)):
        listed.append((number, await store.upload_part(key, upload_id, number, data)))
    await store.upload_part(key, upload_id, 50, b"not listed: left out")
    etag = await store.complete_parts(key, upload_id, listed)
    assert (await store.stat(key)).etag == etag
    assert await read_all(store, key) == first + second + last


async def test_part_replaced_since_is_refused(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP)
    stale = await store.upload_part(key, upload_id, 1, os.urandom(SMALL_PART))
    await store.upload_part(key, upload_id, 1, os.urandom(SMALL_PART))  # a late writer's
    last = await store.upload_part(key, upload_id, 2, b"x")
    with pytest.raises(StorageFailed):
        await store.complete_parts(key, upload_id, [(1, stale), (2, last)])
    with pytest.raises(ObjectNotFound):
        await store.stat(key)


# --- create_bytes: stores the object only if the key is free; WriteConflict otherwise ------


async def test_create_bytes_only_once(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    await store.create_bytes(key, b"first", "application/octet-stream")
    with pytest.raises(WriteConflict):
        await store.create_bytes(key, b"second", "application/octet-stream")
    assert await read_all(store, key) == b"first"


# --- copy: the key becomes a copy of the source with the content type and no tags; returns the
# new ETag; ObjectNotFound without a source ------------------------------------------------------


async def test_copy_makes_an_untagged_copy(any_store: StoreUnderTest) -> None:
    store, source, key = any_store.store, new_key(), new_key()
    data = os.urandom(2000)
    etag = await store.put_bytes(source, data, "application/octet-stream")
    await store.set_sha256(source, "0" * 64, etag, {"entries": "3"})
    old = await store.put_bytes(key, b"an earlier object", GZIP)
    copied = await store.copy(source, key, "application/x-gzip")
    info = await store.stat(key)
    assert (info.etag, info.size, info.content_type) == (copied, 2000, "application/x-gzip")
    assert (info.sha256, info.tags) == (None, {})
    assert copied != old
    assert await read_all(store, key) == data


async def test_copy_of_a_missing_source(any_store: StoreUnderTest) -> None:
    with pytest.raises(ObjectNotFound):
        await any_store.store.copy(new_key(), new_key(), GZIP)


# --- delete: removes the object; a missing key is not an error ----------------------------------


async def test_delete_removes_and_tolerates_missing(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    await store.put_bytes(key, b"data", GZIP)
    await store.delete(key)
    with pytest.raises(ObjectNotFound):
        await store.stat(key)
    await store.delete(key)  # again: nothing there, no error


async def test_unreachable_store_fails_the_new_calls(any_store: StoreUnderTest) -> None:
    key = new_key()
    async with any_store.unreachable() as store:
        calls = {
            "complete_parts": store.complete_parts(key, "upload", [(1, '"etag"')]),
            "create_bytes": store.create_bytes(key, b"data", GZIP),
            "copy": store.copy(new_key(), key, GZIP),
            "delete": store.delete(key),
        }
        failures: dict[str, type[GatewayError]] = {}
        for name, call in calls.items():
            with pytest.raises(GatewayError) as raised:
                await call
            failures[name] = type(raised.value)
    assert failures == dict.fromkeys(calls, StorageUnavailable)


# --- create_multipart(held=True): the object completed from it is held back: stat calls it
# missing (stat(held=True) describes it) until set_sha256 describes it --------------------------


async def test_held_object_is_missing_until_described(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP, held=True)
    part = await store.upload_part(key, upload_id, 1, b"held bytes")
    etag = await store.complete_parts(key, upload_id, [(1, part)])
    with pytest.raises(ObjectNotFound):
        await store.stat(key)
    info = await store.stat(key, held=True)
    assert (info.held, info.etag, info.size) == (True, etag, len(b"held bytes"))
    async with store.read(key, 0, info.size - 1, etag) as chunks:
        assert b"".join([c async for c in chunks]) == b"held bytes"
    await store.set_sha256(key, "ab" * 32, etag)
    info = await store.stat(key)
    assert (info.held, info.sha256) == (False, "ab" * 32)


async def test_replacing_a_held_object_releases_the_key(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP, held=True)
    part = await store.upload_part(key, upload_id, 1, b"held")
    await store.complete_parts(key, upload_id, [(1, part)])
    await store.put_bytes(key, b"plain", GZIP)
    assert (await store.stat(key)).held is False
    assert await read_all(store, key) == b"plain"


# --- complete_parts(if_absent=True): only if no object is at the key; else WriteConflict, and
# the upload stays open ----------------------------------------------------------------------


async def test_completion_if_absent_refuses_an_existing_object(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP)
    part = await store.upload_part(key, upload_id, 1, b"late")
    await store.put_bytes(key, b"earlier", GZIP)
    with pytest.raises(WriteConflict):
        await store.complete_parts(key, upload_id, [(1, part)], if_absent=True)
    assert await read_all(store, key) == b"earlier"
    await store.abort_multipart(key, upload_id)  # still open: it can be aborted


async def test_completion_if_absent_on_a_free_key(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP)
    part = await store.upload_part(key, upload_id, 1, b"first")
    etag = await store.complete_parts(key, upload_id, [(1, part)], if_absent=True)
    assert (await store.stat(key)).etag == etag


# --- delete(etag=...): removes only that version; WriteConflict if another one is there ------


async def test_delete_of_one_version(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    old = await store.put_bytes(key, b"old", GZIP)
    await store.put_bytes(key, b"new", GZIP)
    with pytest.raises(WriteConflict):
        await store.delete(key, etag=old)
    assert await read_all(store, key) == b"new"
    await store.delete(key, etag=(await store.stat(key)).etag)
    with pytest.raises(ObjectNotFound):
        await store.stat(key)
    await store.delete(key, etag=old)  # gone already: not an error


# --- stream_part: uploads a part from exactly ``length`` bytes of a body sent as they come; a
# body that raises stores no part ----------------------------------------------------------


async def pieces(data: bytes, fail: bool = False) -> AsyncIterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), 10_000):
        yield view[start : start + 10_000]
    if fail:
        raise ConnectionResetError("the client went away")


async def test_streamed_part_completes_like_an_uploaded_one(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    first, last = os.urandom(SMALL_PART), b"end"
    upload_id = await store.create_multipart(key, GZIP)
    one = await store.stream_part(key, upload_id, 1, pieces(first), len(first))
    two = await store.upload_part(key, upload_id, 2, last)
    await store.complete_parts(key, upload_id, [(1, one), (2, two)])
    assert await read_all(store, key) == first + last


async def test_a_stream_that_fails_stores_no_part(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    data = os.urandom(SMALL_PART)
    upload_id = await store.create_multipart(key, GZIP)
    with pytest.raises(ConnectionResetError):
        await store.stream_part(key, upload_id, 1, pieces(data[:-5000], fail=True), len(data))
    last = await store.upload_part(key, upload_id, 2, b"end")
    with pytest.raises(StorageFailed):  # part 1 is not there to complete
        await store.complete_parts(key, upload_id, [(1, '"0"'), (2, last)])
    await store.abort_multipart(key, upload_id)
