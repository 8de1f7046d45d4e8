"""``gateway serve`` keeps the memory upload bodies pass through (``gateway.server.allocator``):
left to its defaults, glibc gives the top of its heap back to the kernel after each part and faults
the pages in again for the next part's reads, a CPU cost on every byte (BENCHMARKS.md). Measured
here by the serving process's minor page faults while a resumable upload goes in 8 MiB PATCHes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from gateway.server.allocator import GLIBC_VARIABLES

from .helpers import ServedGateway, config_dict, create_source, serve
from .ports import free_port

MiB = 1024 * 1024
PART = 8 * MiB
SIZE = 64 * MiB
READ = 256 * 1024  # what the gateway reads from a body at once
TUS = {"Tus-Resumable": "1.0.0"}
# Every 4 KiB page of every read faulted in once is 256 faults per MiB; the gateway with its heap
# kept measured under 2 (67 more for the modules the first upload imports, not counted).
KEPT_MOST = 32


def started(moto_endpoint: str, bucket: str, workdir: Path, **env: str) -> ServedGateway:
    data = config_dict(moto_endpoint, bucket, free_port())
    data["sources"].update(part_size_bytes=PART, allow_small_parts=False, max_size_bytes=2 * SIZE)
    clean = {k: v for k, v in os.environ.items() if k not in GLIBC_VARIABLES}
    return serve(data, workdir, env={**clean, **env})


def minor_faults(pid: int) -> int:
    # /proc/PID/stat: the command name in parentheses, then fields from the third on; minflt is
    # the tenth.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[7])


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    for at in range(0, len(data), READ):
        yield data[at : at + READ]


async def upload(http: aiohttp.ClientSession, gateway: ServedGateway, data: bytes) -> None:
    source = await create_source(http, gateway.url)
    headers = {**TUS, "Upload-Length": str(len(data))}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        url = resp.headers["Location"]
    for at in range(0, len(data), PART):
        part = data[at : at + PART]
        headers = {
            **TUS,
            "Upload-Offset": str(at),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(len(part)),
        }
        async with http.patch(url, data=pieces(part), headers=headers) as resp:
            assert resp.status == 204, await resp.text()
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data


async def faults_per_mib(http: aiohttp.ClientSession, gateway: ServedGateway) -> float:
    data = os.urandom(SIZE)
    await upload(http, gateway, data)  # what the first upload imports and builds, not counted
    before = minor_faults(gateway.proc.pid)
    await upload(http, gateway, data)
    return (minor_faults(gateway.proc.pid) - before) / (SIZE / MiB)


async def test_upload_bodies_do_not_fault_their_memory_in_again(
    moto_endpoint: str, bucket: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gateway = started(moto_endpoint, bucket, tmp_path)
    try:
        assert await faults_per_mib(http, gateway) < KEPT_MOST
    finally:
        gateway.stop()


async def test_glibc_settings_of_the_operator_are_left_as_they_are(
    moto_endpoint: str, bucket: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    # glibc's own trim threshold at its static default: the gateway does not replace it, and
    # (every read then mapped and unmapped on its own) the reads fault their pages in each time.
    gateway = started(moto_endpoint, bucket, tmp_path, MALLOC_TRIM_THRESHOLD_="131072")
    try:
        assert await faults_per_mib(http, gateway) > 4 * KEPT_MOST
    finally:
        gateway.stop()
