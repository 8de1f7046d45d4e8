"""The global buffer budget (``sources.max_buffer_bytes``) under concurrent chunked uploads.

Part buffers of all uploads together never exceed the budget; an upload that finds it spent waits
(it stops reading its socket, so TCP slows its client) and completes once others release theirs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway.server import keys
from gateway.server.domain.uploads import BufferBudget

from .helpers import SMALL_PART, StartGateway

UPLOADS = 6
BUDGET_PARTS = 2
CHUNK = 16 * 1024
# How long the test waits for the gateway to reach the state it checks before failing.
SETTLE_SECONDS = 30


async def gated(data: bytes, held_at: int, gate: asyncio.Event) -> AsyncIterator[bytes]:
    """Send ``data`` in chunks, pausing at ``held_at`` until ``gate`` is set."""
    for i in range(0, len(data), CHUNK):
        if i == held_at:
            await gate.wait()
        yield data[i : i + CHUNK]


async def test_concurrent_uploads_wait_for_the_budget(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    limit = BUDGET_PARTS * SMALL_PART
    gateway = await start_gateway({"sources": {"max_buffer_bytes": limit}})
    budget = gateway.app[keys.BUDGET]
    sources = [await gateway.create_source(http) for _ in range(UPLOADS)]
    bodies = [os.urandom(SMALL_PART * 4 + 123 + i) for i in range(UPLOADS)]
    gate = asyncio.Event()
    # Every body stops after a part and a half: an upload that got buffer room keeps it while
    # its client is paused, so the others must find the budget spent.
    held_at = (SMALL_PART * 3 // 2) // CHUNK * CHUNK

    async def upload(source: dict[str, Any], data: bytes) -> tuple[int, dict[str, Any]]:
        body = gated(data, held_at, gate)
        async with http.put(source["upload_url"], data=body) as resp:
            return resp.status, await resp.json()

    tasks = [asyncio.ensure_future(upload(s, d)) for s, d in zip(sources, bodies, strict=True)]
    try:
        for _ in range(SETTLE_SECONDS * 50):
            if budget.in_use == limit and budget.waiting > 0:
                break
            await asyncio.sleep(0.02)
        waiting_at_the_limit = budget.waiting
    finally:
        gate.set()
    results = await asyncio.gather(*tasks)

    assert waiting_at_the_limit > 0
    assert budget.peak <= limit
    assert budget.in_use == 0
    for (status, body), source, data in zip(results, sources, bodies, strict=True):
        assert status == 200, body
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        key = f"{gateway.config.storage.prefix}{source['id']}"
        obj = s3.get_object(Bucket=gateway.config.storage.bucket, Key=key)
        assert obj["Body"].read() == data


async def test_budget_smaller_than_a_part_is_refused() -> None:
    from gateway.config import ConfigError, config_from_dict

    try:
        config_from_dict(
            {
                "signing": {"secret_keys": ["x" * 32]},
                "server": {"public_url": "http://127.0.0.1:8080"},
                "storage": {"bucket": "sources"},
                "sources": {"part_size_bytes": 8 * 1024 * 1024, "max_buffer_bytes": 1024},
            },
            env={},
        )
    except ConfigError as exc:
        assert exc.path == "sources.max_buffer_bytes"
    else:
        raise AssertionError("a budget below one part was accepted")


async def test_waiting_reservations_are_served_in_order_and_cancellable() -> None:
    budget = BufferBudget(10)
    first = await budget.acquire(8)
    order: list[str] = []

    async def wait(name: str, size: int) -> int:
        taken = await budget.acquire(size)
        order.append(name)
        return taken

    big = asyncio.ensure_future(wait("big", 6))
    gone = asyncio.ensure_future(wait("gone", 1))
    small = asyncio.ensure_future(wait("small", 1))
    await asyncio.sleep(0)
    # Two bytes are free, but the queue is first come, first served: nobody overtakes "big".
    assert (budget.in_use, budget.waiting, order) == (8, 3, [])
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert budget.waiting == 2

    budget.release(first)
    assert await big == 6 and await small == 1
    assert order == ["big", "small"]
    assert (budget.in_use, budget.waiting, budget.peak) == (7, 0, 8)
    budget.release(6)
    budget.release(1)
    assert budget.in_use == 0


async def test_room_taken_without_waiting_never_overtakes_a_waiting_upload() -> None:
    """``try_acquire`` (memory an upload can do without: a resumable check falling a part
    behind) takes room only when it fits and nobody waits for it."""
    budget = BufferBudget(10)
    first = await budget.acquire(6)
    assert budget.try_acquire(5) == 0  # does not fit
    waiter = asyncio.ensure_future(budget.acquire(6))
    await asyncio.sleep(0)
    assert budget.try_acquire(3) == 0  # fits, but an upload waits
    budget.release(first)
    assert await waiter == 6
    assert budget.try_acquire(3) == 3
    assert budget.in_use == 9
    budget.release(3)
    budget.release(6)
    assert budget.in_use == 0


async def trickle(head: bytes, every: float, piece: bytes = b"x") -> AsyncIterator[bytes]:
    """``head``, then ``piece`` every ``every`` seconds for ever: a client that is slow, not
    silent (body_timeout, an idle timeout, never fires)."""
    yield head
    while True:
        await asyncio.sleep(every)
        yield piece


async def put_status(
    http: aiohttp.ClientSession, url: str, body: AsyncIterator[bytes]
) -> tuple[int, dict[str, str], dict[str, Any]]:
    try:
        async with http.put(url, data=body) as resp:
            return resp.status, dict(resp.headers), await resp.json()
    except aiohttp.ClientError as exc:  # the gateway answered and closed while we still sent
        return 0, {}, {"error": repr(exc)}


async def test_an_upload_waiting_for_the_budget_times_out_with_503(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """One slow upload holds the whole budget (min_upload_rate off); the next one is told so
    after body_timeout, rather than waiting as long as the slow one pleases."""
    gateway = await start_gateway(
        {
            "server": {"body_timeout": 1, "min_upload_rate": 0},
            "sources": {"max_buffer_bytes": SMALL_PART},
        }
    )
    budget = gateway.app[keys.BUDGET]
    holder_source, waiter_source = [await gateway.create_source(http) for _ in range(2)]
    holder = asyncio.ensure_future(
        put_status(http, holder_source["upload_url"], trickle(os.urandom(CHUNK), 0.2))
    )
    try:
        for _ in range(SETTLE_SECONDS * 50):
            if budget.in_use == SMALL_PART:
                break
            await asyncio.sleep(0.02)
        assert budget.in_use == SMALL_PART
        body = gated(os.urandom(SMALL_PART * 2), -1, asyncio.Event())
        status, headers, answer = await asyncio.wait_for(
            put_status(http, waiter_source["upload_url"], body), SETTLE_SECONDS
        )
    finally:
        holder.cancel()
    assert status == 503, answer
    assert headers["Retry-After"].isdigit()
    assert "sources.max_buffer_bytes" in answer["error"]
    assert budget.waiting == 0


async def test_clients_below_the_minimum_rate_give_back_their_buffers(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    """The attack: uploads sending a byte now and then hold every part buffer. Below
    min_upload_rate they are cut (408) and a normal upload goes through."""
    gateway = await start_gateway(
        {
            "server": {"body_timeout": 3, "min_upload_rate": 20_000},
            "sources": {"max_buffer_bytes": BUDGET_PARTS * SMALL_PART},
        }
    )
    budget = gateway.app[keys.BUDGET]
    slow_sources = [await gateway.create_source(http) for _ in range(BUDGET_PARTS)]
    slow = [
        asyncio.ensure_future(put_status(http, s["upload_url"], trickle(os.urandom(CHUNK), 0.1)))
        for s in slow_sources
    ]
    for _ in range(SETTLE_SECONDS * 50):
        if budget.in_use == BUDGET_PARTS * SMALL_PART:
            break
        await asyncio.sleep(0.02)
    source = await gateway.create_source(http)
    data = os.urandom(SMALL_PART * 3 + 5)
    normal = gated(data, -1, asyncio.Event())
    status, _, answer = await asyncio.wait_for(
        put_status(http, source["upload_url"], normal), SETTLE_SECONDS
    )
    assert status == 200, answer
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    cut = await asyncio.wait_for(asyncio.gather(*slow), SETTLE_SECONDS)
    for slow_status, _, slow_answer in cut:
        assert slow_status in (408, 0), slow_answer
        if slow_status:
            assert "server.min_upload_rate" in slow_answer["error"]
    assert budget.in_use == 0
    lines = [r for r in gateway.access_lines() if r["method"] == "PUT"]
    assert sorted(r["status"] for r in lines) == [200] + [408] * BUDGET_PARTS
