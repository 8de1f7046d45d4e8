"""Shared fixtures: one real moto server per test run, a fresh bucket per test, real gateways."""

from __future__ import annotations

import copy
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import boto3
import moto.s3.models
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port
from moto.server import ThreadedMotoServer

from gateway.config import Config, config_from_dict
from gateway.server.app import create_app

from .processes import ServedGateway, serve

SECRET = "test-secret-key-0123456789"
TOKEN = "test-api-token-1234"
LIMITED_TOKEN = "limited-api-token-5678"
MOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Tests use small parts; the moto server is told the same minimum, so it still refuses any
# non-last part shorter than that, as S3 does with its 5 MiB.
SMALL_PART = 64 * 1024


class FakeClock:
    """Real time plus an offset the test moves: expiry without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test may see the machine's AWS credentials or profiles."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    moto.s3.models.S3_UPLOAD_PART_MIN_SIZE = SMALL_PART  # type: ignore[attr-defined]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client on the moto server, for setting up and checking the bucket."""
    return boto3.client(
        "s3", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
        s3.delete_bucket(Bucket=name)


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
        "logging": {"level": "debug", "json": True},
    }


@dataclass
class Gateway:
    url: str
    config: Config
    app: web.Application
    clock: FakeClock
    server: TestServer

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def create_source(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.post(f"{self.url}/v1/sources", headers=self.auth) as resp:
            assert resp.status == 201, await resp.text()
            body: dict[str, Any] = await resp.json()
            return body


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def start_gateway(aiohttp_server: Any, moto_endpoint: str, bucket: str) -> StartGateway:
    """Start a real gateway on a free port; keyword arguments override config sections."""

    async def start(overrides: dict[str, Any] | None = None, **kwargs: Any) -> Gateway:
        port = unused_port()
        data = deep_merge(config_dict(moto_endpoint, bucket, port), overrides or {})
        config = config_from_dict(data, env={})
        clock = FakeClock()
        app = create_app(config, clock=clock, **kwargs)
        server = await aiohttp_server(app, port=port)
        return Gateway(f"http://127.0.0.1:{port}", config, app, clock, server)

    return start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


ServeGateway = Callable[..., ServedGateway]


@pytest.fixture
def serve_gateway(moto_endpoint: str, bucket: str, tmp_path: Any) -> Iterator[ServeGateway]:
    """Start ``gateway serve`` as a child process on the test bucket; stopped after the test.

    Keyword ``overrides`` are merged into the configuration, as for ``start_gateway``. The child
    has moto's real 5 MiB part minimum: give it bodies with a Content-Length (one streamed PUT).
    """
    started: list[ServedGateway] = []

    def start(overrides: dict[str, Any] | None = None, name: str = "gateway") -> ServedGateway:
        port = unused_port()
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
