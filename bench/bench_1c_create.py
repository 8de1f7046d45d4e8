"""Figure 1c: ``POST /v1/sources`` requests per second, one gateway process vs a bare handler.

The load generator is wrk (``CONNECTIONS`` keep-alive connections, one thread), the same for both
servers and in the same run, one server right after the other. The server's CPU use over the
same window (its process's user+system seconds / wall seconds) tells whether the server or the
rest of the machine was the limit. wrk is installed when missing and root with apt-get
(``bench/ensure-tools``, run by ``make bench``); without it this figure is skipped, and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

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
DURATION = 2 if QUICK else 5
WARMUP = 1
# wrk's request: POST with the API token and an empty JSON body, as `gateway sources create`.
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {TOKEN}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = ""
"""
_RATE = re.compile(r"Requests/sec:\s*([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")


def wrk(url: str, seconds: int, script: Path) -> float:
    """Requests per second wrk reached against ``url`` in ``seconds``; every answer a 2xx."""
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if failed := _NON_2XX.search(out):
        raise RuntimeError(f"{failed.group(1)} answers were not 2xx:\n{out}")
    found = _RATE.search(out)
    if found is None:
        raise RuntimeError(f"no rate in wrk's output:\n{out}")
    return float(found.group(1))


def measure(server: Server, script: Path) -> tuple[float, float, float]:
    """(requests per second, server CPU utilisation, server CPU seconds per request)."""
    url = f"{server.url}/v1/sources"
    wrk(url, WARMUP, script)
    cpu, started = server.cpu(), time.perf_counter()
    rate = wrk(url, DURATION, script)
    wall = time.perf_counter() - started
    used = server.cpu() - cpu
    return rate, used / wall, used / (rate * DURATION)


def bare() -> AbstractContextManager[Server]:
    port = free_port()
    return process("bare", [PY, str(BENCH / "bare_app.py"), "--port", str(port)], port)


def main() -> None:
    if shutil.which("wrk") is None:
        print(
            "### 1c. `POST /v1/sources` requests per second\n\n"
            "skipped: wrk is not installed (`apt-get install wrk`; `make bench` installs it when "
            "run as root).\n"
        )
        return
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
    with s3_server("sink") as s3, tempfile.TemporaryDirectory() as tmp:
        bucket = create_bucket(s3.url)
        script = Path(tmp) / "create.lua"
        script.write_text(WRK_SCRIPT)
        for run in range(RUNS):
            for name, start in variants.items():
                log(f"create: {name} run {run + 1}/{RUNS}")
                with start(s3.url, bucket) as server:
                    rate, busy, cost = measure(server, script)
                rates[name].append(rate)
                loads[name].append(busy)
                costs[name].append(cost)

    base = rates["bare aiohttp handler"]
    lines = [
        header(
            "1c. `POST /v1/sources` requests per second",
            f"One server process; the load generator, wrk ({CONNECTIONS} keep-alive "
            f"connections, one thread, {DURATION} s per run after {WARMUP} s of warm-up), runs "
            "beside it on the same 2 cores, against each server in turn within the same run. "
            "`ratio` is against the bare handler in the same run (target >= 0.5). The machine "
            "is shared with other work, so requests/s spread widely from run to run; the "
            "same-run ratio and the server CPU per request (its process's CPU seconds / "
            "requests) are the figures to read. The gateway does everything it does in "
            "production: API token check, two signed tokens, the JSON access log line, metrics.",
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
