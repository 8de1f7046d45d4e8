"""Connections that must not starve each other (issue 17): memory of many waiting chunked uploads,
and a small upload's answer while heavy archives are being checked.

1. RSS: 200 chunked 4 MiB uploads at once under a 32 MiB budget (four part buffers of 8 MiB),
   against the sink. Most of them wait for a part buffer; what each waiting connection holds
   (aiohttp's read-ahead of its body) is outside the budget. Target: growth at most 1.5x the
   budget + 32 MiB (docs/operations.md).
2. Fairness: eight uploads of an archive that is costly to check (3 GiB of zeros once inflated,
   3 MiB on the wire) start at once with the check on (``enforce``); one second later a small
   archive (a few hundred bytes) is uploaded. Its answer time is compared with the same upload on
   an idle gateway.

``PYTHONPATH=<an older tree> python bench/bench_connections.py`` measures that tree's gateway
with the same clients (the figures "before" in bench/notes.md were made so).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import statistics
import tarfile
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from harness import QUICK, RUNS, TOKEN, MiB, PeakRss, gateway, header, log, mib, s3_server, spread

WAITING_UPLOADS = 40 if QUICK else 200
WAITING_SIZE = 4 * MiB
SMALL_BUDGET = 32 * MiB
SEND_CHUNK = 256 * 1024
HEAVY_UPLOADS = 8
HEAVY_INFLATED = (1 if QUICK else 3) * 1024  # MiB of zeros in each heavy archive
HEAD_START = 1.0  # seconds the heavy uploads get before the small one


def rss_target(budget: int) -> float:
    return 1.5 * budget + 32 * MiB


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), SEND_CHUNK):
        yield bytes(view[i : i + SEND_CHUNK])


async def upload_urls(http: aiohttp.ClientSession, gw_url: str, count: int) -> list[str]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    urls = []
    for _ in range(count):
        async with http.post(f"{gw_url}/v1/sources", headers=auth) as resp:
            urls.append((await resp.json())["upload_url"])
    return urls


async def put(http: aiohttp.ClientSession, url: str, data: bytes, chunked: bool) -> int | str:
    headers = {} if chunked else {"Content-Length": str(len(data))}
    try:
        async with http.put(url, data=pieces(data), headers=headers) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError as exc:
        return type(exc).__name__


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=900)
    )


async def waiting_memory() -> list[str]:
    body = os.urandom(WAITING_SIZE)
    growth: list[float] = []
    answers: dict[int | str, int] = {}
    with (
        s3_server("sink") as sink,
        gateway(sink.url, "bench", max_buffer_bytes=SMALL_BUDGET) as gw,
    ):
        idle = gw.rss()
        async with session() as http:
            for run in range(RUNS):
                log(f"connections: {WAITING_UPLOADS} waiting uploads, run {run + 1}/{RUNS}")
                urls = await upload_urls(http, gw.url, WAITING_UPLOADS)
                with PeakRss(gw) as rss:
                    statuses = await asyncio.gather(*(put(http, u, body, True) for u in urls))
                growth.append(rss.peak - idle)
                for status in statuses:
                    answers[status] = answers.get(status, 0) + 1
    target = rss_target(SMALL_BUDGET)
    met = "yes" if max(growth) <= target else "no"
    answered = ", ".join(f"{n} x {s}" for s, n in sorted(answers.items(), key=str))
    return [
        header(
            "Connections: RSS of uploads waiting for a part buffer",
            f"{WAITING_UPLOADS} chunked {mib(WAITING_SIZE)} uploads at once against the sink, "
            f"`sources.max_buffer_bytes` {mib(SMALL_BUDGET)} (four 8 MiB part buffers): most "
            "wait for a buffer. Peak RSS growth above the gateway's idle RSS "
            f"({mib(idle)}); target 1.5x the budget + 32 MiB. Answers over all runs.",
        ),
        "| uploads | budget | peak RSS - idle | target | met? | answers |",
        "|---|---|---|---|---|---|",
        f"| {WAITING_UPLOADS} x {mib(WAITING_SIZE)} | {mib(SMALL_BUDGET)} | {spread(growth, mib)} "
        f"| {mib(target)} | {met} | {answered} |",
    ]


def costly_archive(mib_of_zeros: int) -> bytes:
    """A tar.gz of one file of zeros, as gzip members (one per MiB, each a few hundred bytes):
    cheap to build and to send, ``mib_of_zeros`` MiB to inflate."""
    info = tarfile.TarInfo("zeros/big")
    info.size = mib_of_zeros * MiB
    head = info.tobuf(tarfile.PAX_FORMAT)
    one = gzip.compress(bytes(MiB), compresslevel=9, mtime=0)
    end = gzip.compress(bytes(1024), mtime=0)
    return gzip.compress(head, mtime=0) + one * mib_of_zeros + end


def small_archive() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = b"print('hello')\n"
        info = tarfile.TarInfo("app/main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def timed_put(http: aiohttp.ClientSession, url: str, data: bytes) -> tuple[float, Any]:
    started = time.perf_counter()
    status = await put(http, url, data, False)
    return time.perf_counter() - started, status


async def fairness() -> list[str]:
    heavy, small = costly_archive(HEAVY_INFLATED), small_archive()
    alone: list[float] = []
    busy: list[float] = []
    heavy_done: list[float] = []
    with s3_server("sink") as sink, gateway(sink.url, "bench", archive_check="enforce") as gw:
        async with session() as http:
            for run in range(RUNS):
                log(f"connections: small upload among heavy checks, run {run + 1}/{RUNS}")
                (url,) = await upload_urls(http, gw.url, 1)
                seconds, status = await timed_put(http, url, small)
                assert status == 200, status
                alone.append(seconds)
                urls = await upload_urls(http, gw.url, HEAVY_UPLOADS + 1)
                started = time.perf_counter()
                heavies = [asyncio.ensure_future(timed_put(http, u, heavy)) for u in urls[1:]]
                await asyncio.sleep(HEAD_START)
                seconds, status = await timed_put(http, urls[0], small)
                assert status == 200, status
                busy.append(seconds)
                results = await asyncio.gather(*heavies)
                assert all(s == 200 for _, s in results), results
                heavy_done.append(time.perf_counter() - started)
    ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
    seconds = lambda v: f"{v:.1f} s"  # noqa: E731
    slowdown = statistics.median(busy) / statistics.median(alone)
    return [
        header(
            "Connections: a small upload while heavy archives are checked",
            f"{HEAVY_UPLOADS} uploads of a {mib(len(heavy))} tar.gz holding {HEAVY_INFLATED} MiB "
            f"of zeros start at once (`archive_check: enforce`); {HEAD_START:g} s later a "
            f"{len(small)}-byte tar.gz is uploaded. Its answer time, against the same upload "
            "on the idle gateway just before.",
        ),
        "| small upload, idle gateway | small upload among the heavy checks "
        "| the heavy uploads all done in |",
        "|---|---|---|",
        f"| {spread(alone, ms)} | {spread(busy, ms)} | {spread(heavy_done, seconds)} |",
        "",
        f"Median slowdown of the small upload: {slowdown:.1f}x.",
    ]


async def main() -> None:
    lines = await waiting_memory()
    lines += ["", *await fairness()]
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
