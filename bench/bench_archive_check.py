"""The archive check's cost: gateway CPU seconds per GiB and throughput, enforce vs off.

Two archives: a tar.gz of this venv's site-packages (a real source tree, about 3.5x compression,
tens of thousands of entries) and a tar.gz of random bytes (incompressible). Each is uploaded
through a gateway with ``sources.archive_check: off`` and one with ``enforce``, one right after
the other, with a ``Content-Length`` (streamed PUT) and chunked (multipart), to moto and to the
sink. Beside that, in this process: inflating the same archives with the stdlib's zlib, ISA-L
(python-isal) and zlib-ng, and the whole check (``ArchiveInspector``) against the inflate alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import site
import subprocess
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import harness
from harness import (
    TOKEN,
    GiB,
    MiB,
    create_bucket,
    gateway,
    header,
    log,
    s3_server,
    spread,
)
from isal import isal_zlib

from gateway.server.domain.archive.format import OUT_CHUNK
from gateway.server.domain.archive.inspector import ArchiveInspector

PART_SIZE = 8 * MiB  # the default sources.part_size_bytes
CLIENT_CHUNK = 1 * MiB
FEED_CHUNK = 64 * 1024  # about what aiohttp hands the gateway per read
NOISE_BYTES = (16 if harness.QUICK else 128) * MiB


def inflaters() -> dict[str, Any]:
    found: dict[str, Any] = {"zlib (stdlib)": zlib, "isal (ISA-L)": isal_zlib}
    with contextlib.suppress(ImportError):
        from zlib_ng import zlib_ng

        found["zlib-ng"] = zlib_ng
    return found


def build_archives(tmp: Path) -> dict[str, bytes]:
    packages = Path(site.getsitepackages()[0])
    tree = packages / "botocore" if harness.QUICK else packages
    source = tmp / "source.tar.gz"
    subprocess.run(
        ["tar", "-czf", str(source), "-C", str(tree.parent), tree.name],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    noise = tmp / "noise.tar.gz"
    (tmp / "noise.bin").write_bytes(os.urandom(NOISE_BYTES))
    subprocess.run(["tar", "-czf", str(noise), "-C", str(tmp), "noise.bin"], check=True)
    return {"source tree": source.read_bytes(), "incompressible": noise.read_bytes()}


def inflate_only(module: Any, data: bytes) -> None:
    inflater = module.decompressobj(31)
    for start in range(0, len(data), FEED_CHUNK):
        pending = data[start : start + FEED_CHUNK]
        while pending:
            inflater.decompress(pending, OUT_CHUNK)
            pending = inflater.unconsumed_tail


def check(data: bytes) -> None:
    inspector = ArchiveInspector(1 << 40, 1 << 30)
    for start in range(0, len(data), FEED_CHUNK):
        inspector.feed(data[start : start + FEED_CHUNK])
    inspector.finish()


def cpu_of(call: Callable[[], None]) -> float:
    started = time.process_time()
    call()
    return time.process_time() - started


def in_process(archives: dict[str, bytes]) -> str:
    rows = ["| archive | what | CPU s per GiB of archive | vs ISA-L inflate |", "|---|---|---|---|"]
    for name, data in archives.items():
        gib = len(data) / GiB
        runs: dict[str, list[float]] = defaultdict(list)
        for _ in range(harness.RUNS):  # interleaved, so load spikes hit every figure alike
            for lib, module in inflaters().items():
                inflate = functools.partial(inflate_only, module, data)
                runs[f"inflate, {lib}"].append(cpu_of(inflate))
            runs["the whole check (ISA-L)"].append(cpu_of(functools.partial(check, data)))
        isal = runs["inflate, isal (ISA-L)"]
        for what, values in runs.items():
            ratios = [v / i for v, i in zip(values, isal, strict=True)]
            per_gib = spread([v / gib for v in values], lambda v: f"{v:.2f}")
            rows.append(f"| {name} | {what} | {per_gib} | {spread(ratios, _x)} |")
    return "\n".join(rows)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CLIENT_CHUNK):
        yield data[start : start + CLIENT_CHUNK]


async def upload(
    http: aiohttp.ClientSession, gw: harness.Server, data: bytes, chunked: bool
) -> None:
    async with http.post(
        f"{gw.url}/v1/sources", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        source = await resp.json()
    headers = {"Content-Type": "application/gzip"}
    if not chunked:
        headers["Content-Length"] = str(len(data))
    async with http.put(source["upload_url"], data=chunks(data), headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 200 and answer["size"] == len(data), answer


# (S3, archive, chunked, mode) -> [(seconds, gateway CPU seconds, RSS growth)]
Results = dict[tuple[str, str, bool, str], list[tuple[float, float, int]]]


async def through_gateways(kind: str, archives: dict[str, bytes], results: Results) -> None:
    with s3_server(kind) as s3, contextlib.ExitStack() as stack:
        bucket = create_bucket(s3.url)
        gateways = {
            mode: stack.enter_context(gateway(s3.url, bucket, archive_check=mode))
            for mode in ("off", "enforce")
        }
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(harness.RUNS):
                for name, data in archives.items():
                    for chunked in (False, True):
                        for mode, gw in gateways.items():
                            log(f"archive check: {kind} {name} chunked={chunked} {mode}")
                            idle = gw.rss()
                            cpu = gw.cpu()
                            with harness.PeakRss(gw) as rss:
                                started = time.perf_counter()
                                await upload(http, gw, data, chunked)
                                seconds = time.perf_counter() - started
                            sample = (seconds, gw.cpu() - cpu, rss.peak - idle)
                            results[kind, name, chunked, mode].append(sample)


def table(results: Results, archives: dict[str, bytes]) -> str:
    rows = [
        "| S3 | archive | upload | check | MiB/s | gateway CPU s per GiB | RSS growth |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = [
        "| S3 | archive | upload | CPU enforce/off | time enforce/off |",
        "|---|---|---|---|---|",
    ]
    for (kind, name, chunked, mode), samples in results.items():
        gib = len(archives[name]) / GiB
        how = "chunked" if chunked else "put"
        rate = spread([len(archives[name]) / MiB / s for s, _, _ in samples])
        cpu = spread([c / gib for _, c, _ in samples], lambda v: f"{v:.2f}")
        rss = spread([r / MiB for _, _, r in samples], lambda v: f"{v:.0f} MiB")
        rows.append(f"| {kind} | {name} | {how} | {mode} | {rate} | {cpu} | {rss} |")
        if mode == "enforce":
            off = results[kind, name, chunked, "off"]
            cpu_ratio = spread([e[1] / o[1] for e, o in zip(samples, off, strict=True)], _x)
            time_ratio = spread([e[0] / o[0] for e, o in zip(samples, off, strict=True)], _x)
            ratios.append(f"| {kind} | {name} | {how} | {cpu_ratio} | {time_ratio} |")
    return "\n".join(rows) + "\n\nEnforce against off, run by run:\n\n" + "\n".join(ratios)


def _x(value: float) -> str:
    return f"{value:.2f}x"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log("archive check: building the archives")
        archives = build_archives(Path(tmp))
    sizes = ", ".join(f"{name} {len(data) / MiB:.0f} MiB" for name, data in archives.items())
    log("archive check: inflating in this process")
    local = in_process(archives)
    results: Results = defaultdict(list)
    for kind in ("moto", "sink"):
        asyncio.run(through_gateways(kind, archives, results))
    print(
        header(
            "Archive check: CPU and throughput, enforce vs off",
            f"Archives ({sizes}): a tar.gz (GNU tar, gzip -6) of this venv's site-packages and"
            " of random bytes. RSS growth: the gateway's peak during one upload over its RSS"
            f" before it (part size {PART_SIZE // MiB} MiB). The machine is shared with other"
            " agents' test runs: compare the ratios, taken within one run, more than the"
            " absolute figures.",
        )
    )
    print("Inflating and checking in one process (CPU seconds per GiB of archive):\n")
    print(local + "\n")
    print("Uploads through the gateway:\n")
    print(table(results, archives))


if __name__ == "__main__":
    main()
