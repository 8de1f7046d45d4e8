"""The gateway's memory with 1,000 idle deployments streams (the WebSocket the platform's clients
follow deployments with), against the target of 64 MiB above idle.

Run as ``python bench/bench_streams.py`` with the python of the project's .venv. Starts a gateway
(``gateway serve``, embedded in-memory S3 and SQS on loopback) as a subprocess, reads its resident
set size (psutil) idle, then with 1,000 authenticated streams of one app open and quiet, then with
1,000 more streams of 1,000 different apps, then after all are closed. Prints one Markdown section
on stdout; exits 1 if 1,000 streams of one app cost more than the target. Loopback only, bounded
in time (about a minute).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import psutil

MIB = 1024 * 1024
STREAMS = 1000
TARGET = 64 * MIB
TOKEN = "bench-token-0123456789"
# Seconds the streams stay open before the gateway's memory is read: several looks at the bucket
# (poll_interval 1 s) and the replay have happened by then.
SETTLE_SECONDS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(directory: Path, port: int) -> Path:
    config = directory / "gateway.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}
auth: {{tokens: [{{name: bench, token: {TOKEN}, apps: ["*"]}}]}}
signing: {{secret_keys: ["bench-only-secret-key-0123456789"]}}
storage: {{bucket: bench, embedded: true, ensure_lifecycle: false}}
deployments: {{max_streams: {2 * STREAMS + 10}}}
logging: {{level: warning}}
"""
    )
    return config


def wait_ready(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the gateway did not start in time")
        time.sleep(0.1)


async def open_streams(
    session: aiohttp.ClientSession, base: str, apps: list[str]
) -> list[aiohttp.ClientWebSocketResponse]:
    async def one(app: str) -> aiohttp.ClientWebSocketResponse:
        ws = await session.ws_connect(f"{base}/v1/apps/{app}/deployments/stream")
        await ws.send_str(json.dumps({"type": "auth", "data": {"token": TOKEN}}))
        return ws

    streams = []
    for start in range(0, len(apps), 100):  # 100 handshakes at a time
        streams += await asyncio.gather(*(one(app) for app in apps[start : start + 100]))
    return streams


async def measure(port: int, process: psutil.Process) -> list[tuple[str, int]]:
    base = f"ws://127.0.0.1:{port}"
    rows = [("idle", process.memory_info().rss)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        one_app = await open_streams(session, base, ["bench-app"] * STREAMS)
        await asyncio.sleep(SETTLE_SECONDS)
        rows.append((f"{STREAMS} streams of one app", process.memory_info().rss))
        many_apps = await open_streams(session, base, [f"app-{i:04d}" for i in range(STREAMS)])
        await asyncio.sleep(SETTLE_SECONDS)
        rows.append((f"and {STREAMS} more, of {STREAMS} apps", process.memory_info().rss))
        open_now = sum(not ws.closed for ws in one_app + many_apps)
        for ws in one_app + many_apps:
            await ws.close()
    await asyncio.sleep(SETTLE_SECONDS)
    rows.append(("all closed", process.memory_info().rss))
    if open_now != 2 * STREAMS:
        raise SystemExit(f"only {open_now} of {2 * STREAMS} streams stayed open")
    return rows


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(write_config(workdir, port))],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", time.monotonic() + 60)
        time.sleep(2)  # the embedded server's first requests are behind it
        rows = asyncio.run(measure(port, psutil.Process(server.pid)))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    idle = rows[0][1]
    one_app = rows[1][1] - idle
    print(f"### Deployments streams: the gateway's memory with {STREAMS} idle WebSockets\n")
    print("Command: `python bench/bench_streams.py`\n")
    print(
        "One `gateway serve` (embedded in-memory S3 and SQS, loopback, the in-process moto server"
        " included in its RSS); each stream authenticated with its first frame, then quiet (a"
        " ping frame every 15 s). RSS read with psutil after the streams settled"
        f" ({SETTLE_SECONDS} s). Target: {STREAMS} streams under {TARGET // MIB} MiB above idle.\n"
    )
    print("| state | RSS | above idle |")
    print("|---|---|---|")
    for label, rss in rows:
        print(f"| {label} | {rss / MIB:.1f} MiB | {(rss - idle) / MIB:+.1f} MiB |")
    within = one_app <= TARGET
    print(
        f"\n{STREAMS} streams of one app: {one_app / STREAMS / 1024:.1f} KiB each,"
        f" {'within' if within else 'OVER'} the target."
    )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
