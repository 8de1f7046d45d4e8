"""The store calls resumable uploads add, on every store (``any_store``: ``MemoryStore`` and
``S3Store`` on moto), as ``test_store_conformance.py`` does for the others: each section is one
method, its first line the contract in one sentence."""

from __future__ import annotations

import os
import uuid

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
