"""Resumable uploads of a real archive, the archive check on (the default), beside the plain PUT.

``bench_resumable.py`` moves arbitrary bytes with the check off, to show the transfer alone. Here
the body is a tar.gz of a real Python tree (this environment's site-packages, twice, about
256 MiB; botocore alone with ``BENCH_QUICK=1``), checked as it streams (``archive_check:
enforce``, the default): a plain ``PUT``, tus in one ``PATCH`` and tus in 8 MiB ``PATCH``es, one
after the other on one gateway and one moto. Throughput is the client's; CPU the gateway's (its
event loop and its check threads), per GiB of the archive.
"""

from __future__ import annotations

import asyncio
import site
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from bench_resumable import PATCH_SIZE, TUS, create_source
from harness import (
    QUICK,
    RUNS,
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

KINDS = ("plain PUT", "tus, one PATCH", "tus, 8 MiB PATCHes")
# The check's limits, raised past what this archive inflates to (about 1 GiB, 30,000 entries).
LIMITS = {"max_inflated_bytes": 16 * GiB, "max_entries": 1_000_000}


def source_tree(tmp: Path) -> bytes:
    """site-packages twice in one tar.gz (``--hard-dereference``: the second copy is stored
    whole, not as links to the first)."""
    packages = Path(site.getsitepackages()[0])
    tree = packages / "botocore" if QUICK else packages
    archive = tmp / "source.tar.gz"
    subprocess.run(
        [
            "tar",
            "--hard-dereference",
            "-czf",
            str(archive),
            "-C",
            str(tree.parent),
            *[tree.name] * 2,
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return archive.read_bytes()


async def pieces(data: bytes, start: int, size: int) -> AsyncIterator[bytes]:
    for at in range(start, start + size, MiB):
        yield data[at : min(at + MiB, start + size)]


async def plain(http: aiohttp.ClientSession, gw: Server, data: bytes) -> None:
    source = await create_source(http, gw)
    headers = {"Content-Length": str(len(data))}
    async with http.put(
        source["upload_url"], data=pieces(data, 0, len(data)), headers=headers
    ) as r:
        assert r.status == 200, await r.text()


async def tus(http: aiohttp.ClientSession, gw: Server, data: bytes, patch_size: int) -> None:
    source = await create_source(http, gw)
    async with http.post(
        source["upload_url"], headers={**TUS, "Upload-Length": str(len(data))}
    ) as r:
        assert r.status == 201
        url = r.headers["Location"]
    offset = 0
    while offset < len(data):
        size = min(patch_size, len(data) - offset)
        headers = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(size),
        }
        async with http.patch(url, data=pieces(data, offset, size), headers=headers) as r:
            assert r.status == 204, await r.text()
            offset = int(r.headers["Upload-Offset"])


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = source_tree(Path(tmp))
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with s3_server("moto") as s3:
        bucket = create_bucket(s3.url)
        with gateway(s3.url, bucket, archive_check="enforce", **LIMITS) as gw:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                calls: dict[str, Any] = {
                    KINDS[0]: lambda: plain(http, gw, data),
                    KINDS[1]: lambda: tus(http, gw, data, len(data)),
                    KINDS[2]: lambda: tus(http, gw, data, PATCH_SIZE),
                }
                for _ in range(RUNS):
                    for kind, call in calls.items():
                        cpu, started = gw.cpu(), time.perf_counter()
                        await call()
                        seconds = time.perf_counter() - started
                        used = gw.cpu() - cpu
                        results[kind].append((len(data) / MiB / seconds, used / (len(data) / GiB)))
                        log(f"{kind}: {len(data) / MiB / seconds:.0f} MiB/s")
    print(
        header(
            "Resumable uploads of a real archive, checked (the default)",
            f"A {len(data) / MiB:.0f} MiB tar.gz of a real Python tree (site-packages, twice), "
            "through the gateway into moto with `archive_check: enforce` "
            "(bench/bench_resumable_checked.py). Throughput is the client's; CPU the gateway's, "
            "check threads included.",
        )
    )
    print("| how | MiB/s | vs plain PUT | gateway CPU s per GiB |")
    print("|---|---|---|---|")
    base = sorted(r[0] for r in results[KINDS[0]])[len(results[KINDS[0]]) // 2]
    for kind in KINDS:
        speeds = [r[0] for r in results[kind]]
        median = sorted(speeds)[len(speeds) // 2]
        cpus = spread([r[1] for r in results[kind]], lambda v: f"{v:.2f}")
        print(f"| {kind} | {spread(speeds)} | {median / base:.2f}x | {cpus} |")
    print()


if __name__ == "__main__":
    asyncio.run(main())
