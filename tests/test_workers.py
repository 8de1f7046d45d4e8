"""``gateway serve`` with ``server.workers: 2``: two processes on one port, supervised, their
metrics summed, SIGTERM draining both."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psutil
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError, config_from_dict
from gateway.server.observability.shared_metrics import merge
from gateway.server.workers import with_workers

from .helpers import TOKEN, ServedGateway, ServeGateway, create_source

CHUNK = 64 * 1024
TWO_WORKERS = {"server": {"workers": 2, "shutdown_timeout": 30}}


def _is_worker(process: psutil.Process) -> bool:
    """A worker listens on the port; the supervisor's other children (multiprocessing's
    resource tracker) do not."""
    try:
        return any(conn.status == psutil.CONN_LISTEN for conn in process.net_connections())
    except psutil.Error:
        return False


async def wait_for_workers(served: ServedGateway, count: int, seconds: float = 30) -> list[int]:
    """The pids of the workers listening, once ``count`` of them are."""
    deadline = time.monotonic() + seconds
    while True:
        pids = sorted(p.pid for p in psutil.Process(served.proc.pid).children() if _is_worker(p))
        if len(pids) == count:
            return pids
        assert time.monotonic() < deadline, f"{len(pids)} workers listening, not {count}"
        await asyncio.sleep(0.1)


async def requests_total(http: aiohttp.ClientSession, served: ServedGateway) -> float:
    async with http.get(f"{served.url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_requests_total" and sample.labels == {
                "method": "POST",
                "route": "/v1/sources",
                "status": "201",
            }:
                return sample.value
    return 0.0


async def test_two_workers_share_the_port_and_sum_their_metrics(
    serve_gateway: ServeGateway,
) -> None:
    served = serve_gateway(TWO_WORKERS)
    await wait_for_workers(served, 2)
    created = 40
    # A connection each: the kernel spreads new connections over the workers.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(created):
            await create_source(http, served.url)
        await asyncio.sleep(1.5)  # each worker publishes its figures at least once a second
        # Whichever worker answers the scrape reports both workers' requests.
        for _ in range(6):
            assert await requests_total(http, served) == created
    posts = [r for r in served.log_records() if r.get("method") == "POST"]
    assert len(posts) == created
    assert {r["worker"] for r in posts} == {1, 2}, "one worker took every connection"


async def test_a_worker_that_dies_is_restarted(serve_gateway: ServeGateway) -> None:
    served = serve_gateway(TWO_WORKERS)
    first, second = await wait_for_workers(served, 2)
    os.kill(first, signal.SIGKILL)
    pids = await wait_for_workers(served, 2)
    assert second in pids and first not in pids
    assert "was killed by signal 9 (SIGKILL); restarting it" in served.log_text()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for _ in range(10):
            await create_source(http, served.url)
    assert served.proc.poll() is None


async def slow_body(data: bytes, started: asyncio.Event) -> AsyncIterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]
        started.set()
        await asyncio.sleep(0.05)


async def test_sigterm_drains_every_worker(serve_gateway: ServeGateway, s3: Any) -> None:
    served = serve_gateway(TWO_WORKERS)
    pids = await wait_for_workers(served, 2)
    data = os.urandom(80 * CHUNK)  # 5 MiB over about 4 s
    async with aiohttp.ClientSession() as http:
        source = await create_source(http, served.url)
        started = asyncio.Event()
        upload = asyncio.create_task(
            http.put(
                source["upload_url"],
                data=slow_body(data, started),
                headers={"Content-Length": str(len(data))},
            )
        )
        await started.wait()
        await asyncio.sleep(0.5)
        served.terminate()
        resp = await upload
        assert resp.status == 200, await resp.text()
        resp.release()
    assert await asyncio.to_thread(served.wait, 60) == 0
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    bucket = served.config_path.read_text().split("bucket: ")[1].split()[0]
    obj = s3.get_object(Bucket=bucket, Key=f"sources/{source['id']}")
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert "all workers stopped" in served.log_text()
    assert TOKEN not in served.log_text()


def test_the_sum_takes_the_earliest_creation_and_the_lowest_dependency_state() -> None:
    def exposition(requests: int, up: int) -> str:
        registry = CollectorRegistry()
        Counter("gateway_things", "Things.", ["kind"], registry=registry).labels("a").inc(requests)
        dependency = Gauge("gateway_dependency_up", "Up.", ["dependency"], registry=registry)
        dependency.labels("deployer").set(up)
        return generate_latest(registry).decode()

    first, second = exposition(3, 1), exposition(4, 0)
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(merge([first, second]).decode())
        for s in family.samples
    }
    assert samples[("gateway_things_total", ("a",))] == 7
    assert samples[("gateway_dependency_up", ("deployer",))] == 0
    created = [
        s.value
        for text in (first, second)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_things_created"
    ]
    assert samples[("gateway_things_created", ("a",))] == min(created)


@pytest.mark.parametrize(
    ("server", "path"),
    [
        ({"workers": 0}, "server.workers"),
        ({"workers": 65}, "server.workers"),
        ({"workers": 2, "port": 0}, "server.port"),
    ],
)
def test_worker_counts_are_checked(server: dict[str, Any], path: str) -> None:
    data = {
        "server": {"public_url": "http://127.0.0.1:8080", **server},
        "signing": {"secret_keys": ["a-secret-key-of-some-length"]},
        "storage": {"bucket": "sources"},
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, env={})
    assert info.value.path == path


def test_the_command_line_sets_the_workers_and_is_checked_as_the_key() -> None:
    data = {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "signing": {"secret_keys": ["a-secret-key-of-some-length"]},
        "storage": {"bucket": "sources"},
    }
    config = config_from_dict(data, env={})
    assert with_workers(config, None).server.workers == 1
    assert with_workers(config, 4).server.workers == 4
    with pytest.raises(ConfigError):
        with_workers(config, 0)
