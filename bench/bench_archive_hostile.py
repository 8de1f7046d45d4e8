"""The archive check on hostile archives: what one check holds and costs, against a normal archive.

The archives of the second attack that took memory or CPU (PAX global records kept for the whole
stream, symbolic links with long targets, link chains, PAX headers of many tiny records) and the
archive that fills what the check keeps of links (``MAX_LINK_BYTES``), each uploaded with a
``Content-Length`` to a gateway with ``sources.archive_check: enforce`` (the sink as S3). Per
archive: the answer, the gateway's CPU seconds and its peak RSS over its RSS before the upload;
and, in this process, the peak of Python allocations while ``ArchiveInspector`` reads it
(tracemalloc: what the check itself holds, the inflater's buffers included, without the
allocator's slack).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import site
import subprocess
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import harness
from harness import TOKEN, MiB, create_bucket, gateway, header, log, s3_server, spread

from gateway.errors import ArchiveInvalid
from gateway.server.domain.archive.inspector import ArchiveInspector
from gateway.server.domain.archive.links import MAX_LINK_BYTES

CLIENT_CHUNK = 256 * 1024
FEED_CHUNK = 64 * 1024
MAX_INFLATED = 100 * MiB  # as on the attacked instance


def raw_header(name: bytes, kind: bytes = b"0", size: int = 0, link: bytes = b"") -> bytes:
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % 1_700_000_000
    block[156:157] = kind
    block[157 : 157 + len(link)] = link
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def member(name: bytes, data: bytes = b"", kind: bytes = b"0", link: bytes = b"") -> bytes:
    return raw_header(name, kind, len(data), link) + data + bytes(-len(data) % 512)


def pax(records: bytes, kind: bytes = b"x") -> bytes:
    return member(b"././@PaxHeader", records, kind)


def record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def finish(*members: bytes) -> bytes:
    return gzip.compress(b"".join(members) + bytes(1024), 6, mtime=0)


def global_records() -> bytes:
    """16 global headers of 1 MiB of distinct records each, then files: kept whole, and copied
    for every entry, before."""
    headers = []
    for n in range(16):
        records, i = b"", 0
        while len(records) < 1024 * 1024 - 1000:
            records += record(b"k%d.%d" % (n, i), os.urandom(400).hex().encode())
            i += 1
        headers.append(pax(records, b"g"))
    return finish(*headers, *(member(b"r/f%d" % i, b"x") for i in range(2000)))


def long_targets() -> bytes:
    """300 links with 1 MiB targets (a 327 KB upload took 304 MiB before)."""
    target = b"a/" * (512 * 1024 - 64)  # the PAX header just under its 1 MiB limit
    links = [pax(record(b"linkpath", target)) + member(b"r/l%d" % i, kind=b"2") for i in range(300)]
    return finish(*links)


def link_budget() -> bytes:
    """Links with 4,000-byte targets until what the check keeps of links is full: refused there."""
    target = b"./" * 1999 + b"t"
    count = MAX_LINK_BYTES // len(target) + 10
    return finish(
        *(pax(record(b"linkpath", target)) + member(b"r/l%d" % i, kind=b"2") for i in range(count))
    )


def link_chain() -> bytes:
    """3,500 links each leading to the next through a 4,000-byte target of ``./`` (within
    MAX_LINK_BYTES): followed from every link up to 40 hops before, each target walked once now."""
    count = 3_500
    members = []
    for i in range(count):
        target = b"./" * 1995 + b"l%d" % (i + 1)
        members.append(pax(record(b"linkpath", target)) + member(b"r/l%d" % i, kind=b"2"))
    return finish(*members)


def tiny_records() -> bytes:
    """Local PAX headers of 1 MiB of six-byte records, one per entry (a dictionary of 170,000
    records each, before)."""
    records = record(b"a", b"b") * (1024 * 1024 // 6 - 100)
    return finish(*(pax(records) + member(b"r/f%d" % i, b"x") for i in range(30)))


def source_tree(tmp: Path) -> bytes:
    tree = Path(site.getsitepackages()[0]) / "botocore"
    out = tmp / "source.tar.gz"
    subprocess.run(
        ["tar", "-czf", str(out), "-C", str(tree.parent), tree.name],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return out.read_bytes()


def check(data: bytes) -> str:
    inspector = ArchiveInspector(MAX_INFLATED, 200_000)
    try:
        for start in range(0, len(data), FEED_CHUNK):
            inspector.feed(data[start : start + FEED_CHUNK])
        inspector.finish()
    except ArchiveInvalid as exc:
        return exc.reason
    return "accepted"


def in_process(data: bytes) -> tuple[str, float, int]:
    """The check in this process: its verdict, CPU seconds and peak of Python allocations
    (a second run, under tracemalloc, which slows it)."""
    started = time.process_time()
    verdict = check(data)
    cpu = time.process_time() - started
    tracemalloc.start()
    check(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return verdict, cpu, peak


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CLIENT_CHUNK):
        yield data[start : start + CLIENT_CHUNK]


async def upload(http: aiohttp.ClientSession, gw: harness.Server, data: bytes) -> int:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{gw.url}/v1/sources", headers=auth) as resp:
        source = await resp.json()
    headers = {"Content-Type": "application/gzip", "Content-Length": str(len(data))}
    try:
        async with http.put(source["upload_url"], data=chunks(data), headers=headers) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:  # refused mid-body: the gateway answered and closed
        return 422


Samples = dict[str, list[tuple[int, float, int]]]


async def through_gateway(archives: dict[str, bytes], samples: Samples) -> None:
    with s3_server("sink") as s3:
        bucket = create_bucket(s3.url)
        with gateway(
            s3.url, bucket, archive_check="enforce", max_inflated_bytes=MAX_INFLATED
        ) as gw:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
                await upload(http, gw, archives["normal: a source tree"])  # warm up
                for _ in range(harness.RUNS):
                    for name, data in archives.items():
                        log(f"hostile archives: {name}")
                        idle, cpu = gw.rss(), gw.cpu()
                        with harness.PeakRss(gw) as rss:
                            status = await upload(http, gw, data)
                        samples[name].append((status, gw.cpu() - cpu, rss.peak - idle))


def main() -> None:
    builders: dict[str, Callable[[], bytes]] = {
        "PAX global records, 16 MiB": global_records,
        "300 links with 1 MiB targets": long_targets,
        "links filling MAX_LINK_BYTES": link_budget,
        "a chain of 3,500 links": link_chain,
        "PAX headers of tiny records": tiny_records,
    }
    log("hostile archives: building")
    with tempfile.TemporaryDirectory() as tmp:
        archives = {"normal: a source tree": source_tree(Path(tmp))}
    archives |= {name: build() for name, build in builders.items()}
    local = {name: in_process(data) for name, data in archives.items()}
    samples: Samples = defaultdict(list)
    asyncio.run(through_gateway(archives, samples))
    rows = [
        "| archive | upload | check's verdict | in process: CPU s, peak allocations |"
        " gateway: answer | gateway CPU s | gateway RSS growth |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data in archives.items():
        verdict, cpu, peak = local[name]
        statuses = sorted({s for s, _, _ in samples[name]})
        cpus = spread([c for _, c, _ in samples[name]], lambda v: f"{v:.2f}")
        growth = spread([r / MiB for _, _, r in samples[name]], lambda v: f"{v:.0f} MiB")
        size = f"{len(data) / 1000:,.0f} KB"
        rows.append(
            f"| {name} | {size} | {verdict[:70]} | {cpu:.2f} s, {peak / MiB:.1f} MiB |"
            f" {', '.join(map(str, statuses))} | {cpus} | {growth} |"
        )
    print(
        header(
            "Archive check: hostile archives",
            "Each archive uploaded with a Content-Length to a gateway with `archive_check:"
            f" enforce` and `max_inflated_bytes` {MAX_INFLATED // MiB} MiB (the sink as S3),"
            " after one normal upload to warm it; RSS growth is the gateway's peak during the"
            " upload over its RSS just before. In process: the check alone, tracemalloc's peak.",
        )
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
