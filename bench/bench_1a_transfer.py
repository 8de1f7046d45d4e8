"""Figures 1a and 1b: big uploads and downloads through the gateway vs directly with aiobotocore.

For each S3 (moto's server, then the sink) and each size, every run does, one after the other:
a direct ``put_object`` of the bytes, the same bytes PUT through the gateway with a
``Content-Length`` (one streamed S3 PUT) and without one (chunked: a multipart upload in
``part_size_bytes`` buffers), a direct ``get_object``, and a GET through the gateway. The client is
this process; the gateway and S3 each run in their own, so the gateway's CPU seconds and peak RSS
are its own.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from harness import (
    CREDENTIALS,
    QUICK,
    RUNS,
    TOKEN,
    GiB,
    MiB,
    PeakRss,
    Server,
    create_bucket,
    gateway,
    header,
    log,
    mib,
    s3_server,
    spread,
)

SIZES = [64 * MiB] if QUICK else [256 * MiB, 1 * GiB]
# Chunks the client sends and reads in: large, so the client is never what limits a figure.
CLIENT_CHUNK = 1 * MiB
PART_SIZE = 8 * MiB  # the default sources.part_size_bytes
PATTERN = bytes(range(256)) * (CLIENT_CHUNK // 256)

UPLOAD_KINDS = ("put", "put-chunked")
KINDS = ("put", "put-chunked", "get")


@dataclass
class Sample:
    seconds: float
    cpu: float = 0.0  # gateway CPU seconds
    peak_rss: int = 0  # gateway peak RSS during the transfer


async def body(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = PATTERN[: min(CLIENT_CHUNK, size - sent)]
        sent += len(piece)
        yield piece


async def timed_gateway(gw: Server, call: Any) -> Sample:
    cpu = gw.cpu()
    with PeakRss(gw) as rss:
        started = time.perf_counter()
        await call
        seconds = time.perf_counter() - started
    return Sample(seconds, gw.cpu() - cpu, rss.peak)


async def direct_put(s3: Any, bucket: str, key: str, size: int) -> None:
    # aiobotocore sends only bytes or seekable files: bytes in memory are its fastest body.
    data = PATTERN * (size // len(PATTERN))
    await s3.put_object(Bucket=bucket, Key=key, Body=data)


async def direct_get(s3: Any, bucket: str, key: str, size: int) -> None:
    resp = await s3.get_object(Bucket=bucket, Key=key)
    got = 0
    async with resp["Body"] as stream:
        while chunk := await stream.read(CLIENT_CHUNK):
            got += len(chunk)
    assert got == size, (got, size)


async def gateway_put(http: aiohttp.ClientSession, url: str, size: int, chunked: bool) -> None:
    headers = {"Content-Type": "application/gzip"}
    if not chunked:
        headers["Content-Length"] = str(size)
    async with http.put(url, data=body(size), headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 200 and answer["size"] == size, answer


async def gateway_get(http: aiohttp.ClientSession, url: str, size: int) -> None:
    got = 0
    async with http.get(url) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_chunked(CLIENT_CHUNK):
            got += len(chunk)
    assert got == size, (got, size)


async def create_source(http: aiohttp.ClientSession, gw: Server) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{gw.url}/v1/sources", headers=headers) as resp:
        assert resp.status == 201
        source: dict[str, Any] = await resp.json()
        return source


Results = dict[tuple[str, int, str, str], list[Sample]]


async def measure(kind: str, results: Results, idle: dict[str, int]) -> None:
    with s3_server(kind) as s3_proc:
        bucket = create_bucket(s3_proc.url)
        with gateway(s3_proc.url, bucket) as gw:
            config = AioConfig(
                retries={"max_attempts": 1},
                # No CRC32 over the body: the direct figure is the best a raw client gets.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                read_timeout=300,
            )
            async with (
                AioSession().create_client(
                    "s3",
                    endpoint_url=s3_proc.url,
                    region_name="us-east-1",
                    config=config,
                    **CREDENTIALS,
                ) as s3,
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False
                ) as http,
            ):
                warm = await create_source(http, gw)
                await gateway_put(http, warm["upload_url"], 1000, chunked=False)
                await gateway_get(http, warm["download_url"], 1000)
                await asyncio.sleep(0.5)
                idle[kind] = gw.rss()
                for size in SIZES:
                    for run in range(RUNS):
                        log(f"transfer: {kind} {mib(size)} run {run + 1}/{RUNS}")
                        key = f"direct/{run}"
                        started = time.perf_counter()
                        await direct_put(s3, bucket, key, size)
                        results[kind, size, "put", "direct"].append(
                            Sample(time.perf_counter() - started)
                        )
                        started = time.perf_counter()
                        await direct_get(s3, bucket, key, size)
                        results[kind, size, "get", "direct"].append(
                            Sample(time.perf_counter() - started)
                        )
                        await s3.delete_object(Bucket=bucket, Key=key)

                        source = await create_source(http, gw)
                        for chunked in (False, True):
                            name = "put-chunked" if chunked else "put"
                            results[kind, size, name, "gateway"].append(
                                await timed_gateway(
                                    gw, gateway_put(http, source["upload_url"], size, chunked)
                                )
                            )
                        results[kind, size, "get", "gateway"].append(
                            await timed_gateway(gw, gateway_get(http, source["download_url"], size))
                        )
                        await s3.delete_object(Bucket=bucket, Key=f"sources/{source['id']}")


def mbps(size: int, sample: Sample) -> float:
    return size / MiB / sample.seconds


def report(results: Results, idle: dict[str, int]) -> str:
    lines = [
        header(
            "1a. Upload and download through the gateway vs direct aiobotocore",
            "Throughput in MiB/s of one transfer; `ratio` is gateway/direct per run (the "
            "targets are >= 0.9). Uploads through the gateway are compared with one direct "
            "`put_object` of the same bytes (what a user of a raw presigned URL gets): `put` "
            "sends a `Content-Length` (the gateway streams it into one S3 PUT), `put-chunked` "
            "does not (the gateway buffers 8 MiB parts into a multipart upload). Gateway CPU is "
            "the gateway process's user+system seconds per GiB moved.",
        ),
        "| S3 | size | transfer | direct MiB/s | gateway MiB/s | ratio | gateway CPU s/GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for (kind, size, name, via), samples in sorted(results.items()):
        if via != "gateway":
            continue
        direct_name = "get" if name == "get" else "put"
        direct = results[kind, size, direct_name, "direct"]
        ratios = [mbps(size, g) / mbps(size, d) for g, d in zip(samples, direct, strict=True)]
        lines.append(
            f"| {kind} | {mib(size)} | {name} "
            f"| {spread([mbps(size, d) for d in direct])} "
            f"| {spread([mbps(size, g) for g in samples])} "
            f"| {spread(ratios, lambda v: f'{v:.2f}')} "
            f"| {spread([g.cpu / (size / GiB) for g in samples], lambda v: f'{v:.2f}')} |"
        )
    lines += [
        "",
        header(
            "1b. Gateway memory during big transfers",
            "Peak RSS of the gateway process (sampled every 10 ms) during each transfer, "
            "against its RSS when idle (after one small upload and download). Target: one "
            f"upload raises RSS by at most 3 part sizes (3 x {mib(PART_SIZE)} = "
            f"{mib(3 * PART_SIZE)}).",
        ),
        "| S3 | size | transfer | idle RSS | peak RSS | peak - idle |",
        "|---|---|---|---|---|---|",
    ]
    for (kind, size, name, via), samples in sorted(results.items()):
        if via != "gateway":
            continue
        base = idle[kind]
        lines.append(
            f"| {kind} | {mib(size)} | {name} | {mib(base)} "
            f"| {spread([s.peak_rss for s in samples], mib)} "
            f"| {spread([s.peak_rss - base for s in samples], mib)} |"
        )
    return "\n".join(lines) + "\n"


async def main() -> None:
    results: Results = defaultdict(list)
    idle: dict[str, int] = {}
    for kind in ("sink", "moto"):
        await measure(kind, results, idle)
    print(report(results, idle))


if __name__ == "__main__":
    # aiohttp warns that a big bytes body is written in one piece: that is what is wanted here.
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(main())
