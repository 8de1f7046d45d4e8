"""Archive checks share their threads fairly and each has a CPU-time budget: one client's costly
archive neither holds a check thread for long nor makes another client's small upload wait."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from typing import Any

import aiohttp
import pytest

from gateway.config import ConfigError, config_from_dict
from gateway.server.domain.archive.check import ArchiveCheck
from gateway.server.domain.archive.pool import CheckClock, CheckPool

from .archives import app, bomb, tgz
from .helpers import StartGateway, config_dict, stored


def busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_the_least_used_upload_goes_first() -> None:
    """One thread, busy with a heavy upload's batch; three more heavy batches queued, then a new
    upload's: the new upload's runs next, not after the heavy ones (first come, first served)."""
    pool = CheckPool(1)
    order: list[str] = []
    started = threading.Event()

    def job(name: str, seconds: float) -> None:
        started.set()
        busy(seconds)
        order.append(name)

    try:
        heavy = [CheckClock() for _ in range(4)]
        for clock in heavy:
            clock.used = 10.0
        running = asyncio.ensure_future(pool.run(heavy[0], lambda: job("heavy-0", 0.3)))
        await asyncio.to_thread(started.wait, 10)
        queued = [
            asyncio.ensure_future(pool.run(clock, lambda n=n: job(f"heavy-{n}", 0.01)))
            for n, clock in enumerate(heavy[1:], 1)
        ]
        await asyncio.sleep(0)
        small = asyncio.ensure_future(pool.run(CheckClock(), lambda: job("small", 0.0)))
        await asyncio.gather(running, small, *queued)
    finally:
        pool.close()
    assert order == ["heavy-0", "small", "heavy-1", "heavy-2", "heavy-3"]


async def test_a_running_check_gives_way_to_a_new_upload_between_chunks() -> None:
    """One thread, inflating one batch of a costly archive (16 chunks, 1 GiB of zeros): a new
    upload's job runs after the chunk in progress, not after the whole batch."""
    body = bomb(1024 * 1024 * 1024)
    size = len(body) // 16 + 1
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    pool = CheckPool(1)
    try:
        check = ArchiveCheck("enforce", 2 * 1024**3, 10, batch=len(body), pool=pool)
        for chunk in chunks:
            await check.feed(chunk)  # the last one starts the batch
        running = check._running
        assert running is not None and not running.done()
        await asyncio.sleep(0.05)  # the batch's first chunk is being inflated
        await pool.run(CheckClock(), lambda: None)
        assert not running.done()  # the rest of the batch waited for the new upload
        facts = await check.finish()
    finally:
        pool.close()
    assert facts.inflated_size > 1024**3


async def test_a_job_error_reaches_its_upload_and_the_thread_goes_on() -> None:
    pool = CheckPool(1)

    def fail() -> None:
        raise ValueError("broken archive")

    try:
        with pytest.raises(ValueError, match="broken archive"):
            await pool.run(CheckClock(), fail)
        assert await pool.run(CheckClock(), lambda: 42) == 42
    finally:
        pool.close()


async def test_jobs_of_a_closed_check_are_dropped() -> None:
    pool = CheckPool(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        blocker = asyncio.ensure_future(pool.run(CheckClock(), lambda: release.wait(10)))
        gone = CheckClock()
        dropped = asyncio.ensure_future(pool.run(gone, lambda: ran.append("gone")))
        await asyncio.sleep(0.05)
        gone.closed = True  # the upload failed meanwhile
        release.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await dropped
    finally:
        pool.close()
    assert ran == []


async def test_a_check_over_its_cpu_budget_is_refused_with_a_reason(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    # 256 MiB of zeros to inflate: far more than a millisecond of CPU, whatever the machine.
    costly = bomb(256 * 1024 * 1024)
    gateway = await start_gateway(
        {"sources": {"archive_check": "enforce", "archive_check_cpu_seconds": 0.001}}
    )
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=io.BytesIO(costly)) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["code"] == "archive_invalid"
    assert "seconds of CPU time (sources.archive_check_cpu_seconds)" in body["error"]
    assert stored(s3, gateway, source) is None
    # A normal archive under the default budget is checked and stored.
    gateway = await start_gateway({"sources": {"archive_check": "enforce"}})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=io.BytesIO(tgz(app()))) as resp:
        assert resp.status == 200, await resp.text()


async def test_report_mode_records_the_budget_and_stores(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    costly = bomb(64 * 1024 * 1024)
    gateway = await start_gateway(
        {"sources": {"archive_check": "report", "archive_check_cpu_seconds": 0.001}}
    )
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=io.BytesIO(costly)) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert "archive_check_cpu_seconds" in body["archive"]["problem"]
    assert stored(s3, gateway, source) == costly


@pytest.mark.parametrize("key", ["archive_check_cpu_seconds", "archive_check_threads"])
def test_check_settings_must_be_positive(moto_endpoint: str, key: str) -> None:
    data = config_dict(moto_endpoint, "bucket", 8080)
    data["sources"][key] = 0
    with pytest.raises(ConfigError, match=f"sources.{key}"):
        config_from_dict(data, env={})
