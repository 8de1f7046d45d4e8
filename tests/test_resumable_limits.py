"""The limits resumable uploads live under: ``sources.resumable.max_open_per_source`` holds when
creations race on two instances (slot objects taken by compare-and-swap, not a count then a
create); resumable appends count in ``auth.limits.concurrent_uploads`` with plain uploads, and
their part buffers against ``sources.max_buffer_bytes``; the resume token is judged again when the
upload completes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.server import keys

from .helpers import SETTLE_SECONDS, SMALL_PART, Gateway, StartGateway, stored, until

DRAFT = {"Upload-Draft-Interop-Version": "9"}
CHUNK = 16 * 1024


async def gated(data: bytes, held_at: int, gate: asyncio.Event) -> AsyncIterator[bytes]:
    """Send ``data`` in chunks, pausing at ``held_at`` until ``gate`` is set."""
    for i in range(0, len(data), CHUNK):
        if i == held_at:
            await gate.wait()
        yield data[i : i + CHUNK]


async def trickle(head: bytes, every: float) -> AsyncIterator[bytes]:
    """``head``, then a byte every ``every`` seconds for ever: slow, never silent."""
    yield head
    while True:
        await asyncio.sleep(every)
        yield b"x"


async def put_status(
    http: aiohttp.ClientSession, url: str, body: AsyncIterator[bytes]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    try:
        async with http.put(url, data=body) as resp:
            return resp.status, dict(resp.headers), await resp.json()
    except aiohttp.ClientError as exc:  # the gateway answered and closed while we still sent
        return 0, {}, {"error": repr(exc)}


APPEND = {**DRAFT, "Content-Type": "application/partial-upload"}


async def create(http: aiohttp.ClientSession, upload_url: str) -> tuple[int, str]:
    """Create a draft upload (no body): its status and ``Location``."""
    headers = {**DRAFT, "Upload-Complete": "?0"}
    async with http.post(upload_url, headers=headers) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Location", "")


async def patch_status(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    offset: int = 0,
    complete: bool = True,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {
        **APPEND,
        "Upload-Offset": str(offset),
        "Upload-Complete": "?1" if complete else "?0",
    }
    try:
        async with http.patch(url, data=body, headers=headers) as resp:
            answer = await resp.json() if resp.content_type == "application/json" else {}
            return resp.status, dict(resp.headers), answer
    except aiohttp.ClientError as exc:  # answered and closed while we still sent
        return 0, {}, {"error": repr(exc)}


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_racing_creations_on_two_instances_never_pass_the_cap(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    settings = {"sources": {"resumable": {"max_open_per_source": 2}}}
    a, b = await start_gateway(settings), await start_gateway(settings)
    source = await a.create_source(http)
    on_b = source["upload_url"].replace(a.url, b.url)
    tries = [create(http, url) for url in [source["upload_url"], on_b] * 4]
    statuses = sorted(status for status, _ in await asyncio.gather(*tries))
    # Counting the open uploads, then creating, let all eight through.
    assert statuses == [201, 201, 409, 409, 409, 409, 409, 409]
    assert (await create(http, on_b))[0] == 409


async def test_a_finished_upload_frees_its_slot(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway({"sources": {"resumable": {"max_open_per_source": 1}}})
    source = await gateway.create_source(http)
    status, first = await create(http, source["upload_url"])
    assert status == 201
    assert (await create(http, source["upload_url"]))[0] == 409
    assert (await patch_status(http, first, b"done"))[0] == 200
    assert (await create(http, source["upload_url"]))[0] == 201  # its slot, taken over
    assert (await create(http, source["upload_url"]))[0] == 409
    assert stored(s3, gateway, source) == b"done"


async def test_expired_upload_frees_its_slot(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    ttl = 60
    gateway = await start_gateway(
        {
            "sources": {
                "ttl_seconds": 600,
                "resumable": {"max_open_per_source": 1, "ttl_seconds": ttl},
            }
        }
    )
    source = await gateway.create_source(http)
    assert (await create(http, source["upload_url"]))[0] == 201
    assert (await create(http, source["upload_url"]))[0] == 409
    gateway.clock.advance(ttl + 1)
    assert (await create(http, source["upload_url"]))[0] == 201


async def held_patch(
    gateway: Gateway, http: aiohttp.ClientSession
) -> tuple[asyncio.Future[Any], str]:
    """A resumable append that trickles for ever (slow, never silent), and its upload's URL."""
    source = await gateway.create_source(http)
    status, url = await create(http, source["upload_url"])
    assert status == 201
    holder = asyncio.ensure_future(
        patch_status(http, url, trickle(os.urandom(16 * 1024), 0.2), complete=False)
    )
    return holder, url


async def test_resumable_appends_count_in_concurrent_uploads(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        {"auth": {"limits": {"concurrent_uploads": 1}}, "server": {"min_upload_rate": 0}}
    )
    holder, _ = await held_patch(gateway, http)
    try:
        await until(lambda: gateway.app[keys.BUDGET].in_use > 0)
        # A plain upload of another source the same token created: the slot is taken.
        other = await gateway.create_source(http)
        status, headers, answer = await put_status(
            http, other["upload_url"], gated(b"x", -1, asyncio.Event())
        )
        assert status == 429, answer
        assert headers["Retry-After"].isdigit()
        # And another resumable append.
        status, url = await create(http, other["upload_url"])
        assert status == 201  # creating sends no bytes: not counted
        status, headers, answer = await patch_status(http, url, b"abc")
        assert status == 429, answer
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    await until(lambda: not gateway.app[keys.BUDGET].in_use)
    assert (await patch_status(http, url, b"abc"))[0] == 200


async def test_a_plain_upload_holds_the_slot_against_appends(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        {"auth": {"limits": {"concurrent_uploads": 1}}, "server": {"min_upload_rate": 0}}
    )
    holder_source, other = [await gateway.create_source(http) for _ in range(2)]
    holder = asyncio.ensure_future(
        put_status(http, holder_source["upload_url"], trickle(os.urandom(16 * 1024), 0.2))
    )
    try:
        await until(lambda: gateway.app[keys.BUDGET].in_use > 0)
        status, url = await create(http, other["upload_url"])
        assert status == 201
        status, _, answer = await patch_status(http, url, b"abc")
        assert status == 429, answer
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


async def test_part_buffers_count_against_max_buffer_bytes(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """A resumable append holds a part buffer of the budget plain uploads share: with room for
    one, a chunked plain upload waits behind it (503 after body_timeout), and so does another
    append behind a chunked plain upload."""
    gateway = await start_gateway(
        {
            "server": {"body_timeout": 1, "min_upload_rate": 0},
            "sources": {"max_buffer_bytes": SMALL_PART},
        }
    )
    budget = gateway.app[keys.BUDGET]
    holder, _ = await held_patch(gateway, http)
    try:
        await until(lambda: budget.in_use == SMALL_PART)
        waiter = await gateway.create_source(http)
        body = gated(os.urandom(SMALL_PART * 2), -1, asyncio.Event())
        status, _, answer = await asyncio.wait_for(
            put_status(http, waiter["upload_url"], body), SETTLE_SECONDS
        )
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    assert status == 503, answer
    assert "sources.max_buffer_bytes" in answer["error"]
    await until(lambda: budget.in_use == 0)

    plain = await gateway.create_source(http)
    holder = asyncio.ensure_future(
        put_status(http, plain["upload_url"], trickle(os.urandom(16 * 1024), 0.2))
    )
    try:
        await until(lambda: budget.in_use == SMALL_PART)
        status, url = await create(http, (await gateway.create_source(http))["upload_url"])
        assert status == 201
        status, _, answer = await asyncio.wait_for(
            patch_status(http, url, os.urandom(SMALL_PART)), SETTLE_SECONDS
        )
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    assert status == 503, answer
    assert "sources.max_buffer_bytes" in answer["error"]
    assert budget.waiting == 0


async def test_completion_judges_the_resume_token_again(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    """The token was good when the last append began; its life ended while the bytes came:
    the upload does not complete, and nothing becomes visible."""
    ttl = 60
    gateway = await start_gateway(
        {"server": {"min_upload_rate": 0}, "sources": {"resumable": {"ttl_seconds": ttl}}}
    )
    source = await gateway.create_source(http)
    status, url = await create(http, source["upload_url"])
    assert status == 201
    gate = asyncio.Event()
    data = os.urandom(3 * SMALL_PART)
    append = asyncio.ensure_future(patch_status(http, url, gated(data, SMALL_PART * 2, gate)))
    budget = gateway.app[keys.BUDGET]
    await until(lambda: budget.in_use > 0)
    await asyncio.sleep(0.3)  # the first bytes are in
    gateway.clock.advance(ttl + 1)
    gate.set()
    status, _, answer = await asyncio.wait_for(append, SETTLE_SECONDS)
    assert status == 404, answer
    assert stored(s3, gateway, source) is None
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 404
