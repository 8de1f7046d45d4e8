"""CPU seconds per GiB, each against its floor, both measured in the same run.

1. The download hop: ``GET download_url`` through the gateway (spliced, the default, and with
   ``sources.download_splice: false``, copied) against a tuned nginx reverse proxy
   (``bench/nginx-s3-proxy.conf``) fetching the same object from the same moto with a presigned
   URL. The CPU seconds are those of the serving process alone (the gateway's, nginx's master and
   worker), read with psutil; the client and moto are other processes.
2. The archive check: a tar.gz of this venv's site-packages (a real Python tree) uploaded to a
   gateway with ``sources.archive_check: off`` and one with ``enforce``, to the sink. What the
   check adds (enforce minus off, gateway CPU) against ISA-L's inflate alone of
   the same bytes, in this process (the fastest of three ways to call it): the floor of any check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import boto3
import harness
from harness import (
    BENCH,
    CREDENTIALS,
    TOKEN,
    GiB,
    MiB,
    Server,
    create_bucket,
    free_port,
    gateway,
    header,
    log,
    s3_server,
    spread,
)
from isal import igzip, igzip_lib, isal_zlib

from gateway.server.domain.archive.format import OUT_CHUNK
from gateway.server.domain.archive.inspector import ArchiveInspector

OBJECT_SIZE = (32 if harness.QUICK else 128) * MiB
RUNS = 1 if harness.QUICK else 5
CLIENT_CHUNK = 1024 * 1024
FEED_CHUNK = 64 * 1024  # about what aiohttp hands the gateway per read
NGINX_CONF = BENCH / "nginx-s3-proxy.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)


def cpu(server: Server) -> float:
    """CPU seconds of the server's process, its threads and its children, in nanoseconds
    (``/proc/PID/task/TID/schedstat``), not psutil's clock ticks: at 0.3 s per GiB, 128 MiB is
    four ticks of 10 ms. Threads that ended are not counted: the servers here keep theirs."""
    total = 0
    for proc in [server.ps, *server.ps.children(recursive=True)]:
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


@contextlib.contextmanager
def nginx(s3_port: int) -> Iterator[Server]:
    """``bench/nginx-s3-proxy.conf`` in front of S3 on ``s3_port``, in a process of its own."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed (bench/ensure-tools installs it as root)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        text = NGINX_CONF.read_text()
        for old, new in (("@PREFIX@", tmp), ("@PORT@", str(port)), ("@S3_PORT@", str(s3_port))):
            text = text.replace(old, new)
        (Path(tmp) / "nginx.conf").write_text(text)
        argv = [NGINX, "-p", tmp, "-c", f"{tmp}/nginx.conf", "-e", f"{tmp}/error.log"]
        with harness.process("nginx", argv, port) as server:
            yield server


async def fetch(http: aiohttp.ClientSession, url: str, size: int) -> None:
    got = 0
    async with http.get(url) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_chunked(CLIENT_CHUNK):
            got += len(chunk)
    assert got == size, (got, size)


async def body(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CLIENT_CHUNK):
        yield data[start : start + CLIENT_CHUNK]


async def upload(http: aiohttp.ClientSession, gw: Server, data: bytes) -> dict[str, Any]:
    """A new source holding ``data`` (a streamed PUT with Content-Length)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{gw.url}/v1/sources", headers=auth) as resp:
        source: dict[str, Any] = await resp.json()
    headers = {"Content-Type": "application/gzip", "Content-Length": str(len(data))}
    async with http.put(source["upload_url"], data=body(data), headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 200 and answer["size"] == len(data), answer
    return source


# The gateway as configured by default (downloads spliced where both connections are plain TCP,
# as here), and with ``sources.download_splice: false`` (the body copied through the process).
SPLICED = "gateway (splice)"
COPIED = "gateway (copy)"
# server name -> [(seconds, server CPU seconds, moto CPU seconds)]
Samples = dict[str, list[tuple[float, float, float]]]


async def download_runs() -> Samples:
    samples: Samples = {name: [] for name in (SPLICED, COPIED, "nginx")}
    with s3_server("moto") as s3, contextlib.ExitStack() as stack:
        bucket = create_bucket(s3.url)
        gw = stack.enter_context(gateway(s3.url, bucket))
        copying = stack.enter_context(gateway(s3.url, bucket, download_splice=False))
        proxy = stack.enter_context(nginx(urlsplit(s3.url).port or 80))
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            source = await upload(http, gw, os.urandom(OBJECT_SIZE))
            s3_client = boto3.client(
                "s3", endpoint_url=s3.url, region_name="us-east-1", **CREDENTIALS
            )
            presigned = s3_client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": f"sources/{source['id']}"},
                ExpiresIn=3600,
            )
            through_nginx = urlunsplit(urlsplit(presigned)._replace(netloc=proxy.url[7:]))
            # The same signing secret: either gateway takes the other's token.
            copied = urlunsplit(urlsplit(source["download_url"])._replace(netloc=copying.url[7:]))
            urls = {
                SPLICED: (gw, source["download_url"]),
                COPIED: (copying, copied),
                "nginx": (proxy, through_nginx),
            }
            for _server, url in urls.values():  # warm up: connections, first-request work
                await fetch(http, url, OBJECT_SIZE)
            for run in range(RUNS):
                shift = run % len(urls)  # each takes each place in the order in turn
                order = list(urls)[shift:] + list(urls)[:shift]
                for name in order:
                    server, url = urls[name]
                    log(f"cpu per GiB: download {run + 1}/{RUNS} through {name}")
                    # moto runs a thread per request: its ended threads count in psutil's ticks.
                    before, moto = cpu(server), s3.cpu()
                    started = time.perf_counter()
                    await fetch(http, url, OBJECT_SIZE)
                    seconds = time.perf_counter() - started
                    samples[name].append((seconds, cpu(server) - before, s3.cpu() - moto))
    return samples


def download_section(samples: Samples) -> str:
    gib = OBJECT_SIZE / GiB
    rows = [
        "| through | MiB/s | serving process CPU s per GiB | moto CPU s per GiB |",
        "|---|---|---|---|",
    ]
    for name, values in samples.items():
        rate = spread([OBJECT_SIZE / MiB / s for s, _, _ in values])
        cpu = spread([c / gib for _, c, _ in values], _f2)
        moto = spread([m / gib for _, _, m in values], _f2)
        rows.append(f"| {name} | {rate} | {cpu} | {moto} |")
    rows.append("")
    for name, what in ((SPLICED, "The gateway"), (COPIED, "The gateway copying")):
        pairs = list(zip(samples[name], samples["nginx"], strict=True))
        cpu_ratio = [g[1] / n[1] for g, n in pairs]
        rate_ratio = [n[0] / g[0] for g, n in pairs]
        rows.append(
            f"{what} against nginx, run by run: CPU per GiB {spread(cpu_ratio, _x)} (target <="
            f" 1.5x), throughput {spread(rate_ratio, _x)} (target >= 0.9x)."
        )
    return "\n".join(rows)


def source_tree(tmp: Path) -> bytes:
    packages = Path(site.getsitepackages()[0])
    tree = packages / "botocore" if harness.QUICK else packages
    archive = tmp / "source.tar.gz"
    subprocess.run(
        ["tar", "-czf", str(archive), "-C", str(tree.parent), tree.name],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return archive.read_bytes()


def inflate_whole(data: bytes) -> None:
    igzip.decompress(data)


def inflate_stream(data: bytes) -> None:
    """ISA-L's own streaming inflater, fed and drained as the check is: no output is kept."""
    inflater = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    for start in range(0, len(data), FEED_CHUNK):
        inflater.decompress(data[start : start + FEED_CHUNK], OUT_CHUNK)
        while not inflater.needs_input and not inflater.eof:
            inflater.decompress(b"", OUT_CHUNK)


def inflate_zlib_api(data: bytes) -> None:
    """ISA-L through its zlib-compatible API, as the check calls it."""
    inflater = isal_zlib.decompressobj(31)
    for start in range(0, len(data), FEED_CHUNK):
        pending = data[start : start + FEED_CHUNK]
        while pending:
            inflater.decompress(pending, OUT_CHUNK)
            pending = inflater.unconsumed_tail


INFLATES = {
    "`igzip.decompress` (whole archive, one call)": inflate_whole,
    "`igzip_lib.IgzipDecompressor`, 64 KiB in, 256 KiB out": inflate_stream,
    "`isal_zlib.decompressobj`, 64 KiB in, 256 KiB out": inflate_zlib_api,
}


def cpu_of(call: Callable[[bytes], None], data: bytes) -> float:
    started = time.process_time()
    call(data)
    return time.process_time() - started


def check_in_process(data: bytes) -> None:
    """The whole check (``ArchiveInspector``) on ``data``, in this process."""
    inspector = ArchiveInspector(1 << 40, 1 << 30)
    for start in range(0, len(data), FEED_CHUNK):
        inspector.feed(data[start : start + FEED_CHUNK])
    inspector.finish()


# an inflate of INFLATES, "in process", "off", "enforce" -> CPU seconds, one per run
Archive = dict[str, list[float]]


async def archive_runs(data: bytes) -> Archive:
    results: Archive = {name: [] for name in [*INFLATES, "in process", "off", "enforce"]}
    with s3_server("sink") as sink, contextlib.ExitStack() as stack:
        bucket = create_bucket(sink.url)
        gateways = {
            mode: stack.enter_context(gateway(sink.url, bucket, archive_check=mode))
            for mode in ("off", "enforce")
        }
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for gw in gateways.values():  # warm up
                await upload(http, gw, data)
            for run in range(RUNS):
                log(f"cpu per GiB: archive check {run + 1}/{RUNS}")
                for name, inflate in INFLATES.items():
                    results[name].append(cpu_of(inflate, data))
                results["in process"].append(cpu_of(check_in_process, data))
                for mode, gw in gateways.items():
                    before = cpu(gw)
                    await upload(http, gw, data)
                    results[mode].append(cpu(gw) - before)
    return results


def archive_section(results: Archive, size: int) -> str:
    gib = size / GiB
    added = [e - o for e, o in zip(results["enforce"], results["off"], strict=True)]
    # The floor: the fastest of ISA-L's inflates, run by run.
    floor = [min(values) for values in zip(*(results[name] for name in INFLATES), strict=True)]
    per_gib = [f / gib for f in floor]
    rows = [
        "| what | CPU s per GiB of archive | against the ISA-L floor |",
        "|---|---|---|",
        f"| **the floor**: the fastest ISA-L inflate of the run | {spread(per_gib, _f2)} | 1 |",
    ]
    inflates = [(f"ISA-L inflate alone, {name}", results[name]) for name in INFLATES]
    for what, values in (
        *inflates,
        ("the whole check in one process (`ArchiveInspector`)", results["in process"]),
        ("the gateway, check off (upload only)", results["off"]),
        ("the gateway, check enforce", results["enforce"]),
        ("**what the check adds in the gateway** (enforce minus off)", added),
    ):
        ratios = [v / f for v, f in zip(values, floor, strict=True)]
        per_gib = spread([v / gib for v in values], _f2)
        rows.append(f"| {what} | {per_gib} | {spread(ratios, _x)} |")
    rows.append("")
    rows.append(
        "The target: what the check adds in the gateway at most 1.3x the ISA-L floor; here "
        f"{statistics.median(a / f for a, f in zip(added, floor, strict=True)):.2f}x (median)."
    )
    return "\n".join(rows)


def _f2(value: float) -> str:
    return f"{value:.2f}"


def _x(value: float) -> str:
    return f"{value:.2f}x"


def main(parts: list[str]) -> None:
    """Both parts, or only those named: ``download``, ``archive``."""
    parts = parts or ["download", "archive"]
    sections = []
    if "download" in parts:
        log("cpu per GiB: downloads")
        downloads = asyncio.run(download_runs())
        sections.append("Download hop:\n\n" + download_section(downloads) + "\n")
    size = 0
    if "archive" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            log("cpu per GiB: building the archive")
            data = source_tree(Path(tmp))
        size = len(data)
        archive = asyncio.run(archive_runs(data))
        sections.append("Archive check:\n\n" + archive_section(archive, size))
    print(
        header(
            "CPU per GiB against the floors: the download hop (nginx), the archive check (ISA-L)",
            f"Download: one {OBJECT_SIZE // MiB} MiB object of random bytes in moto, fetched"
            " through the gateway (`GET download_url`; spliced, as by default, and with"
            " `sources.download_splice: false`, copied) and through nginx"
            " (`bench/nginx-s3-proxy.conf`: `proxy_buffering off; proxy_buffer_size 1m`, one"
            " worker, keep-alive to S3) with a presigned URL, alternately, in the same run. CPU"
            " seconds are the serving process's own, all its threads (nginx: master and worker),"
            " from /proc in nanoseconds. Archive: a tar.gz (GNU tar, gzip -6) of this venv's"
            f" site-packages, {size / MiB:.0f} MiB, uploaded (streamed PUT) to the sink through a"
            " gateway with the check off and one with it on; ISA-L's inflate of the same bytes"
            f" runs in this process. Ratios are taken run by run; {RUNS} runs of each.",
        ).replace(f"{harness.RUNS} of each figure", f"{RUNS} of each figure")
    )
    print("\n".join(sections))


if __name__ == "__main__":
    main(sys.argv[1:])
