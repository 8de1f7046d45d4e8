"""Figure 1d: 200 concurrent 4 MiB uploads through one gateway, against moto's server; and RSS
growth under concurrent chunked uploads against ``sources.max_buffer_bytes``.

Every upload has its own random body. Each run sends all 200 at once, then checks every stored
object byte for byte (its SHA-256, read back directly from S3, and the one the gateway answered).
Two ways of sending: with a ``Content-Length`` (each upload is one streamed S3 PUT, a few socket
buffers of memory) and chunked (each body is buffered as a part, under ``sources.max_buffer_bytes``,
here 64 MiB: at most 8 such buffers of 8 MiB exist at once, the other uploads wait).

The budget table runs chunked 20 MiB uploads (three parts each) against the sink, at 64 MiB and at
the Kubernetes example's 128 MiB (deploy/kubernetes: container limit 512 Mi), and checks the
peak RSS growth against the target: at most 1.5x the budget plus 32 MiB (``--budget-only`` runs
just that table).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.session import AioSession
from harness import (
    CREDENTIALS,
    QUICK,
    RUNS,
    TOKEN,
    MiB,
    PeakRss,
    create_bucket,
    gateway,
    header,
    log,
    mib,
    s3_server,
    spread,
)

UPLOADS = 40 if QUICK else 200
SIZE = 4 * MiB
BUDGET = 64 * MiB
PART_SIZE = 8 * MiB
SEND_CHUNK = 256 * 1024
# (concurrent chunked uploads, size of each, sources.max_buffer_bytes) for the budget table.
BUDGET_CASES = [(24, 20 * MiB, 64 * MiB), (40, 20 * MiB, 128 * MiB)]
KUBERNETES_LIMIT = 512 * MiB


def rss_target(budget: int) -> float:
    return 1.5 * budget + 32 * MiB


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), SEND_CHUNK):
        yield bytes(view[i : i + SEND_CHUNK])


async def one_upload(
    http: aiohttp.ClientSession, url: str, data: bytes, chunked: bool
) -> tuple[float, str]:
    headers = {"Content-Type": "application/gzip"}
    if not chunked:
        headers["Content-Length"] = str(len(data))
    started = time.perf_counter()
    async with http.put(url, data=pieces(data), headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return time.perf_counter() - started, str(answer["sha256"])


async def stored_sha256(s3: Any, bucket: str, key: str) -> str:
    resp = await s3.get_object(Bucket=bucket, Key=key)
    digest = hashlib.sha256()
    async with resp["Body"] as stream:
        while chunk := await stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def create_sources(http: aiohttp.ClientSession, gw_url: str, count: int) -> list[Any]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sources = []
    for _ in range(count):
        async with http.post(f"{gw_url}/v1/sources", headers=auth) as resp:
            sources.append(await resp.json())
    return sources


async def run_once(
    gw_url: str, s3: Any, bucket: str, bodies: list[bytes], digests: list[str], chunked: bool
) -> tuple[list[float], float, int]:
    """(latencies, wall seconds, objects stored byte-exact)."""
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        sources = await create_sources(http, gw_url, len(bodies))
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                one_upload(http, s["upload_url"], data, chunked)
                for s, data in zip(sources, bodies, strict=True)
            )
        )
        wall = time.perf_counter() - started
    exact = 0
    for source, (_, answered), want in zip(sources, results, digests, strict=True):
        key = f"sources/{source['id']}"
        if answered == want and await stored_sha256(s3, bucket, key) == want:
            exact += 1
        await s3.delete_object(Bucket=bucket, Key=key)
    return [latency for latency, _ in results], wall, exact


async def budget_case(uploads: int, size: int, budget: int) -> tuple[int, list[int]]:
    """(the gateway's idle RSS, its peak RSS growth in each run) for ``uploads`` concurrent
    chunked uploads of ``size`` bytes under a budget of ``budget`` bytes, against the sink."""
    bodies = [os.urandom(size) for _ in range(uploads)]
    growth = []
    with s3_server("sink") as sink, gateway(sink.url, "bench", max_buffer_bytes=budget) as gw:
        idle = gw.rss()
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout
        ) as http:
            for run in range(RUNS):
                log(f"budget: {uploads} x {mib(size)} at {mib(budget)} run {run + 1}/{RUNS}")
                sources = await create_sources(http, gw.url, uploads)
                with PeakRss(gw) as rss:
                    await asyncio.gather(
                        *(
                            one_upload(http, s["upload_url"], data, chunked=True)
                            for s, data in zip(sources, bodies, strict=True)
                        )
                    )
                growth.append(rss.peak - idle)
    return idle, growth


async def budget_table() -> list[str]:
    lines = [
        header(
            "1d. RSS under concurrent chunked uploads, against the budget",
            "Chunked uploads (no `Content-Length`, 8 MiB parts) all at once against the sink; "
            "peak RSS growth is above the gateway's idle RSS. Target: growth at most 1.5x "
            "`sources.max_buffer_bytes` + 32 MiB. The 128 MiB row is the Kubernetes example's "
            "budget; `idle + peak` is compared with its container limit "
            f"({mib(KUBERNETES_LIMIT)}).",
        ),
        "| uploads | budget | peak RSS - idle | target | met? | idle + peak |",
        "|---|---|---|---|---|---|",
    ]
    for uploads, size, budget in BUDGET_CASES:
        idle, growth = await budget_case(uploads, size, budget)
        target = rss_target(budget)
        met = "yes" if max(growth) <= target else "no"
        total = spread([idle + g for g in growth], mib)
        lines.append(
            f"| {uploads} x {mib(size)} | {mib(budget)} | {spread(growth, mib)} | {mib(target)} "
            f"| {met} | {total} |"
        )
    return lines


async def main() -> None:
    if sys.argv[1:] == ["--budget-only"]:
        print("\n".join(await budget_table()) + "\n")
        return
    log(f"concurrent: generating {UPLOADS} bodies of {mib(SIZE)}")
    bodies = [os.urandom(SIZE) for _ in range(UPLOADS)]
    digests = [hashlib.sha256(b).hexdigest() for b in bodies]
    figures: dict[str, dict[str, list[float]]] = {}
    with s3_server("moto") as s3_proc:
        bucket = create_bucket(s3_proc.url)
        with gateway(s3_proc.url, bucket, max_buffer_bytes=BUDGET) as gw:
            async with AioSession().create_client(
                "s3", endpoint_url=s3_proc.url, region_name="us-east-1", **CREDENTIALS
            ) as s3:
                idle = gw.rss()
                for run in range(RUNS):
                    for chunked in (False, True):
                        name = (
                            "chunked (buffered parts)" if chunked else "Content-Length (streamed)"
                        )
                        log(f"concurrent: {name} run {run + 1}/{RUNS}")
                        with PeakRss(gw) as rss:
                            latencies, wall, exact = await run_once(
                                gw.url, s3, bucket, bodies, digests, chunked
                            )
                        row = figures.setdefault(name, {})
                        cuts = statistics.quantiles(latencies, n=100)
                        for label, value in (
                            ("p50", cuts[49]),
                            ("p99", cuts[98]),
                            ("wall", wall),
                            ("exact", exact),
                            ("peak", rss.peak - idle),
                            ("rate", UPLOADS * SIZE / MiB / wall),
                        ):
                            row.setdefault(label, []).append(value)

    seconds = lambda v: f"{v:.2f} s"  # noqa: E731
    lines = [
        header(
            f"1d. {UPLOADS} concurrent {mib(SIZE)} uploads",
            f"All {UPLOADS} PUTs start at once against one gateway (moto's server behind it). "
            "`byte-exact` counts the objects whose SHA-256, read back from S3, and the one the "
            "gateway answered both equal the body's. Latency is per upload, from the request "
            f"to the answer. Peak RSS is above the gateway's idle RSS ({mib(idle)}); "
            f"`sources.max_buffer_bytes` is {mib(BUDGET)} ({BUDGET // PART_SIZE} part buffers of "
            f"{mib(PART_SIZE)}).",
        ),
        "| upload | byte-exact | p50 latency | p99 latency | all done in | aggregate MiB/s "
        "| peak RSS - idle |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in figures.items():
        exact = f"{min(row['exact']):.0f}/{UPLOADS} in every run"
        lines.append(
            f"| {name} | {exact} | {spread(row['p50'], seconds)} | {spread(row['p99'], seconds)} "
            f"| {spread(row['wall'], seconds)} | {spread(row['rate'])} "
            f"| {spread(row['peak'], mib)} |"
        )
    print("\n".join(lines) + "\n")
    print("\n".join(await budget_table()) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
