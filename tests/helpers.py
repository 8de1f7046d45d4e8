"""Shared test helpers: constants, the gateway configuration on moto, and ``gateway serve``.

Fixtures are in ``conftest.py``; test modules import helpers from here and from nowhere else in
tests/ (no test module imports another)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config
from gateway.server import keys
from gateway.server.domain.storage import JsonObjects, ObjectStore

SECRET = "test-secret-key-0123456789"
TOKEN = "test-api-token-1234"
LIMITED_TOKEN = "limited-api-token-5678"
MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Tests use small parts; the moto server is told the same minimum, so it still refuses any
# non-last part shorter than that, as S3 does with its 5 MiB.
SMALL_PART = 64 * 1024
# The queue of the default test configuration (deployments.forward), which readiness checks;
# created on the moto server once per session.
DEPLOYMENTS_QUEUE = "deployments"


class FakeClock:
    """Real time plus an offset the test moves: expiry without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def tampered(token: str) -> str:
    """``token`` with one character of its signature changed: the last but one. Not the last: the
    base64 of a 20-byte HMAC ends in a character that carries 4 bits and 2 of padding, which a
    decoder ignores, so ``token[:-2] + "xx"`` decodes to the token's own signature for about one
    token in a thousand (one ending in "xw")."""
    other = "A" if token[-2] != "A" else "B"
    return token[:-2] + other + token[-1]


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_dict(moto_endpoint: str, bucket: str, port: int) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"},
        "auth": {
            "tokens": [
                {"name": "ci", "token": TOKEN, "apps": ["*"]},
                {"name": "limited", "token": LIMITED_TOKEN, "apps": ["my-app"]},
            ]
        },
        "signing": {"secret_keys": [SECRET]},
        "sources": {
            "part_size_bytes": SMALL_PART,
            "allow_small_parts": True,
            "max_size_bytes": 8 * 1024 * 1024,
            # Most tests move arbitrary bytes; the archive check has its own tests, which turn
            # it on (test_archive_upload.py), as the default config does.
            "archive_check": "off",
        },
        "storage": {
            "bucket": bucket,
            "endpoint_url": moto_endpoint,
            "access_key_id": MOTO_CREDENTIALS["aws_access_key_id"],
            "secret_access_key": MOTO_CREDENTIALS["aws_secret_access_key"],
            "ensure_lifecycle": False,
            "max_attempts": 1,
            "connect_timeout": 2,
            "read_timeout": 10,
        },
        "deployments": {
            "forward": {"type": "sqs", "queue": DEPLOYMENTS_QUEUE, "endpoint_url": moto_endpoint}
        },
        "logging": {"level": "debug", "json": True},
    }


# How long a test waits for the gateway to reach the state it checks before failing.
SETTLE_SECONDS = 30


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, at most ``SETTLE_SECONDS``: the gateway gets there."""
    for _ in range(SETTLE_SECONDS * 50):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway never got there")


async def create_source(http: aiohttp.ClientSession, base_url: str) -> dict[str, Any]:
    """``POST /v1/sources`` on the gateway at ``base_url`` with ``TOKEN``: the new source."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{base_url}/v1/sources", headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def uploaded_source(
    http: aiohttp.ClientSession, base_url: str, data: bytes
) -> dict[str, Any]:
    """A new source with ``data`` uploaded to it in one PUT (with a Content-Length)."""
    source = await create_source(http, base_url)
    # aiohttp warns of a large bytes body (it would be written at once); a file is streamed.
    async with http.put(source["upload_url"], data=io.BytesIO(data)) as resp:
        assert resp.status == 200, await resp.text()
    return source


@dataclass
class Gateway:
    url: str
    config: Config
    app: web.Application
    clock: FakeClock
    server: TestServer
    access: io.StringIO  # where the access log writes

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def create_source(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        return await create_source(http, self.url)

    async def uploaded_source(self, http: aiohttp.ClientSession, data: bytes) -> dict[str, Any]:
        return await uploaded_source(http, self.url, data)

    def access_lines(self) -> list[dict[str, Any]]:
        """Every access line written so far (buffered ones included), parsed."""
        self.app[keys.ACCESS_LOG].flush()
        return [json.loads(line) for line in self.access.getvalue().splitlines()]


StartGateway = Callable[..., Awaitable[Gateway]]
# The ``cli_gateway`` fixture: (gateway, SQS client, queue URL) from deployments keywords.
CliGateway = Callable[..., Awaitable[tuple[Gateway, Any, str]]]


def stored(s3: Any, gateway: Gateway, source: dict[str, Any]) -> bytes | None:
    """The bytes S3 holds for ``source``, or None if there is no object."""
    key = f"{gateway.config.storage.prefix}{source['id']}"
    try:
        obj = s3.get_object(Bucket=gateway.config.storage.bucket, Key=key)
    except s3.exceptions.NoSuchKey:
        return None
    data: bytes = obj["Body"].read()
    return data


def open_uploads(s3: Any, gateway: Gateway) -> list[Any]:
    uploads: list[Any] = s3.list_multipart_uploads(Bucket=gateway.config.storage.bucket).get(
        "Uploads", []
    )
    return uploads


async def raw_status_line(host: str, port: int, request: str) -> bytes:
    """Send ``request`` as it is on a new connection: the first line of the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request.encode())
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    """``data`` as an async body in pieces of ``size`` bytes (a chunked upload)."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def moto_client(service: str, moto_endpoint: str) -> Any:
    """A plain boto3 client of ``service`` (s3, sqs...) on the moto server."""
    return boto3.client(
        service, endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )


def make_queue(sqs: Any, fifo: bool = False) -> str:
    """A new SQS queue (FIFO if ``fifo``) with a unique name; its URL."""
    name = f"deploy-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true"} if fifo else {}
    url: str = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def sqs_forward(queue: str, endpoint: str) -> dict[str, Any]:
    """The deployments section for an SQS forwarder on the moto server."""
    return {"forward": {"type": "sqs", "queue": queue, "endpoint_url": endpoint}}


# --- ``gateway serve`` as a real process: the CLI, its logging setup and its signal handling ---

# The console script of the venv the tests run in: the one `pip install -e .` made.
GATEWAY_BIN = Path(sys.executable).parent / "gateway"
START_TIMEOUT = 30.0


@dataclass
class ServedGateway:
    """A ``gateway serve --config FILE`` child process and where its stderr goes."""

    proc: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of the log, each parsed as JSON (a line that is not JSON fails the test)."""
        records = []
        for line in self.log_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15
) -> None:
    """Send ``sig`` to ``proc`` and wait ``timeout`` seconds for it to end; else kill it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serve(
    config: dict[str, Any],
    workdir: Path,
    name: str = "gateway",
    env: dict[str, str] | None = None,
) -> ServedGateway:
    """Write ``config`` as YAML, start ``gateway serve`` on it, return once ``/healthz`` is 200."""
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = workdir / f"{name}.log"
    server = config["server"]
    url = f"http://{server['host']}:{server['port']}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(GATEWAY_BIN), "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    served = ServedGateway(proc, url, config_path, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited {proc.returncode}:\n{served.log_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return served
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"gateway did not start:\n{served.log_text()}")
        time.sleep(0.1)


ServeGateway = Callable[..., ServedGateway]


@dataclass
class StoreUnderTest:
    """One ``ObjectStore`` implementation as the conformance suite sees it (``any_store``)."""

    store: ObjectStore
    # The JSON objects of the same bucket (S3JsonObjects beside S3Store).
    objects: JsonObjects
    # What a plain GET of a presign_get URL answers: the body and its Content-Disposition, or
    # None if refused.
    fetch: Callable[[str], Awaitable[tuple[bytes, str | None] | None]]
    # The same kind of store with its backend out of reach.
    unreachable: Callable[[], contextlib.AbstractAsyncContextManager[ObjectStore]]


# The ``spawn`` fixture: ``asyncio.create_subprocess_exec`` with the child reaped after the test.
Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


# --- the platform's own clients, installed by .ci/platform-clients (`make test`'s tool step) ---

TOOLS_DIR = Path(os.environ.get("GATEWAY_TOOLS_DIR") or Path.home() / ".cache/sources-gateway")
PLATFORM_CLIENTS = Path(__file__).parent / "platform_clients"
# The platform CLI's release 1.48.0 (the commit .ci/platform-clients builds).
CLI_COMMIT = "a7c67f9d99cdbcb0147f13a29aad6a545f6e7853"
ON_CI = os.environ.get("CI") == "true"


def missing_peer(message: str) -> None:
    """A peer program the test needs is missing: a failure on CI, a skip elsewhere."""
    if ON_CI:
        pytest.fail(message)
    pytest.skip(message)


def npm_client_modules() -> Path:
    """The ``node_modules`` holding the pinned npm client (``scalingo``), or the test ends."""
    if shutil.which("node") is None:
        missing_peer("node is not installed: the platform's npm client cannot run")
    lock = (PLATFORM_CLIENTS / "package-lock.json").read_bytes()
    modules = TOOLS_DIR / f"node-{hashlib.sha256(lock).hexdigest()[:16]}" / "node_modules"
    if not (modules / "scalingo").is_dir():
        missing_peer(f"the npm client is not installed in {modules}: run `make test-tools`")
    return modules


def platform_cli() -> Path:
    """The platform's CLI binary (``SCALINGO_CLI``, or the one the tool step built), or the test
    ends: skipped without Go, or when the Go module proxy refused the CLI's module (said why)."""
    given = os.environ.get("SCALINGO_CLI")
    if given:
        return Path(given)
    built = TOOLS_DIR / "go-bin" / f"scalingo-{CLI_COMMIT}"
    if built.is_file():
        return built
    if shutil.which("go") is None:
        pytest.skip("no Go on this machine: the platform's CLI is not built (Node's client is)")
    refused = built.with_name(built.name + ".unavailable")
    if refused.is_file():
        last = refused.read_text(errors="replace").strip().splitlines()[-2:]
        pytest.skip("the Go module proxy does not serve the platform's CLI here: " + " ".join(last))
    missing_peer(f"Go is present but the platform's CLI is not built in {built.parent}")
    raise AssertionError("unreachable")
