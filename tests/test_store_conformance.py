"""Every store keeps the same contract: these tests run on each implementation.

``any_store`` (conftest.py) gives them in turn: ``MemoryStore`` (the unit tests' store, both
interfaces) and, on the moto server, ``S3Store`` (``ObjectStore``) with ``S3JsonObjects``
(``JsonObjects``). Each section below is one method; its first line is the contract in one
sentence, and the tests check that sentence, failures included: a failure is always one of the
typed store errors (``ObjectNotFound``, ``ObjectChanged``, ``StorageUnavailable``,
``StorageFailed``, ``WriteConflict``), never a library's exception.

A new store method: implement it in ``MemoryStore`` and the S3 class, and add a section here; it
then runs on both.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import (
    GatewayError,
    ObjectChanged,
    ObjectNotFound,
    StorageFailed,
    StorageUnavailable,
    WriteConflict,
)
from gateway.server.domain.storage import ObjectStore

from .helpers import SMALL_PART, StoreUnderTest, chunks_of

GZIP = "application/gzip"


def new_key() -> str:
    return f"conformance/{uuid.uuid4().hex}"


async def read_all(
    store: ObjectStore, key: str, start: int, end: int, etag: str | None = None
) -> bytes:
    async with store.read(key, start, end, etag) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def multipart(store: ObjectStore, key: str, parts: list[bytes]) -> str:
    upload_id = await store.create_multipart(key, GZIP)
    etags = [
        await store.upload_part(key, upload_id, number, part)
        for number, part in enumerate(parts, start=1)
    ]
    return await store.complete_multipart(key, upload_id, etags)


# --- put_bytes: stores the bytes as one object, replacing any at the key, and returns its ETag ---


async def test_put_bytes_stores_the_object(any_store: StoreUnderTest) -> None:
    store, key, data = any_store.store, new_key(), os.urandom(1000)
    etag = await store.put_bytes(key, data, GZIP)
    info = await store.stat(key)
    assert (info.size, info.etag, info.content_type) == (len(data), etag, GZIP)
    assert await read_all(store, key, 0, len(data) - 1) == data


async def test_put_bytes_replaces_the_object(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    first = await store.put_bytes(key, b"first version", GZIP)
    second = await store.put_bytes(key, b"the second version", "application/x-tar")
    info = await store.stat(key)
    assert second != first
    assert (info.size, info.etag, info.content_type) == (18, second, "application/x-tar")


# --- put_stream: stores exactly ``length`` bytes from the body as one object and returns its
# ETag; if the body raises, that exception propagates and nothing is stored -------------------


async def test_put_stream_stores_the_body(any_store: StoreUnderTest) -> None:
    store, key, data = any_store.store, new_key(), os.urandom(300_000)
    etag = await store.put_stream(key, chunks_of(data, 7000), len(data), GZIP)
    info = await store.stat(key)
    assert (info.size, info.etag, info.content_type) == (len(data), etag, GZIP)
    assert await read_all(store, key, 0, len(data) - 1) == data


class BodyBroke(Exception):
    pass


async def breaking_body(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise BodyBroke


async def test_put_stream_that_fails_stores_nothing(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    with pytest.raises(BodyBroke):
        await store.put_stream(key, breaking_body(b"x" * 1000), 2000, GZIP)
    with pytest.raises(ObjectNotFound):
        await store.stat(key)


async def test_put_stream_that_fails_keeps_the_earlier_object(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    etag = await store.put_bytes(key, b"earlier", GZIP)
    with pytest.raises(BodyBroke):
        await store.put_stream(key, breaking_body(b"x" * 1000), 2000, GZIP)
    assert (await store.stat(key)).etag == etag
    assert await read_all(store, key, 0, 6) == b"earlier"


# --- create_multipart / upload_part / complete_multipart: the parts, in order, become one object,
# visible only once completed; the ETags given must be those the parts were answered with -----


async def test_multipart_object_is_the_parts_in_order(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    parts = [os.urandom(SMALL_PART), os.urandom(SMALL_PART), os.urandom(100)]
    etag = await multipart(store, key, parts)
    info = await store.stat(key)
    assert (info.size, info.etag, info.content_type) == (2 * SMALL_PART + 100, etag, GZIP)
    assert await read_all(store, key, 0, info.size - 1) == b"".join(parts)


async def test_multipart_object_is_invisible_until_complete(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP)
    etag = await store.upload_part(key, upload_id, 1, b"only part")
    with pytest.raises(ObjectNotFound):
        await store.stat(key)
    await store.complete_multipart(key, upload_id, [etag])
    assert (await store.stat(key)).size == 9


async def test_multipart_with_a_wrong_etag_is_refused(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP)
    await store.upload_part(key, upload_id, 1, b"only part")
    with pytest.raises(StorageFailed):
        await store.complete_multipart(key, upload_id, ['"0123456789abcdef0123456789abcdef"'])
    with pytest.raises(ObjectNotFound):
        await store.stat(key)


async def test_part_of_an_unknown_upload_is_refused(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    await store.create_multipart(key, GZIP)
    # A store error, of a kind left open: S3 answers 404 NoSuchUpload, moto a 500.
    with pytest.raises(GatewayError):
        await store.upload_part(key, "no-such-upload", 1, b"part")


# --- abort_multipart: discards the upload and its parts; it can no longer be completed -----------


async def test_aborted_upload_cannot_be_completed(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    upload_id = await store.create_multipart(key, GZIP)
    etag = await store.upload_part(key, upload_id, 1, b"only part")
    await store.abort_multipart(key, upload_id)
    with pytest.raises(GatewayError):  # S3: 404 NoSuchUpload; moto: 500
        await store.complete_multipart(key, upload_id, [etag])
    with pytest.raises(ObjectNotFound):
        await store.stat(key)


async def test_abort_keeps_the_earlier_object(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    etag = await store.put_bytes(key, b"earlier", GZIP)
    upload_id = await store.create_multipart(key, GZIP)
    await store.upload_part(key, upload_id, 1, b"replacement")
    await store.abort_multipart(key, upload_id)
    assert (await store.stat(key)).etag == etag


# --- set_sha256: records the SHA-256 of the version with that ETag; stat reports it only while
# that version is the current one ---------------------------------------------------------------


async def test_sha256_is_reported_for_its_version(any_store: StoreUnderTest) -> None:
    store, key, data = any_store.store, new_key(), b"archive bytes"
    etag = await store.put_bytes(key, data, GZIP)
    assert (await store.stat(key)).sha256 is None
    digest = hashlib.sha256(data).hexdigest()
    await store.set_sha256(key, digest, etag)
    assert (await store.stat(key)).sha256 == digest


async def test_sha256_of_another_version_is_not_reported(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    old = await store.put_bytes(key, b"old", GZIP)
    await store.put_bytes(key, b"new", GZIP)
    await store.set_sha256(key, hashlib.sha256(b"old").hexdigest(), old)  # a late writer
    assert (await store.stat(key)).sha256 is None


async def test_sha256_is_dropped_when_the_object_is_replaced(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    etag = await store.put_bytes(key, b"old", GZIP)
    await store.set_sha256(key, hashlib.sha256(b"old").hexdigest(), etag)
    await store.put_bytes(key, b"new", GZIP)
    assert (await store.stat(key)).sha256 is None


async def test_tags_set_with_the_sha256_are_reported_for_its_version(
    any_store: StoreUnderTest,
) -> None:
    store, key = any_store.store, new_key()
    tags = {"archive-entries": "3", "archive-root": "YXBwLw=="}
    etag = await store.put_bytes(key, b"old", GZIP)
    await store.set_sha256(key, hashlib.sha256(b"old").hexdigest(), etag, tags)
    assert dict((await store.stat(key)).tags) == tags
    await store.put_bytes(key, b"new", GZIP)
    assert dict((await store.stat(key)).tags) == {}


async def test_sha256_of_a_missing_object(any_store: StoreUnderTest) -> None:
    with pytest.raises(ObjectNotFound):
        await any_store.store.set_sha256(new_key(), "0" * 64, '"etag"')


# --- stat: describes the current object; a missing key is ObjectNotFound ------------------------


async def test_stat_describes_the_object(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    before = datetime.now(UTC) - timedelta(minutes=5)
    etag = await store.put_bytes(key, b"12345", "application/x-tar")
    info = await store.stat(key)
    assert (info.size, info.etag, info.content_type, info.sha256) == (
        5,
        etag,
        "application/x-tar",
        None,
    )
    assert etag.startswith('"') and etag.endswith('"')
    assert before < info.last_modified < datetime.now(UTC) + timedelta(minutes=5)


async def test_stat_of_a_missing_object(any_store: StoreUnderTest) -> None:
    with pytest.raises(ObjectNotFound):
        await any_store.store.stat(new_key())


# --- read: bytes ``start`` to ``end`` inclusive; with ``etag``, only of that version (else
# ObjectChanged); a missing key is ObjectNotFound ------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"), [(0, 299_999), (0, 0), (299_999, 299_999), (1000, 270_000)]
)
async def test_read_gives_the_range(any_store: StoreUnderTest, start: int, end: int) -> None:
    store, key, data = any_store.store, new_key(), os.urandom(300_000)
    await store.put_bytes(key, data, GZIP)
    assert await read_all(store, key, start, end) == data[start : end + 1]


async def test_read_pinned_to_the_current_version(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    etag = await store.put_bytes(key, b"pinned bytes", GZIP)
    assert await read_all(store, key, 0, 5, etag) == b"pinned"


async def test_read_pinned_to_a_replaced_version(any_store: StoreUnderTest) -> None:
    store, key = any_store.store, new_key()
    old = await store.put_bytes(key, b"old version", GZIP)
    await store.put_bytes(key, b"new version", GZIP)
    with pytest.raises(ObjectChanged):
        await read_all(store, key, 0, 5, old)


async def test_read_of_a_missing_object(any_store: StoreUnderTest) -> None:
    with pytest.raises(ObjectNotFound):
        await read_all(any_store.store, new_key(), 0, 10)


# --- presign_get: a URL that GETs the object without credentials, answered with
# ``content_disposition`` as its Content-Disposition when given ----------------------------------


async def test_presigned_url_gets_the_object(any_store: StoreUnderTest) -> None:
    store, key, data = any_store.store, new_key(), os.urandom(5000)
    await store.put_bytes(key, data, GZIP)
    assert await any_store.fetch(await store.presign_get(key, 60)) == (data, None)
    disposition = 'attachment; filename="app.tar.gz"'
    url = await store.presign_get(key, 60, content_disposition=disposition)
    assert await any_store.fetch(url) == (data, disposition)


async def test_presigned_url_of_a_missing_object(any_store: StoreUnderTest) -> None:
    assert await any_store.fetch(await any_store.store.presign_get(new_key(), 60)) is None


# --- check: returns when the store answers; StorageUnavailable when it cannot be reached --------


async def test_check_when_the_store_answers(any_store: StoreUnderTest) -> None:
    await any_store.store.check()


async def test_unreachable_store_is_unavailable_for_every_call(
    any_store: StoreUnderTest,
) -> None:
    key = new_key()
    async with any_store.unreachable() as store:
        calls = {
            "check": store.check(),
            "stat": store.stat(key),
            "put_bytes": store.put_bytes(key, b"data", GZIP),
            "put_stream": store.put_stream(key, chunks_of(b"data"), 4, GZIP),
            "create_multipart": store.create_multipart(key, GZIP),
            "upload_part": store.upload_part(key, "upload", 1, b"part"),
            "complete_multipart": store.complete_multipart(key, "upload", ['"etag"']),
            "abort_multipart": store.abort_multipart(key, "upload"),
            "set_sha256": store.set_sha256(key, "0" * 64, '"etag"'),
            "read": read_all(store, key, 0, 10),
        }
        failures: dict[str, type[GatewayError]] = {}
        for name, call in calls.items():
            with pytest.raises(GatewayError) as raised:
                await call
            failures[name] = type(raised.value)
    assert failures == dict.fromkeys(calls, StorageUnavailable)


# --- put_json / get_json: a JSON value and its ETag; ``if_absent`` creates only, ``if_match``
# replaces only that version, else WriteConflict; a missing or non-JSON key is ObjectNotFound


async def test_json_round_trip(any_store: StoreUnderTest) -> None:
    objects, key = any_store.objects, new_key()
    etag = await objects.put_json(key, {"n": 1, "s": "é"}, if_absent=True)
    assert await objects.get_json(key) == ({"n": 1, "s": "é"}, etag)
    replaced = await objects.put_json(key, [1, 2], if_match=etag)
    assert await objects.get_json(key) == ([1, 2], replaced)


async def test_json_conditions_that_fail(any_store: StoreUnderTest) -> None:
    objects, key = any_store.objects, new_key()
    etag = await objects.put_json(key, {"n": 1})
    await objects.put_json(key, {"n": 2}, if_match=etag)
    with pytest.raises(WriteConflict):
        await objects.put_json(key, {"n": 3}, if_match=etag)  # another wrote since
    with pytest.raises(WriteConflict):
        await objects.put_json(key, {"n": 4}, if_absent=True)
    assert (await objects.get_json(key))[0] == {"n": 2}


async def test_json_missing_or_not_json(any_store: StoreUnderTest) -> None:
    key = new_key()
    with pytest.raises(ObjectNotFound):
        await any_store.objects.get_json(key)
    await any_store.store.put_bytes(key, b"\x1f\x8b not json", GZIP)
    with pytest.raises(ObjectNotFound):
        await any_store.objects.get_json(key)


# --- list_keys: keys under the prefix after ``start_after``, in order, at most ``max_keys``,
# and whether more follow -----------------------------------------------------------------------


async def test_list_keys_in_pages(any_store: StoreUnderTest) -> None:
    objects, prefix = any_store.objects, f"{new_key()}/"
    keys = [f"{prefix}{name}" for name in ("b", "a", "c/1", "c/2", "d")]
    for key in keys:
        await objects.put_json(key, {})
    await objects.put_json(f"{prefix[:-1]}-beside", {})  # shares the prefix but for the slash
    first = await objects.list_keys(prefix, max_keys=3)
    assert (first.keys, first.truncated) == (sorted(keys)[:3], True)
    rest = await objects.list_keys(prefix, start_after=first.keys[-1], max_keys=3)
    assert (rest.keys, rest.truncated) == (sorted(keys)[3:], False)
    empty = await objects.list_keys(f"{prefix}none/")
    assert (empty.keys, empty.truncated) == ([], False)
