"""Figure 1e: one gateway process against two workers (``server.workers: 2``), same run.

Two loads, each against ``gateway serve`` with 1 and then 2 workers on the sink (an S3 that
discards what it receives, so S3 costs nothing): ``POST /v1/sources`` from ``CONNECTIONS``
concurrent keep-alive connections for ``DURATION`` seconds, and ``UPLOADS`` concurrent streamed
uploads of ``UPLOAD_SIZE`` bytes each. The load generator is this process (aiohttp, one event
loop): it shares the machine's cores with the gateway, which is the point to read the figures by.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from harness import (
    QUICK,
    RUNS,
    TOKEN,
    MiB,
    Server,
    create_bucket,
    gateway,
    header,
    log,
    s3_server,
    spread,
)

CONNECTIONS = 32
DURATION = 2 if QUICK else 5
UPLOADS = 4
UPLOAD_SIZE = (16 if QUICK else 64) * MiB
CHUNK = 256 * 1024
PATTERN = bytes(range(256)) * (CHUNK // 256)
WORKERS = (1, 2)


async def creates(server: Server) -> tuple[float, float]:
    """(requests per second, gateway CPU seconds per request) over ``DURATION`` seconds."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.url}/v1/sources"
    count = 0
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(deadline: float) -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                async with http.post(url, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 201, resp.status
                count += 1

        await asyncio.gather(*(client(time.perf_counter() + 1) for _ in range(CONNECTIONS)))
        count = 0
        cpu, started = server.cpu(), time.perf_counter()
        await asyncio.gather(*(client(started + DURATION) for _ in range(CONNECTIONS)))
        wall = time.perf_counter() - started
    return count / wall, (server.cpu() - cpu) / max(1, count)


async def body() -> Any:
    sent = 0
    while sent < UPLOAD_SIZE:
        yield PATTERN
        sent += len(PATTERN)


async def uploads(server: Server) -> tuple[float, float]:
    """(MiB/s over all the uploads, gateway CPU seconds per GiB)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        urls = []
        for _ in range(UPLOADS):
            async with http.post(f"{server.url}/v1/sources", headers=headers) as resp:
                urls.append((await resp.json())["upload_url"])

        async def put(url: str) -> None:
            length = {"Content-Length": str(UPLOAD_SIZE)}
            async with http.put(url, data=body(), headers=length) as resp:
                assert resp.status == 200, await resp.text()

        cpu, started = server.cpu(), time.perf_counter()
        await asyncio.gather(*(put(url) for url in urls))
        wall = time.perf_counter() - started
    moved = UPLOADS * UPLOAD_SIZE
    return moved / MiB / wall, (server.cpu() - cpu) / (moved / 1024**3)


async def measure(endpoint: str, bucket: str, workers: int) -> tuple[float, float, float, float]:
    with gateway(endpoint, bucket, workers=workers) as server:
        await asyncio.sleep(2 if workers > 1 else 0.5)  # every worker listening
        rate, per_request = await creates(server)
        throughput, per_gib = await uploads(server)
    return rate, per_request, throughput, per_gib


def main() -> None:
    results: dict[int, list[tuple[float, float, float, float]]] = {n: [] for n in WORKERS}
    with s3_server("sink") as s3:
        bucket = create_bucket(s3.url)
        for run in range(RUNS):
            for workers in WORKERS:
                log(f"workers: {workers} run {run + 1}/{RUNS}")
                results[workers].append(asyncio.run(measure(s3.url, bucket, workers)))
    lines = [
        header(
            "1e. Workers: one process against two (`server.workers`)",
            f"`POST /v1/sources` from {CONNECTIONS} keep-alive connections for "
            f"{DURATION} s; then {UPLOADS} concurrent streamed uploads of "
            f"{UPLOAD_SIZE // MiB} MiB to the sink. The load generator is one Python process on "
            "the same cores: with 2 cores, two workers and the client compete for them, so the "
            "second worker can add at most what the client leaves; CPU per request or per GiB "
            "(summed over the workers) says whether the workers themselves cost more.",
        ),
        "| workers | creates/s | CPU per create | upload MiB/s | CPU s per GiB uploaded |",
        "|---|---|---|---|---|",
    ]
    for workers, samples in results.items():
        rates, costs, speeds, per_gib = zip(*samples, strict=True)
        micros = spread([c * 1e6 for c in costs], lambda v: f"{v:.0f} us")
        lines.append(
            f"| {workers} | {spread(rates)} | {micros} "
            f"| {spread(speeds)} | {spread(per_gib, lambda v: f'{v:.2f}')} |"
        )
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
