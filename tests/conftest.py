"""Shared fixtures: one real moto server per test run, a fresh bucket per test, real gateways.

Helpers that are not fixtures (constants, ``Gateway``, ``serve``) live in ``helpers.py``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import aiohttp.web_app
import moto.s3.models
import moto.s3.responses
import pytest
from moto.server import ThreadedMotoServer

from gateway.config import config_from_dict
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.outbound import Connections
from gateway.server.adapters.s3 import S3Store
from gateway.server.app import create_app
from gateway.server.domain.storage import ObjectStore

from .helpers import (
    DEPLOYMENTS_QUEUE,
    SMALL_PART,
    TOKEN,
    CliGateway,
    FakeClock,
    Gateway,
    ServedGateway,
    ServeGateway,
    Spawn,
    StartGateway,
    StoreUnderTest,
    config_dict,
    deep_merge,
    make_queue,
    moto_client,
    serve,
)
from .memory_store import MemoryStore
from .ports import free_port


@pytest.fixture(autouse=True)
def _forget_finished_apps() -> Iterator[None]:
    """Let each test's application (and its S3 clients and botocore models) be freed after it.

    aiohttp memoises middleware chains in a process-wide LRU cache keyed by the application
    (up to 1024 entries, private ``_cached_build_middleware``): with a new gateway per test it
    pinned every one of them, about 10 MB each, and the suite grew to 5 GB and spent a minute
    in the garbage collector at exit."""
    yield
    cache = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if cache is not None:
        cache.cache_clear()


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test may see the machine's AWS credentials or profiles."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _isolated_cli_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The CLI's resume state files go to a directory of the test's own, never the user's
    cache (nor the test's tmp_path, whose listing tests check)."""
    monkeypatch.setenv("GATEWAY_CACHE_DIR", str(tmp_path_factory.mktemp("cli-cache")))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    moto.s3.models.S3_UPLOAD_PART_MIN_SIZE = SMALL_PART  # type: ignore[attr-defined]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # The queue of the default configuration (deployments.forward), which readiness checks.
    moto_client("sqs", endpoint).create_queue(QueueName=DEPLOYMENTS_QUEUE)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def atomic_conditional_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's conditional writes atomic, as S3's are, for the tests that race writers.

    moto 5.2 honours If-None-Match and If-Match but checks the key and then writes it in two
    steps, each request on its own server thread: two writers racing for one key can both pass
    the check and both be told they created it, which S3 never does. One lock around each of
    moto's conditional writes, whole (PutObject; DeleteObject with If-Match; the POSTs on a key,
    CompleteMultipartUpload with If-None-Match among them), closes that window: moto runs in this
    process (ThreadedMotoServer)."""
    lock = threading.RLock()
    for name in ("put_object", "delete_object", "_key_response_post"):
        original = getattr(moto.s3.responses.S3Response, name)

        def atomic(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        monkeypatch.setattr(moto.s3.responses.S3Response, name, atomic)


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client on the moto server, for setting up and checking the bucket."""
    return moto_client("s3", moto_endpoint)


@pytest.fixture
def sqs(moto_endpoint: str) -> Any:
    """A plain boto3 SQS client on the moto server."""
    return moto_client("sqs", moto_endpoint)


@pytest.fixture
def queue_url(sqs: Any) -> Iterator[str]:
    """A fresh SQS queue on the moto server, deleted after the test: its URL."""
    url = make_queue(sqs)
    try:
        yield url
    finally:
        sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=name)


@pytest.fixture
def start_gateway(aiohttp_server: Any, moto_endpoint: str, bucket: str) -> StartGateway:
    """Start a real gateway on a free port; keyword arguments override config sections."""

    async def start(overrides: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
        port = free_port()
        data = deep_merge(config_dict(moto_endpoint, bucket, port), overrides or {})
        config = config_from_dict(data, env={})
        clock = FakeClock()
        access = io.StringIO()
        app = create_app(config, clock=clock, access_stream=lambda: access, **kwargs)
        server = await aiohttp_server(app, port=port)
        return Gateway(f"http://127.0.0.1:{port}", config, app, clock, server, access)

    return start


@pytest.fixture
def cli_gateway(
    start_gateway: StartGateway,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    sqs: Any,
    queue_url: str,
) -> CliGateway:
    """Start a gateway forwarding deployments to a fresh SQS queue on moto (given by name, so
    the forwarder looks its URL up), with the CLI's environment (``GATEWAY_API_URL``,
    ``GATEWAY_TOKEN``) pointing at it; keywords are more of the deployments section. Returns the
    gateway, the SQS client and the queue's URL."""

    async def start(**deployments: Any) -> tuple[Gateway, Any, str]:
        name = queue_url.rsplit("/", 1)[1]
        forward = {"type": "sqs", "queue": name, "endpoint_url": moto_endpoint, "retries": 0}
        gateway = await start_gateway({"deployments": {"forward": forward, **deployments}})
        monkeypatch.setenv("GATEWAY_API_URL", gateway.url)
        monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
        return gateway, sqs, queue_url

    return start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
def serve_gateway(moto_endpoint: str, bucket: str, tmp_path: Any) -> Iterator[ServeGateway]:
    """Start ``gateway serve`` as a child process on the test bucket; stopped after the test.

    Keyword ``overrides`` are merged into the configuration, as for ``start_gateway``. The child
    has moto's real 5 MiB part minimum: give it bodies with a Content-Length (one streamed PUT).
    """
    started: list[ServedGateway] = []

    def start(overrides: dict[str, Any] | None = None, name: str = "gateway") -> ServedGateway:
        port = free_port()
        data = deep_merge(config_dict(moto_endpoint, bucket, port), overrides or {})
        data["sources"]["allow_small_parts"] = False
        data["sources"]["part_size_bytes"] = 5 * 1024 * 1024
        served = serve(data, tmp_path, name)
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            served.stop()


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """``asyncio.create_subprocess_exec`` for a test: every child it started is killed (if still
    running) and reaped, its pipes read to the end and closed, when the test ends, passed or
    failed. A child left running holds its pipe transports open; the garbage collector then warns
    about them in whichever later test it runs, and that test fails (``filterwarnings = error``).
    """
    started: list[asyncio.subprocess.Process] = []

    async def start(*argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*argv, **kwargs)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()


@pytest.fixture(params=["memory", "s3"])
async def any_store(
    request: pytest.FixtureRequest, moto_endpoint: str, bucket: str
) -> AsyncIterator[StoreUnderTest]:
    """Each store implementation in turn (the conformance suite runs on all of them): the
    in-memory one of the unit tests, and ``S3Store`` with ``S3JsonObjects`` on a fresh bucket of
    the moto server."""
    if request.param == "memory":
        memory = MemoryStore()

        async def fetch_memory(url: str) -> tuple[bytes, str | None] | None:
            return memory.fetch(url)

        @contextlib.asynccontextmanager
        async def memory_down() -> AsyncIterator[ObjectStore]:
            down = MemoryStore()
            down.available = False
            yield down

        yield StoreUnderTest(memory, memory, fetch_memory, memory_down)
        return

    def s3_store(endpoint: str) -> tuple[Connections, S3Store]:
        data = config_dict(endpoint, bucket, free_port())
        data["storage"].update(connect_timeout=1, read_timeout=5)
        storage = config_from_dict(data, env={}).storage
        connections = Connections(storage)
        return connections, S3Store(connections, storage)

    async def fetch_s3(url: str) -> tuple[bytes, str | None] | None:
        async with aiohttp.ClientSession(auto_decompress=False) as http, http.get(url) as resp:
            if resp.status != 200:
                return None
            return await resp.read(), resp.headers.get("Content-Disposition")

    @contextlib.asynccontextmanager
    async def s3_down() -> AsyncIterator[ObjectStore]:
        connections, down = s3_store(f"http://127.0.0.1:{free_port()}")  # nothing listens
        async with connections.open():
            yield down

    connections, store = s3_store(moto_endpoint)
    objects = S3JsonObjects(connections, bucket)
    async with connections.open():
        yield StoreUnderTest(store, objects, fetch_s3, s3_down)


@pytest.fixture
async def demo_gateway(start_gateway: StartGateway, moto_endpoint: str, queue_url: str) -> Gateway:
    """A gateway running the local stand-in deployer (``deployments.demo_deployer``) on a fresh
    queue: a deployment goes to ``success`` (or ``build-error``) by itself, as with `make run`."""
    forward = {"type": "sqs", "queue": queue_url, "endpoint_url": moto_endpoint, "retries": 0}
    return await start_gateway({"deployments": {"forward": forward, "demo_deployer": True}})
