"""Resumable uploads (tus 1.0) beside the plain streamed PUT, on the same moto and the same bytes.

Per run, one after the other on one moto server: a plain ``PUT`` with a ``Content-Length`` (one
streamed S3 PUT), tus in one ``PATCH`` (creation, then the whole body: checked while it streams),
tus in 8 MiB ``PATCH``es on one instance, and the same 8 MiB ``PATCH``es alternating between two
instances (so completion reads the object back once to check it). Throughput is the client's wall
clock; CPU is the gateways' own (both, for the two-instance case), per GiB. The same on the sink
(``s3sink.py``: an S3 that keeps no bytes), where the store costs nearly nothing and the gateway's
own cost shows; and moto called directly, with no server between: the same bytes as one PutObject,
and as parts then their completion (what every multipart upload, and so every resumable one, pays
on moto).

Then the peers (``tus_peers``): the gateway, tusd v2.9.1 (S3 store) and @tus/server 2.x
(@tus/s3-store), each on the same moto, all sent to by tus-js-client 4.3.1 in one PATCH and in
8 MiB PATCHes: throughput, the server's CPU and moto's CPU per GiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import tus_peers
from harness import (
    CREDENTIALS,
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


PEER_KINDS = (
    "sources-gateway",
    "tusd v2.9.1 (S3 store)",
    "@tus/server 2.4.5 (@tus/s3-store 2.0.7)",
)
PEER_MODES = (("one PATCH", 0), ("8 MiB PATCHes", PATCH_SIZE))


async def peer_runs(http: aiohttp.ClientSession, s3: Server, results: Any) -> dict[str, str]:
    """Each available server in turn on moto, sent to by tus-js-client; what is missing, why."""
    why = tus_peers.missing()
    if "client" in why:
        return {kind: why["client"] for kind in PEER_KINDS}
    skipped = {PEER_KINDS[1]: why["tusd"]} if "tusd" in why else {}
    if "@tus/server" in why:
        skipped[PEER_KINDS[2]] = why["@tus/server"]
    for kind in PEER_KINDS:
        if kind in skipped:
            continue
        bucket = create_bucket(s3.url)
        with contextlib.ExitStack() as stack:
            if kind == PEER_KINDS[0]:
                server = stack.enter_context(gateway(s3.url, bucket))
            elif kind == PEER_KINDS[1]:
                server = stack.enter_context(tus_peers.tusd(s3.url, bucket))
            else:
                server = stack.enter_context(tus_peers.tus_node_server(s3.url, bucket))
            for _ in range(RUNS):
                for mode, chunk in PEER_MODES:
                    endpoint = f"{server.url}/files/"
                    if kind == PEER_KINDS[0]:
                        endpoint = (await create_source(http, server))["upload_url"]
                    cpu, moto = server.cpu(), s3.cpu()
                    seconds = await tus_peers.send(endpoint, SIZE, chunk)
                    gib = SIZE / GiB
                    figures = (SIZE / MiB / seconds, (server.cpu() - cpu) / gib)
                    results[(kind, mode)].append((*figures, (s3.cpu() - moto) / gib))
                    log(f"{kind}, {mode}: {figures[0]:.0f} MiB/s")
    return skipped


def print_peers(results: Any, skipped: dict[str, str]) -> None:
    print(
        header(
            "tus servers on S3, driven by the same client",
            f"{SIZE // MiB} MiB sent by tus-js-client 4.3.1 (bench/peers/tus_send.cjs) to each "
            "server, each on its own bucket of the same moto (bench/bench_resumable.py, "
            "bench/tus_peers.py). CPU: the server process's, and moto's, per GiB.",
        )
    )
    print("| server | how | MiB/s | server CPU s/GiB | moto CPU s/GiB |")
    print("|---|---|---|---|---|")
    for kind in PEER_KINDS:
        if kind in skipped:
            print(f"| {kind} | | not measured: {skipped[kind]} | | |")
            continue
        for mode, _ in PEER_MODES:
            rows = results[(kind, mode)]
            cpu = [r[1] for r in rows]
            moto = [r[2] for r in rows]
            print(
                f"| {kind} | {mode} | {spread([r[0] for r in rows])} | "
                f"{spread(cpu, lambda v: f'{v:.2f}')} | {spread(moto, lambda v: f'{v:.2f}')} |"
            )
    print()


def moto_direct(endpoint: str) -> tuple[float, float, float]:
    """Seconds moto takes, called directly with no server between, for ``SIZE`` bytes as one
    PutObject, as 8 MiB parts, and to complete those parts: what any server that stores parts
    pays on moto beside one that streams one PUT. No client-side checksums on either."""
    import boto3  # moto's dependency; a synchronous client is simplest here
    from botocore.config import Config

    config = Config(request_checksum_calculation="when_required")
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config, **CREDENTIALS
    )
    bucket = create_bucket(endpoint)
    part = PATTERN * (PATCH_SIZE // len(PATTERN))
    started = time.perf_counter()
    s3.put_object(Bucket=bucket, Key="one", Body=part * (SIZE // PATCH_SIZE))
    put = time.perf_counter() - started
    started = time.perf_counter()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                Bucket=bucket, Key="k", UploadId=upload, PartNumber=n, Body=part
            )["ETag"],
        }
        for n in range(1, SIZE // PATCH_SIZE + 1)
    ]
    sent = time.perf_counter()
    s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    return put, sent - started, time.perf_counter() - sent


async def measure(kind: str, results: Any, peers: Any) -> dict[str, str]:
    """The four ways on ``kind`` ("moto" or "sink"); on moto, the peers and moto's completion."""
    skipped: dict[str, str] = {}
    with s3_server(kind) as s3, contextlib.ExitStack() as stack:
        bucket = create_bucket(s3.url)
        a = stack.enter_context(gateway(s3.url, bucket))
        b = stack.enter_context(gateway(s3.url, bucket))
        timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(RUNS):
                await one_run(http, a, b, results[kind])
            if kind == "moto":
                skipped = await peer_runs(http, s3, peers)
        if kind == "moto":
            results["direct"] = [moto_direct(s3.url) for _ in range(RUNS)]
    return skipped


async def main() -> None:
    results: dict[str, Any] = {"moto": defaultdict(list), "sink": defaultdict(list)}
    peers: dict[Any, list[tuple[float, float, float]]] = defaultdict(list)
    skipped = await measure("moto", results, peers)
    await measure("sink", results, peers)
    print(
        header(
            "Resumable uploads (tus) beside the plain PUT",
            f"{SIZE // MiB} MiB through the gateway into moto, and into the sink, per way of "
            "sending it (bench/bench_resumable.py). Throughput is the client's; CPU the "
            "gateways' own.",
        )
    )
    print("| S3 | how | MiB/s | vs plain PUT | gateway CPU s per GiB |")
    print("|---|---|---|---|---|")
    for store in ("moto", "sink"):
        rows = results[store]
        base = sorted(r[0] for r in rows[KINDS[0]])[len(rows[KINDS[0]]) // 2]
        for kind in KINDS:
            speeds = [r[0] for r in rows[kind]]
            cpus = [r[1] for r in rows[kind]]
            median = sorted(speeds)[len(speeds) // 2]
            print(
                f"| {store} | {kind} | {spread(speeds)} | {median / base:.2f}x | "
                f"{spread(cpus, lambda v: f'{v:.2f}')} |"
            )
    print()
    direct = results["direct"]
    seconds = [spread([d[i] for d in direct], lambda v: f"{v:.2f} s") for i in range(3)]
    share = spread([d[2] / d[0] for d in direct], lambda v: f"{v:.2f}x")
    print(
        f"moto called directly (boto3, no server between, no checksums): {SIZE // MiB} MiB as "
        f"one PutObject {seconds[0]}; as 8 MiB parts sent one after another {seconds[1]}, then "
        f"their CompleteMultipartUpload {seconds[2]}, alone {share} of the whole PutObject. "
        "Every upload kept in parts (every resumable one, every tus server's) waits for that "
        "completion after its last byte; a plain PUT is done at its last byte."
    )
    print()
    print_peers(peers, skipped)


if __name__ == "__main__":
    asyncio.run(main())
