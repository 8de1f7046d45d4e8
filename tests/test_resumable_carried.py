"""Running checks carried in memory from one append to the next (SPEC "Resumable uploads": "an
instance may instead carry its running checks in memory to the next append that reaches it at the
same offset"). An upload sent in several requests to one instance is checked as it streams and
never read back; one whose bytes came partly through another instance is read back once, and a
carried check is never applied to bytes it did not see."""

from __future__ import annotations

import hashlib
import itertools
import os
from typing import Any

import aiohttp

from gateway.server.domain.resumable_verify import (
    CARRIED_IDLE_SECONDS,
    MAX_CARRIED,
    Carried,
    Verifier,
)
from gateway.server.domain.upload_state import UploadState

from .archives import app, file, tgz
from .helpers import SMALL_PART, Gateway, StartGateway, stored
from .test_metrics import scrape, value
from .test_resumable_instances import TUS, new_upload, offset, on, patch

ENFORCE = {"sources": {"archive_check": "enforce"}}
READ_BACK = "gateway_resumable_read_back_bytes_total"


async def read_back(gateway: Gateway, http: aiohttp.ClientSession) -> float:
    return value(await scrape(gateway, http), READ_BACK)


def archive(parts: int) -> bytes:
    return tgz([*app(), file("app-1.2/big.bin", os.urandom(parts * SMALL_PART))])


async def downloaded(http: aiohttp.ClientSession, source: dict[str, Any]) -> aiohttp.ClientResponse:
    async with http.get(source["download_url"]) as resp:
        await resp.read()
        return resp


async def served(
    s3: Any, gateway: Gateway, http: aiohttp.ClientSession, source: dict[str, Any], data: bytes
) -> aiohttp.ClientResponse:
    """Assert that the source's object is ``data``, served with its sha256; the answer."""
    assert stored(s3, gateway, source) == data
    resp = await downloaded(http, source)
    assert resp.status == 200
    assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
    return resp


async def earlier_archive_and_upload(
    gateway: Gateway, http: aiohttp.ClientSession, data: bytes
) -> tuple[dict[str, Any], bytes, str]:
    """A source with an archive uploaded already, and a tus upload of ``data`` created on it:
    the source, the earlier archive, the upload's URL."""
    earlier = tgz(app())
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=earlier) as resp:
        assert resp.status == 200
    headers = {**TUS, "Upload-Length": str(len(data))}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        return source, earlier, resp.headers["Location"]


async def test_pieces_on_one_instance_are_checked_as_they_stream(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = archive(5)
    source, url = await new_upload(gateway, http, len(data))
    cuts = [0, len(data) // 3, 2 * len(data) // 3 + 17, len(data)]
    for start, end in itertools.pairwise(cuts):
        assert (await patch(http, url, start, data[start:end])).status == 204
    assert await read_back(gateway, http) == 0  # the check went on from request to request
    resp = await served(s3, gateway, http, source, data)
    assert resp.headers["X-Archive-Root"] == "app-1.2/"
    assert int(resp.headers["X-Archive-Entries"]) == len(app()) + 1


async def test_pieces_through_another_instance_are_read_back_once(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    a, b = await start_gateway(ENFORCE), await start_gateway(ENFORCE)
    data = archive(5)
    source, url = await new_upload(a, http, len(data))
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    assert (await patch(http, on(b, url), half, data[half:])).status == 204
    assert await read_back(a, http) == 0
    assert await read_back(b, http) == len(data)  # B never saw the first half stream
    resp = await served(s3, a, http, source, data)
    assert resp.headers["X-Archive-Root"] == "app-1.2/"


async def test_a_check_left_behind_by_bytes_sent_elsewhere_is_not_used(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    # A carries a check at the first cut; B then commits more bytes; the last request comes
    # back to A at the new offset: A's check has not seen B's bytes, so A reads everything back.
    a, b = await start_gateway(ENFORCE), await start_gateway(ENFORCE)
    data = archive(6)
    source, url = await new_upload(a, http, len(data))
    first, second = len(data) // 3, 2 * len(data) // 3
    assert (await patch(http, url, 0, data[:first])).status == 204
    assert (await patch(http, on(b, url), first, data[first:second])).status == 204
    assert await offset(http, url) == second
    assert (await patch(http, url, second, data[second:])).status == 204
    assert await read_back(a, http) == len(data)
    await served(s3, a, http, source, data)


async def test_a_refused_checksum_leaves_no_carried_check(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    # The refused chunk was seen by the running check but discarded: the check cannot go on,
    # so the upload is read back at completion, and its sha256 is that of the kept bytes.
    gateway = await start_gateway(ENFORCE)
    data = archive(4)
    source, url = await new_upload(gateway, http, len(data))
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    wrong = {**TUS, "Upload-Checksum": "sha1 " + "A" * 27 + "="}
    async with http.patch(
        url,
        data=os.urandom(len(data) - half),
        headers={
            **wrong,
            "Upload-Offset": str(half),
            "Content-Type": "application/offset+octet-stream",
        },
    ) as resp:
        assert resp.status == 460
    assert await offset(http, url) == half
    assert (await patch(http, url, half, data[half:])).status == 204
    assert await read_back(gateway, http) == len(data)
    resp = await served(s3, gateway, http, source, data)


async def test_a_refusal_found_by_a_carried_check_fails_the_upload(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = tgz([file("../escape", b"x" * 100), file("pad", os.urandom(SMALL_PART * 40))])
    source, earlier, url = await earlier_archive_and_upload(gateway, http, data)
    cuts = [*range(0, len(data), len(data) // 8), len(data)]
    statuses = []
    for start, end in itertools.pairwise(cuts):
        statuses.append((await patch(http, url, start, data[start:end])).status)
        if statuses[-1] != 204:
            break
    assert statuses[-1] == 422
    assert await read_back(gateway, http) == 0  # found by the check carried along
    async with http.head(url, headers=TUS) as resp:
        assert resp.status == 422  # the upload stays refused
    assert stored(s3, gateway, source) == earlier  # the earlier complete upload intact


def test_carried_checks_are_bounded_in_number_and_time() -> None:
    now = [1000.0]
    carried = Carried(lambda: now[0])

    def upload(n: int) -> UploadState:
        return UploadState(f"s{n}", f"u{n}", 10**10, SMALL_PART, "application/gzip", offset=0)

    kept = [Verifier(None) for _ in range(MAX_CARRIED + 1)]
    for n, verifier in enumerate(kept):
        carried.keep(upload(n), verifier, 0)
    assert len(carried) == MAX_CARRIED
    assert carried.take(upload(0)) is None  # the oldest made room
    assert carried.take(upload(1)) is kept[1]
    now[0] += CARRIED_IDLE_SECONDS + 1
    carried.keep(upload(99), Verifier(None), 0)
    assert len(carried) == 1  # the unused ones expired
    assert carried.take(upload(2)) is None


async def test_an_upload_whose_key_was_removed_cannot_complete(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    # The operator rotates the signing keys: B signs with a new key and still accepts the old
    # one; C, where the old key was removed, refuses the upload's resume token, so the upload
    # begun under the old key cannot complete there, and nothing becomes visible.
    old, new = "o" * 32, "n" * 32
    a = await start_gateway({"signing": {"secret_keys": [old]}})
    b = await start_gateway({"signing": {"secret_keys": [new, old]}})
    c = await start_gateway({"signing": {"secret_keys": [new]}})
    data = archive(3)
    source, url = await new_upload(a, http, len(data))
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    assert await offset(http, on(b, url)) == half  # the old key is still accepted on B
    headers = {**TUS, "Upload-Offset": str(half), "Content-Type": "application/offset+octet-stream"}
    async with http.patch(on(c, url), data=data[half:], headers=headers) as resp:
        assert resp.status == 403
        assert (await resp.json())["code"] == "token_invalid"
    assert stored(s3, a, source) is None
    async with http.get(source["download_url"]) as got:
        assert got.status == 404
    assert (await patch(http, on(b, url), half, data[half:])).status == 204
    assert stored(s3, a, source) == data
