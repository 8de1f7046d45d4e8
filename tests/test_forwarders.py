"""The http forwarder against a real local deployer (an aiohttp server); the forwarders' parts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Config, ConfigError, config_from_dict
from gateway.server.adapters.aws import sqs_client_kwargs
from gateway.server.adapters.deployments.forwarders import signature
from gateway.server.domain.deployments.jobs import Job

from .helpers import Gateway, StartGateway
from .ports import free_port

DEPLOYER_SECRET = "deployer-shared-secret-0123"
PUBLIC_URL = "https://archives.example.com/app.tar.gz"
BODY = {"deployment": {"git_ref": "v1.2.3", "download_url": PUBLIC_URL}}


async def public_dns(host: str) -> Sequence[str]:
    return ["93.184.216.34"]


@dataclass
class Seen:
    headers: dict[str, str]
    body: bytes


@dataclass
class Deployer:
    """A deployer that records every request and answers as a test scripts it."""

    fail_times: int = 0  # the first N requests get a 500
    status: int = 202
    answer: bytes = b""
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(Seen(dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if len(self.seen) <= self.fail_times:
            return web.Response(status=500, text="internal error")
        return web.Response(status=self.status, body=self.answer, content_type="application/json")


@pytest.fixture
async def deployer(aiohttp_server: Any) -> Deployer:
    state = Deployer()
    app = web.Application()
    app.router.add_post("/jobs", state.handle)
    server: TestServer = await aiohttp_server(app)
    state.url = str(server.make_url("/jobs"))
    return state


def http_forward(url: str, **extra: Any) -> dict[str, Any]:
    forward = {
        "type": "http",
        "url": url,
        "secret": DEPLOYER_SECRET,
        "timeout": 2,
        "retries": 3,
        "backoff_seconds": 0.01,
    }
    return {"deployments": {"forward": {**forward, **extra}}}


async def start(start_gateway: StartGateway, url: str, **extra: Any) -> Gateway:
    return await start_gateway(http_forward(url, **extra), resolver=public_dns)


async def post(http: aiohttp.ClientSession, gateway: Gateway) -> tuple[int, Any]:
    url = f"{gateway.url}/v1/apps/my-app/deployments"
    async with http.post(url, json=BODY, headers=gateway.auth) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()


async def deployed(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession, **extra: Any
) -> tuple[Gateway, Any]:
    """A gateway forwarding to ``deployer`` takes one deployment (201): it, and its answer."""
    gateway = await start(start_gateway, deployer.url, **extra)
    status, body = await post(http, gateway)
    assert status == 201, body
    return gateway, body


def assert_signed(seen: Seen) -> dict[str, Any]:
    """The request is signed with the shared secret over its exact bytes; return the job."""
    expected = "sha256=" + hmac.new(DEPLOYER_SECRET.encode(), seen.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(seen.headers["X-Gateway-Signature"], expected)
    assert seen.headers["Content-Type"] == "application/json"
    job: dict[str, Any] = json.loads(seen.body)
    assert seen.headers["Idempotency-Key"] == job["id"]
    return job


async def test_job_is_signed_and_the_gateways_record_is_the_answer(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    answer = {"deployment": {"id": "dep-42", "app_id": "my-app", "status": "queued"}}
    deployer.status, deployer.answer = 202, json.dumps(answer).encode()
    _, body = await deployed(start_gateway, deployer, http)
    (seen,) = deployer.seen
    job = assert_signed(seen)
    # The deployer's own body is not passed through: the answer is the gateway's record.
    assert body["deployment"]["id"] == job["id"] != "dep-42"
    assert body["deployment"]["pusher"] == {"id": "ci", "username": "ci", "email": "", "name": "ci"}
    assert job["app"] == "my-app"
    assert job["git_ref"] == "v1.2.3"
    assert job["download_url"] == PUBLIC_URL
    assert job["requested_by"] == "ci"


async def test_signature_fails_with_another_secret(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    gateway = await start(start_gateway, deployer.url, secret="some-other-secret-9876")
    await post(http, gateway)
    (seen,) = deployer.seen
    with pytest.raises(AssertionError):
        assert_signed(seen)


async def test_empty_2xx_answer_gives_our_deployment_object(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    deployer.status = 204
    gateway, body = await deployed(start_gateway, deployer, http)
    job = assert_signed(deployer.seen[0])
    assert body == {
        "deployment": {
            "id": job["id"],
            "app_id": "my-app",
            "created_at": job["created_at"],
            "finished_at": None,
            "status": "queued",
            "git_ref": "v1.2.3",
            "type": "archive",
            "source_url": PUBLIC_URL,
            "postdeploy_hook": None,
            "pusher": {"id": "ci", "username": "ci", "email": "", "name": "ci"},
            "duration": None,
            "links": {
                "output": f"{gateway.url}/v1/apps/my-app/deployments/{job['id']}/output",
            },
        }
    }


async def test_5xx_is_retried_with_the_same_key_and_body(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    deployer.fail_times = 2
    await deployed(start_gateway, deployer, http)
    assert len(deployer.seen) == 3
    assert len({s.headers["Idempotency-Key"] for s in deployer.seen}) == 1
    assert len({s.body for s in deployer.seen}) == 1
    for seen in deployer.seen:
        assert_signed(seen)


async def test_retries_run_out_502(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    deployer.fail_times = 100
    gateway = await start(start_gateway, deployer.url, retries=2)
    status, body = await post(http, gateway)
    assert status == 502
    assert set(body) == {"error"}
    assert "HTTP 500" in body["error"]
    assert len(deployer.seen) == 3


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (
            422,
            b'{"errors": {"git_ref": ["unknown ref"]}}',
            {"errors": {"git_ref": ["unknown ref"]}},
        ),
        (409, b'{"error": "a deployment is running"}', {"error": "a deployment is running"}),
        (
            404,
            b"<html>no such app</html>",
            {"error": "the deployer refused the deployment (HTTP 404)"},
        ),
    ],
)
async def test_4xx_is_relayed_without_retry(
    start_gateway: StartGateway,
    deployer: Deployer,
    http: aiohttp.ClientSession,
    status: int,
    answer: bytes,
    expected: dict[str, Any],
) -> None:
    deployer.status, deployer.answer = status, answer
    gateway = await start(start_gateway, deployer.url)
    assert await post(http, gateway) == (status, expected)
    assert len(deployer.seen) == 1


async def test_deployer_refusing_the_gateway_is_502(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    # A 401 is about the gateway's credentials, not the user's: relaying it would mislead.
    deployer.status = 401
    gateway = await start(start_gateway, deployer.url)
    assert await post(http, gateway) == (
        502,
        {"error": "the deployer refused the gateway's request"},
    )


async def test_deployer_down_is_502_after_retries(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start(
        start_gateway, f"http://127.0.0.1:{free_port()}/jobs", retries=2, backoff_seconds=0.1
    )
    started = time.monotonic()
    status, body = await post(http, gateway)
    assert status == 502
    assert "ClientConnectorError" in body["error"] and "3 attempts" in body["error"]
    # Two backoffs of 0.1 s and 0.2 s, each jittered down by at most half.
    assert time.monotonic() - started >= 0.15


async def test_slow_deployer_times_out_per_attempt(
    start_gateway: StartGateway, deployer: Deployer, http: aiohttp.ClientSession
) -> None:
    deployer.delay = 1.0
    gateway = await start(start_gateway, deployer.url, timeout=0.2, retries=1)
    started = time.monotonic()
    status, body = await post(http, gateway)
    assert status == 502
    assert "TimeoutError" in body["error"]
    assert len(deployer.seen) == 2
    assert time.monotonic() - started < 1.5


def test_job_body_and_signature() -> None:
    job = Job.of({"id": "d-1", "app": "my-app", "git_ref": "ü"})
    assert job.body == '{"id":"d-1","app":"my-app","git_ref":"ü"}'.encode()
    expected = hmac.new(b"k", job.body, hashlib.sha256).hexdigest()
    assert signature("k", job.body) == f"sha256={expected}"


def config_with(deployments: dict[str, Any], storage: dict[str, Any] | None = None) -> Config:
    return config_from_dict(
        {
            "signing": {"secret_keys": ["x" * 16]},
            "server": {"public_url": "http://127.0.0.1:8080"},
            "storage": {"bucket": "sources", **(storage or {})},
            "deployments": deployments,
        },
        env={},
    )


@pytest.mark.parametrize(
    ("forward", "path"),
    [
        ({"type": "http", "secret": "s"}, "deployments.forward.url"),
        ({"type": "http", "url": "https://d.example/jobs"}, "deployments.forward.secret"),
        ({"type": "http", "url": "d.example/jobs", "secret": "s"}, "deployments.forward.url"),
        ({"type": "sqs", "queue": None}, "deployments.forward.queue"),
        ({"timeout": 0}, "deployments.forward.timeout"),
        ({"retries": -1}, "deployments.forward.retries"),
        ({"backoff_seconds": -1}, "deployments.forward.backoff_seconds"),
    ],
)
def test_forward_config_errors_name_the_key(forward: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_with({"forward": forward})
    assert exc.value.path == path


def test_fetch_url_ttl_is_bounded_by_s3s_limit() -> None:
    with pytest.raises(ConfigError) as exc:
        config_with({"fetch_url_ttl_seconds": 8 * 24 * 3600})
    assert exc.value.path == "deployments.fetch_url_ttl_seconds"


def test_sqs_endpoint_follows_embedded_storage_only() -> None:
    embedded = config_with({}, {"embedded": True, "endpoint_url": "http://127.0.0.1:5000"})
    assert sqs_client_kwargs(embedded)["endpoint_url"] == "http://127.0.0.1:5000"
    minio = config_with({}, {"endpoint_url": "http://minio:9000"})
    assert "endpoint_url" not in sqs_client_kwargs(minio)
    explicit = config_with(
        {"forward": {"endpoint_url": "http://sqs.local:9324", "region": "eu-west-1"}},
        {"embedded": True, "endpoint_url": "http://127.0.0.1:5000"},
    )
    kwargs = sqs_client_kwargs(explicit)
    assert (kwargs["endpoint_url"], kwargs["region_name"]) == ("http://sqs.local:9324", "eu-west-1")
