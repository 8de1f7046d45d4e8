"""Resumable uploads (tus 1.0) beside the plain streamed PUT, on the same moto and the same bytes.

Per run, one after the other on one moto server: a plain ``PUT`` with a ``Content-Length`` (one
streamed S3 PUT), tus in one ``PATCH`` (creation, then the whole body: checked while it streams),
tus in 8 MiB ``PATCH``es on one instance, and the same 8 MiB ``PATCH``es alternating between two
instances (so completion reads the staging object back once to check it). Throughput is the
client's wall clock; CPU is the gateways' own (both, for the two-instance case), per GiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from harness import (
    QUICK,
    RUNS,
    TOKEN,
    GiB,
    MiB,
    Server,
    create_bucket,
    gateway,
    header,
    log,
    s3_server,
    spread,
)

SIZE = 64 * MiB if QUICK else 256 * MiB
PATCH_SIZE = 8 * MiB
CLIENT_CHUNK = 1 * MiB
PATTERN = bytes(range(256)) * (CLIENT_CHUNK // 256)
TUS = {"Tus-Resumable": "1.0.0"}
KINDS = ("plain PUT", "tus, one PATCH", "tus, 8 MiB PATCHes", "tus, 8 MiB PATCHes on 2 instances")


async def body(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = PATTERN[: min(CLIENT_CHUNK, size - sent)]
        sent += len(piece)
        yield piece


async def create_source(http: aiohttp.ClientSession, gw: Server) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{gw.url}/v1/sources", headers=headers) as resp:
        assert resp.status == 201
        source: dict[str, Any] = await resp.json()
        return source


async def plain(http: aiohttp.ClientSession, gws: list[Server]) -> None:
    source = await create_source(http, gws[0])
    headers = {"Content-Length": str(SIZE)}
    async with http.put(source["upload_url"], data=body(SIZE), headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def tus(http: aiohttp.ClientSession, gws: list[Server], patch_size: int) -> None:
    source = await create_source(http, gws[0])
    headers = {**TUS, "Upload-Length": str(SIZE)}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        path = resp.headers["Location"].split("/v1/", 1)[1]
    offset, turn = 0, 0
    while offset < SIZE:
        size = min(patch_size, SIZE - offset)
        url = f"{gws[turn % len(gws)].url}/v1/{path}"
        headers = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(size),
        }
        async with http.patch(url, data=body(size), headers=headers) as resp:
            assert resp.status == 204, await resp.text()
            offset = int(resp.headers["Upload-Offset"])
        turn += 1


async def one_run(http: aiohttp.ClientSession, a: Server, b: Server, results: Any) -> None:
    calls = {
        KINDS[0]: ([a], lambda: plain(http, [a])),
        KINDS[1]: ([a], lambda: tus(http, [a], SIZE)),
        KINDS[2]: ([a], lambda: tus(http, [a], PATCH_SIZE)),
        KINDS[3]: ([a, b], lambda: tus(http, [a, b], PATCH_SIZE)),
    }
    for kind, (servers, call) in calls.items():
        cpu = sum(s.cpu() for s in servers)
        started = time.perf_counter()
        await call()
        seconds = time.perf_counter() - started
        used = sum(s.cpu() for s in servers) - cpu
        results[kind].append((SIZE / MiB / seconds, used / (SIZE / GiB)))
        log(f"{kind}: {SIZE / MiB / seconds:.0f} MiB/s, {used / (SIZE / GiB):.2f} CPU s/GiB")


async def main() -> None:
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with s3_server("moto") as s3, contextlib.ExitStack() as stack:
        bucket = create_bucket(s3.url)
        a = stack.enter_context(gateway(s3.url, bucket))
        b = stack.enter_context(gateway(s3.url, bucket))
        timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(RUNS):
                await one_run(http, a, b, results)
    print(
        header(
            "Resumable uploads (tus) beside the plain PUT",
            f"{SIZE // MiB} MiB through the gateway into moto, per way of sending it "
            "(bench/bench_resumable.py). Throughput is the client's; CPU the gateways' own.",
        )
    )
    print("| how | MiB/s | vs plain PUT | gateway CPU s per GiB |")
    print("|---|---|---|---|")
    base = sorted(r[0] for r in results[KINDS[0]])[len(results[KINDS[0]]) // 2]
    for kind in KINDS:
        speeds = [r[0] for r in results[kind]]
        cpus = [r[1] for r in results[kind]]
        median = sorted(speeds)[len(speeds) // 2]
        print(
            f"| {kind} | {spread(speeds)} | {median / base:.2f}x | "
            f"{spread(cpus, lambda v: f'{v:.2f}')} |"
        )
    print()


if __name__ == "__main__":
    asyncio.run(main())
