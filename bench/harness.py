"""What every benchmark here shares: servers in their own processes, sampling, statistics.

Everything listens on 127.0.0.1 only. S3 (moto's server or ``s3sink.py``) and the gateway each run
in a process of their own, so the gateway's CPU time and RSS are read from its process alone.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
MiB = 1024 * 1024
GiB = 1024 * MiB
TOKEN = "bench-api-token-123456"
SECRET = "bench-secret-key-0123456789"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
# Set BENCH_QUICK=1 for a fast smoke run of every script (fewer, smaller transfers).
QUICK = os.environ.get("BENCH_QUICK") == "1"
RUNS = 1 if QUICK else 3
_LOAD_AT_START = " ".join(f"{v:.2f}" for v in os.getloadavg())


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("aiohttp", "aiobotocore", "moto", "uvloop")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / GiB:.0f} GiB, "
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}; "
        f"{versions}"
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def has_uvloop() -> bool:
    return _version("uvloop") != "not installed"


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def header(title: str, what: str) -> str:
    return (
        f"### {title}\n\n{what}\n\n"
        f"- command: `{command_line()}` (all of them: `make bench`)\n"
        f"- machine: {machine()}\n"
        f"- runs: {RUNS} of each figure, shown as median (min-max)\n"
        f"- load average when the script started: {_LOAD_AT_START} (other work on the "
        "machine at the same time makes wall-clock figures noisier than CPU-time ones)\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        """CPU seconds of the process and of its live children (the workers of
        ``gateway serve --workers N``)."""
        total = 0.0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)


@contextlib.contextmanager
def process(name: str, argv: Sequence[str], port: int) -> Iterator[Server]:
    proc = subprocess.Popen(
        list(argv), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc)
        yield Server(name, f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def s3_server(kind: str) -> Iterator[Server]:
    """moto's server (``moto``) or the sink (``sink``), in a process of its own."""
    port = free_port()
    if kind == "moto":
        argv = [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        argv = [PY, str(BENCH / "s3sink.py"), "--port", str(port)]
    with process(kind, argv, port) as server:
        yield server


def create_bucket(endpoint: str) -> str:
    import boto3  # moto's dependency; a synchronous client is simplest for set-up

    name = f"bench-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
    s3.create_bucket(Bucket=name)
    return name


def gateway_config(
    endpoint: str, bucket: str, port: int, workers: int = 1, **sources: Any
) -> dict[str, Any]:
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "workers": workers,
        },
        "auth": {"tokens": [{"name": "bench", "token": TOKEN, "apps": ["*"]}]},
        "signing": {"secret_keys": [SECRET]},
        # The transfer figures move arbitrary bytes: the archive check is off unless a bench turns
        # it on (bench_archive_check.py measures what it costs).
        "sources": {"max_size_bytes": 4 * GiB, "archive_check": "off", **sources},
        "storage": {
            "bucket": bucket,
            "endpoint_url": endpoint,
            "access_key_id": CREDENTIALS["aws_access_key_id"],
            "secret_access_key": CREDENTIALS["aws_secret_access_key"],
            "ensure_lifecycle": False,
        },
        # The production default: one JSON access log line per request (here to /dev/null).
        "logging": {"level": "info", "json": True},
    }


@contextlib.contextmanager
def gateway(
    endpoint: str, bucket: str, *, loop: str = "asyncio", workers: int = 1, **sources: Any
) -> Iterator[Server]:
    """``gateway serve --config FILE`` in a process of its own (with ``workers`` processes).

    ``loop="uvloop"`` runs the same command on uvloop's event loop instead of asyncio's."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        config = gateway_config(endpoint, bucket, port, workers, **sources)
        path.write_text(yaml.safe_dump(config))
        if loop == "uvloop":
            code = (
                "import asyncio, sys, uvloop;"
                "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy());"
                "from gateway.__main__ import main; sys.exit(main())"
            )
            argv = [PY, "-W", "ignore::DeprecationWarning", "-c", code]
            argv += ["serve", "--config", str(path)]
        else:
            argv = [PY, "-m", "gateway", "serve", "--config", str(path)]
        with process("gateway", argv, port) as server:
            yield server


class PeakRss:
    """Samples a process's RSS in a thread every ``interval`` seconds; ``peak`` is the highest."""

    def __init__(self, server: Server, interval: float = 0.01) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = server.rss()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self._server.rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self._server.rss())


def spread(values: Sequence[float], fmt: Callable[[float], str] = lambda v: f"{v:.0f}") -> str:
    """``median (min-max)`` of ``values``."""
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt(median)
    return f"{fmt(median)} ({fmt(min(values))}-{fmt(max(values))})"


def mib(value: float) -> str:
    return f"{value / MiB:.0f} MiB"


def log(message: str) -> None:
    """Progress goes to stderr; stdout is only the Markdown section."""
    print(message, file=sys.stderr, flush=True)
