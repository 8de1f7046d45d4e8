"""Deployment events: what taking them and reading them back costs (issue 17, points 7 and 8).

One gateway process on moto's server (each in a process of its own), its S3 traffic through the
counting proxy of the tests (``tests/faultproxy.py``, in this process), so every figure comes with
the number of S3 requests behind it:

- a deployer posting ``POSTED`` log events, ``AT_ONCE`` requests in flight: events per second and
  S3 requests per event;
- ``GET .../output`` and the replay at the start of ``GET .../events`` (time to the first event,
  and to the last) of deployments of ``SIZES`` events. The larger ones are written straight into
  the bucket as the gateway writes them (slots and chunks of 100), which takes seconds instead of
  minutes of posting; the posted one is read back too.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import aiohttp
from harness import QUICK, ROOT, RUNS, SECRET, TOKEN, create_bucket, gateway, header, log, s3_server

sys.path.insert(0, str(ROOT))

from gateway.config import StorageConfig
from gateway.server.adapters.deployments.event_log import EventLogStore
from gateway.server.adapters.deployments.records import RecordStore, bounded
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.outbound import Connections
from gateway.server.domain.deployments.event_log import CHUNK_EVENTS, next_entry
from gateway.server.domain.deployments.events_token import EventsTokens
from gateway.server.domain.deployments.records import Event, new_record
from gateway.server.domain.deployments.tracker import DeploymentTracker
from tests.faultproxy import FaultProxy

APP = "bench-app"
NOW = "2026-01-01T00:00:00Z"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POSTED = 300 if QUICK else 1200
AT_ONCE = 16
SIZES = [1200] if QUICK else [1200, 7835]
LINE = "x" * 99 + "\n"


def tracker(connections: Connections, bucket: str) -> DeploymentTracker:
    objects = S3JsonObjects(connections, bucket)
    return DeploymentTracker(
        RecordStore(objects, "deployments/"),
        EventLogStore(objects, "deployments/", CHUNK_EVENTS),
        1 << 30,
    )


async def new_deployment(direct: DeploymentTracker) -> str:
    deployment_id = str(uuid.uuid4())
    record = new_record(deployment_id, APP, NOW, None, "https://x.example/a.tgz", None, "bench")
    await direct.create(record, time.time())
    return deployment_id


async def write_log(direct: DeploymentTracker, deployment_id: str, count: int) -> None:
    entries: list[dict[str, Any]] = []
    for number in range(1, count + 1):
        event = Event(number, "log", content=LINE)
        entries.append(next_entry(entries[-1] if entries else None, event, NOW, 1 << 30))
    await bounded(direct.events.put_entry(APP, deployment_id, entry) for entry in entries)
    chunks = range(count // CHUNK_EVENTS)
    await bounded(direct.events.compact(APP, deployment_id, chunk) for chunk in chunks)


async def post_events(
    http: aiohttp.ClientSession, base: str, deployment_id: str, count: int
) -> float:
    """Post ``count`` log events, ``AT_ONCE`` at a time, in shuffled order; seconds taken."""
    token = EventsTokens((SECRET,), 86400, time.time).sign(APP, deployment_id)
    url = f"{base}/v1/apps/{APP}/deployments/{deployment_id}/events?token={token}"
    semaphore = asyncio.Semaphore(AT_ONCE)

    async def post(number: int) -> None:
        async with semaphore:
            body = {"id": number, "type": "log", "content": LINE}
            async with http.post(url, json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"event {number}: {resp.status} {await resp.text()}")

    numbers = list(range(1, count + 1))
    numbers = numbers[1::2] + numbers[::2]  # out of order, as concurrency makes it
    started = time.perf_counter()
    await asyncio.gather(*(post(n) for n in numbers))
    return time.perf_counter() - started


async def read_output(http: aiohttp.ClientSession, url: str, count: int) -> float:
    started = time.perf_counter()
    async with http.get(f"{url}/output", headers=AUTH) as resp:
        text = await resp.text()
    if text.count("\n") != count:
        raise RuntimeError(f"output has {text.count(chr(10))} lines, not {count}")
    return time.perf_counter() - started


async def replay(http: aiohttp.ClientSession, url: str, count: int) -> tuple[float, float]:
    """Seconds to the first event of the stream, and to event ``count``."""
    started = time.perf_counter()
    first = 0.0
    seen = 0
    async with http.get(f"{url}/events", headers=AUTH) as resp:
        async for line in resp.content:
            if line.startswith(b"id: "):
                seen += 1
                first = first or time.perf_counter() - started
                if seen == count:
                    return first, time.perf_counter() - started
    raise RuntimeError(f"the stream ended after {seen} events")


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


async def measure(endpoint: str, bucket: str, proxy: FaultProxy, base: str) -> list[str]:
    storage = StorageConfig(
        bucket=bucket, endpoint_url=endpoint, access_key_id="bench", secret_access_key="bench"
    )
    rows = []
    connections = Connections(storage)
    async with connections.open(), aiohttp.ClientSession() as http:
        direct = tracker(connections, bucket)
        posted = await new_deployment(direct)
        proxy.requests.clear()
        seconds = await post_events(http, base, posted, POSTED)
        per_event = len(proxy.requests) / POSTED
        log(f"posted {POSTED} events in {seconds:.1f} s")
        rows.append(
            f"| post {POSTED} log events, {AT_ONCE} at once | {POSTED / seconds:.0f} events/s "
            f"| {per_event:.1f} per event |"
        )
        targets = [(POSTED, posted, "posted")]
        for size in SIZES:
            written = await new_deployment(direct)
            await write_log(direct, written, size)
            targets.append((size, written, "written"))
        for size, deployment_id, how in targets:
            url = f"{base}/v1/apps/{APP}/deployments/{deployment_id}"
            outputs, firsts, lasts = [], [], []
            for _ in range(RUNS):
                proxy.requests.clear()
                outputs.append(await read_output(http, url, size))
                output_requests = len(proxy.requests)
                proxy.requests.clear()
                first, last = await replay(http, url, size)
                firsts.append(first)
                lasts.append(last)
                replay_requests = len(proxy.requests)
            rows.append(
                f"| `GET .../output`, {size} events ({how}) | {median(outputs)} "
                f"| {output_requests} |"
            )
            rows.append(
                f"| SSE replay of {size} events ({how}): first event / last | {median(firsts)} / "
                f"{median(lasts)} | {replay_requests} |"
            )
    return rows


async def run_all(endpoint: str, bucket: str) -> list[str]:
    proxy = FaultProxy(endpoint)
    await proxy.start()
    try:
        with gateway(proxy.url, bucket) as served:
            base = served.url.rstrip("/")
            return await measure(endpoint, bucket, proxy, base)
    finally:
        await proxy.close()


def main() -> None:
    with s3_server("moto") as s3:
        endpoint = s3.url.rstrip("/")
        bucket = create_bucket(endpoint)
        rows = asyncio.run(run_all(endpoint, bucket))
    print(
        header(
            "Deployment events: taking them, reading them back",
            "A deployer posting log events (16 requests in flight, out of order) to one gateway "
            "on moto, then `GET .../output` and the replay of `GET .../events` of deployments of "
            "1,200 and 7,835 events (the issue's case: 52 s and 7,844 S3 requests before the "
            "event log was kept in chunks of 100). S3 requests counted by a proxy between the "
            "gateway and moto (`bench/bench_event_log.py`).",
        )
    )
    print("| what | time | S3 requests |")
    print("|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
