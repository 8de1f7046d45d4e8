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
import contextlib
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
    has_uvloop,
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


# (S3, event loop of the gateway, size, transfer, how): how is "direct" (aiobotocore), "presigned"
# (aiohttp streaming to a presigned URL, what a user of raw presigned S3 URLs does) or "gateway".
Key = tuple[str, str, int, str, str]
Results = dict[Key, list[Sample]]
DIRECT = "-"


def s3_client(endpoint: str) -> Any:
    config = AioConfig(
        retries={"max_attempts": 1},
        # No CRC32 over the body: the direct figure is the best a raw client gets.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        read_timeout=300,
    )
    return AioSession().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config, **CREDENTIALS
    )


async def presigned_put(
    s3: Any, http: aiohttp.ClientSession, bucket: str, key: str, size: int
) -> None:
    url = await s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
    )
    headers = {"Content-Length": str(size)}
    async with http.put(url, data=body(size), headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status


async def direct_round(
    kind: str, s3: Any, http: aiohttp.ClientSession, bucket: str, size: int, results: Results
) -> None:
    key = "direct"
    for how, put in (
        ("direct", direct_put(s3, bucket, key, size)),
        ("presigned", presigned_put(s3, http, bucket, key, size)),
    ):
        started = time.perf_counter()
        await put
        results[kind, DIRECT, size, "put", how].append(Sample(time.perf_counter() - started))
    started = time.perf_counter()
    await direct_get(s3, bucket, key, size)
    results[kind, DIRECT, size, "get", "direct"].append(Sample(time.perf_counter() - started))
    await s3.delete_object(Bucket=bucket, Key=key)


async def gateway_round(
    kind: str,
    loop: str,
    gw: Server,
    s3: Any,
    http: aiohttp.ClientSession,
    bucket: str,
    size: int,
    results: Results,
) -> None:
    source = await create_source(http, gw)
    for chunked in (False, True):
        name = "put-chunked" if chunked else "put"
        sample = await timed_gateway(gw, gateway_put(http, source["upload_url"], size, chunked))
        results[kind, loop, size, name, "gateway"].append(sample)
    sample = await timed_gateway(gw, gateway_get(http, source["download_url"], size))
    results[kind, loop, size, "get", "gateway"].append(sample)
    await s3.delete_object(Bucket=bucket, Key=f"sources/{source['id']}")


async def idle_rss(gw: Server, http: aiohttp.ClientSession) -> int:
    warm = await create_source(http, gw)
    await gateway_put(http, warm["upload_url"], 1000, chunked=False)
    await gateway_get(http, warm["download_url"], 1000)
    await asyncio.sleep(0.5)
    return gw.rss()


async def measure(
    kind: str, loops: list[str], results: Results, idle: dict[tuple[str, str], int]
) -> None:
    """All transfers against one S3; a gateway per event loop in ``loops``, all up at once."""
    with s3_server(kind) as s3_proc, contextlib.ExitStack() as stack:
        bucket = create_bucket(s3_proc.url)
        gateways = {
            loop: stack.enter_context(gateway(s3_proc.url, bucket, loop=loop)) for loop in loops
        }
        timeout = aiohttp.ClientTimeout(total=None)
        async with (
            s3_client(s3_proc.url) as s3,
            aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http,
        ):
            for loop, gw in gateways.items():
                idle[kind, loop] = await idle_rss(gw, http)
            for size in SIZES:
                for run in range(RUNS):
                    log(f"transfer: {kind} {mib(size)} run {run + 1}/{RUNS}")
                    await direct_round(kind, s3, http, bucket, size, results)
                    for loop, gw in gateways.items():
                        if loop != "asyncio" and size > 256 * MiB:
                            continue  # the lever is measured once; keeps `make bench` short
                        await gateway_round(kind, loop, gw, s3, http, bucket, size, results)


def mbps(size: int, sample: Sample) -> float:
    return size / MiB / sample.seconds


def ratios(size: int, mine: list[Sample], theirs: list[Sample]) -> str:
    values = [mbps(size, m) / mbps(size, t) for m, t in zip(mine, theirs, strict=True)]
    return spread(values, lambda v: f"{v:.2f}")


def report(results: Results, idle: dict[tuple[str, str], int]) -> str:
    lines = [
        header(
            "1a. Upload and download through the gateway vs direct",
            "Throughput in MiB/s of one transfer of generated bytes. Uploads through the gateway "
            "are compared with two direct single PUTs of the same bytes to the same S3: "
            "aiobotocore's `put_object` (bytes in memory, no CRC32) and a presigned PUT streamed "
            "by aiohttp (what a user of raw presigned S3 URLs does); downloads with aiobotocore's "
            "`get_object`. Ratios are gateway/direct per run; the targets are >= 0.9. Through "
            "the gateway, `put` sends a `Content-Length` (streamed into one S3 PUT) and "
            "`put-chunked` does not (8 MiB parts buffered into a multipart upload). Gateway CPU "
            "is its process's user+system seconds per GiB moved. `loop` is the gateway's event "
            "loop (asyncio's; uvloop only to measure it as a lever, on the sink at 256 MiB).",
        ),
        "| S3 | size | transfer | loop | direct MiB/s | presigned MiB/s | gateway MiB/s "
        "| ratio to direct | ratio to presigned | gateway CPU s/GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (kind, loop, size, name, how), samples in sorted(results.items()):
        if how != "gateway":
            continue
        direct_name = "get" if name == "get" else "put"
        direct = results[kind, DIRECT, size, direct_name, "direct"]
        presigned = results.get((kind, DIRECT, size, direct_name, "presigned"), [])
        lines.append(
            f"| {kind} | {mib(size)} | {name} | {loop} "
            f"| {spread([mbps(size, d) for d in direct])} "
            f"| {spread([mbps(size, p) for p in presigned]) if presigned else '-'} "
            f"| {spread([mbps(size, g) for g in samples])} "
            f"| {ratios(size, samples, direct)} "
            f"| {ratios(size, samples, presigned) if presigned else '-'} "
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
        "| S3 | size | transfer | loop | idle RSS | peak RSS | peak - idle |",
        "|---|---|---|---|---|---|---|",
    ]
    for (kind, loop, size, name, how), samples in sorted(results.items()):
        if how != "gateway":
            continue
        base = idle[kind, loop]
        lines.append(
            f"| {kind} | {mib(size)} | {name} | {loop} | {mib(base)} "
            f"| {spread([s.peak_rss for s in samples], mib)} "
            f"| {spread([s.peak_rss - base for s in samples], mib)} |"
        )
    return "\n".join(lines) + "\n"


async def main() -> None:
    results: Results = defaultdict(list)
    idle: dict[tuple[str, str], int] = {}
    loops = ["asyncio", "uvloop"] if has_uvloop() else ["asyncio"]
    await measure("sink", loops, results, idle)
    await measure("moto", ["asyncio"], results, idle)
    print(report(results, idle))


if __name__ == "__main__":
    # aiohttp warns that a big bytes body is written in one piece: that is what is wanted here.
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(main())
