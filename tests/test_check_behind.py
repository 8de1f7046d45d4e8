"""A resumable upload's archive check may fall a part behind its bytes: an append that fills a
part is answered without waiting for the check to catch up, and the check goes on meanwhile. The
bytes it still holds count against ``sources.max_buffer_bytes`` until checked; without room
there, the check stays a batch behind, as a plain upload's does.

The check threads are held by a gate (a wrapper around the batch job, in the test process) so
that the check is slower than any upload, whatever the machine."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.server import keys
from gateway.server.domain.archive.check import ArchiveCheck
from gateway.server.domain.archive.pool import CheckClock, CheckPool

from .archives import Entry, file, tgz, zeros_and_noise
from .helpers import SETTLE_SECONDS, StartGateway, stored, until

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 completes
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Every batch of every archive check waits in its thread until this is set."""
    opened = threading.Event()
    feed_some = ArchiveCheck._feed_some

    def gated(check: ArchiveCheck, batch: list[bytes]) -> list[bytes]:
        opened.wait(SETTLE_SECONDS)
        return feed_some(check, batch)

    monkeypatch.setattr(ArchiveCheck, "_feed_some", gated)
    yield opened
    opened.set()


async def tus_upload(http: aiohttp.ClientSession, upload_url: str, length: int) -> str:
    headers = {**TUS, "Upload-Length": str(length)}
    async with http.post(upload_url, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        return resp.headers["Location"]


async def patch(
    http: aiohttp.ClientSession, url: str, offset: int, body: bytes
) -> tuple[int, dict[str, str]]:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    async with http.patch(url, data=io.BytesIO(body), headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


def checked_gateway(max_buffer_bytes: int) -> dict[str, Any]:
    return {
        "sources": {
            "archive_check": "enforce",
            "part_size_bytes": PART,
            "max_size_bytes": 64 * MiB,
            "max_buffer_bytes": max_buffer_bytes,
        }
    }


async def test_an_append_is_answered_while_the_check_is_a_part_behind(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, gate: threading.Event
) -> None:
    """The first PATCH (one part) is answered while its check has not inflated a byte; its
    bytes count in the budget until the check has them, then the upload completes whole."""
    gateway = await start_gateway(checked_gateway(64 * MiB))
    budget = gateway.app[keys.BUDGET]
    data = zeros_and_noise(1, 11)
    source = await gateway.create_source(http)
    url = await tus_upload(http, source["upload_url"], len(data))

    status, headers = await asyncio.wait_for(patch(http, url, 0, data[:PART]), SETTLE_SECONDS)
    assert status == 204
    assert headers["Upload-Offset"] == str(PART)
    assert not gate.is_set()
    assert budget.in_use == PART  # the bytes the check still holds
    gate.set()
    await until(lambda: budget.in_use == 0)

    status, headers = await patch(http, url, PART, data[PART:])
    assert status == 204
    assert headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(s3, gateway, source) == data


async def test_without_room_in_the_budget_the_check_stays_a_batch_behind(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, gate: threading.Event
) -> None:
    """With room for one part only, the append waits for its check as a plain upload does: no
    answer while the check is held, the right one once it goes on."""
    gateway = await start_gateway(checked_gateway(PART))
    budget = gateway.app[keys.BUDGET]
    data = zeros_and_noise(1, 11)
    source = await gateway.create_source(http)
    url = await tus_upload(http, source["upload_url"], len(data))

    first = asyncio.ensure_future(patch(http, url, 0, data[:PART]))
    await until(lambda: budget.in_use == PART)
    await asyncio.sleep(1)
    assert not first.done()  # the body waits for the check, a batch behind
    assert budget.in_use == PART  # the part only: no room was taken for the check
    gate.set()
    status, headers = await asyncio.wait_for(first, SETTLE_SECONDS)
    assert status == 204
    assert headers["Upload-Offset"] == str(PART)
    await until(lambda: budget.in_use == 0)

    status, headers = await patch(http, url, PART, data[PART:])
    assert status == 204
    assert stored(s3, gateway, source) == data


def batches(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def behind_a_busy_thread(
    pool: CheckPool, release: threading.Event, batch: int
) -> tuple[asyncio.Future[Any], ArchiveCheck]:
    """The pool's one thread busy until ``release``; a check of ``batch``-byte batches allowed
    to fall four batches behind."""
    blocker = asyncio.ensure_future(pool.run(CheckClock(), lambda: release.wait(SETTLE_SECONDS)))
    check = ArchiveCheck("enforce", 2 * 1024**3, 10, batch=batch, pool=pool)
    check.fall_behind(4 * batch)
    return blocker, check


async def test_a_check_falls_behind_by_what_it_is_allowed_and_no_more() -> None:
    """Allowed four batches, a check takes four while its thread is busy and waits at the
    fifth; ``when_checked`` calls back once what was handed over is checked; the facts are
    those of a check that never fell behind."""
    batch = 64 * 1024
    data = tgz([file("app/a.bin", os.urandom(8 * batch)), Entry("app/b.txt", data=b"b\n")])
    pool = CheckPool(1)
    release = threading.Event()
    checked: list[bool] = []
    try:
        blocker, check = behind_a_busy_thread(pool, release, batch)
        chunks = batches(data, batch)
        assert len(chunks) > 5
        for chunk in chunks[:4]:
            await asyncio.wait_for(check.feed(chunk), SETTLE_SECONDS)
        check.when_checked(lambda: checked.append(True))
        fifth = asyncio.ensure_future(check.feed(chunks[4]))
        await asyncio.sleep(0.3)
        assert not fifth.done()
        assert checked == []
        release.set()
        await blocker
        await asyncio.wait_for(fifth, SETTLE_SECONDS)
        for chunk in chunks[5:]:
            await check.feed(chunk)
        facts = await check.finish()
        assert checked == [True]
        reference = ArchiveCheck("enforce", 2 * 1024**3, 10, batch=batch, pool=pool)
        for chunk in chunks:
            await reference.feed(chunk)
        assert facts == await reference.finish()
    finally:
        pool.close()
    assert facts.files == 2
    assert facts.problem is None


async def test_a_closed_check_lets_its_bytes_go() -> None:
    """An upload that fails with batches waiting for the thread: they are dropped, and what
    waits for them to be checked is called back at once."""
    batch = 64 * 1024
    data = tgz([file("app/a.bin", os.urandom(8 * batch))])
    pool = CheckPool(1)
    release = threading.Event()
    checked: list[bool] = []
    try:
        blocker, check = behind_a_busy_thread(pool, release, batch)
        for chunk in batches(data, batch)[:3]:
            await asyncio.wait_for(check.feed(chunk), SETTLE_SECONDS)
        check.when_checked(lambda: checked.append(True))
        assert checked == []
        check.close()
        assert checked == [True]
        release.set()
        await blocker
    finally:
        pool.close()
