"""Figure 1c: ``POST /v1/sources`` requests per second, one gateway process vs a bare handler.

The load client is this process: ``CONNECTIONS`` keep-alive connections on a bare asyncio
protocol (far cheaper per request than an HTTP client library), each sending requests back to
back for ``DURATION`` seconds (after a short warm-up). The server's CPU use over
the same window (its process's user+system seconds / wall seconds) tells whether the server or the
client was the limit: near 100% means the one core the server can use was saturated.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from harness import (
    BENCH,
    PY,
    QUICK,
    RUNS,
    TOKEN,
    Server,
    create_bucket,
    free_port,
    gateway,
    has_uvloop,
    header,
    log,
    process,
    s3_server,
    spread,
)

CONNECTIONS = 32
DURATION = 2.0 if QUICK else 5.0
WARMUP = 1.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending the same request again as soon as an answer is whole.

    Parsing is the least that counts answers right (status line, Content-Length), so the client
    costs far less CPU per request than the servers it measures."""

    def __init__(self, request: bytes, deadline: float, done: asyncio.Future[None]) -> None:
        self.request = request
        self.deadline = deadline
        self.done = done
        self.count = 0
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            found = _LENGTH.search(head)
            length = int(found.group(1)) if found else 0
            if len(self.buffer) < end + 4 + length:
                return
            if not head.startswith(b"HTTP/1.1 201"):
                self._finish(RuntimeError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.count += 1
            if time.perf_counter() >= self.deadline:
                self._finish(None)
                return
            assert self.transport is not None
            self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or RuntimeError("connection closed"))

    def _finish(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


async def load(port: int, seconds: float) -> int:
    """Requests completed in ``seconds`` over ``CONNECTIONS`` connections."""
    request = (
        "POST /v1/sources HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds
    connections = []
    for _ in range(CONNECTIONS):
        done: asyncio.Future[None] = loop.create_future()
        _, protocol = await loop.create_connection(
            lambda done=done: _Connection(request, deadline, done), "127.0.0.1", port
        )
        connections.append(protocol)
    await asyncio.gather(*(c.done for c in connections))
    return sum(c.count for c in connections)


def measure(server: Server) -> tuple[float, float, float]:
    """(requests per second, server CPU utilisation, server CPU seconds per request)."""
    port = int(server.url.rsplit(":", 1)[1])
    asyncio.run(load(port, WARMUP))
    cpu, started = server.cpu(), time.perf_counter()
    count = asyncio.run(load(port, DURATION))
    wall = time.perf_counter() - started
    used = server.cpu() - cpu
    return count / wall, used / wall, used / count


def bare() -> AbstractContextManager[Server]:
    port = free_port()
    return process("bare", [PY, str(BENCH / "bare_app.py"), "--port", str(port)], port)


def main() -> None:
    variants: dict[str, Callable[[str, str], AbstractContextManager[Server]]] = {
        "bare aiohttp handler": lambda endpoint, bucket: bare(),
        "gateway": lambda endpoint, bucket: gateway(endpoint, bucket),
    }
    if has_uvloop():
        variants["gateway on uvloop"] = lambda endpoint, bucket: gateway(
            endpoint, bucket, loop="uvloop"
        )
    rates: dict[str, list[float]] = {name: [] for name in variants}
    loads: dict[str, list[float]] = {name: [] for name in variants}
    costs: dict[str, list[float]] = {name: [] for name in variants}
    with s3_server("sink") as s3:
        bucket = create_bucket(s3.url)
        for run in range(RUNS):
            for name, start in variants.items():
                log(f"create: {name} run {run + 1}/{RUNS}")
                with start(s3.url, bucket) as server:
                    rate, busy, cost = measure(server)
                rates[name].append(rate)
                loads[name].append(busy)
                costs[name].append(cost)

    base = rates["bare aiohttp handler"]
    lines = [
        header(
            "1c. `POST /v1/sources` requests per second",
            f"One server process; the load client (a minimal asyncio HTTP/1.1 client, "
            f"{CONNECTIONS} keep-alive connections, {DURATION:.0f} s per run after "
            f"{WARMUP:.0f} s of warm-up) runs "
            "beside it on the same 2 cores. `ratio` is against the bare handler in the same run "
            "(target >= 0.5). The gateway does everything it does in production: API token "
            "check, two itsdangerous signatures, the JSON access log line, metrics. Server CPU "
            "per request (its process's CPU seconds / requests) does not depend on what else "
            "the machine runs; requests/s does.",
        ),
        "| server | requests/s | ratio to bare | server CPU use | server CPU per request "
        "| CPU ratio (bare / this) |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        cpu_ratios = [
            b / v for v, b in zip(costs[name], costs["bare aiohttp handler"], strict=True)
        ]
        lines.append(
            f"| {name} | {spread(values)} | {spread(ratios, lambda v: f'{v:.2f}')} "
            f"| {spread(loads[name], lambda v: f'{v:.0%}')} "
            f"| {spread([c * 1e6 for c in costs[name]], lambda v: f'{v:.0f} us')} "
            f"| {spread(cpu_ratios, lambda v: f'{v:.2f}')} |"
        )
    print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
