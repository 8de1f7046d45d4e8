"""POST /v1/apps/{app}/deployments through a real gateway, forwarding to SQS on the moto server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import re
import socket
import tarfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.config import load_config
from gateway.server.adapters.embedded import embedded_services
from gateway.server.app import create_app
from gateway.server.domain.deployments.request import OwnUrl, match_own_url

from .helpers import LIMITED_TOKEN, TOKEN, Gateway, StartGateway, make_queue, tampered
from .ports import free_port

ARCHIVE = gzip.compress(b"app source " * 1000)
PUBLIC_URL = "https://archives.example.com/app-v2.tar.gz"
DNS = {
    "archives.example.com": ["93.184.216.34"],
    "intranet.example.com": ["10.20.30.40"],
    "partner.internal": ["10.0.0.5"],
}
DEPLOYMENT_KEYS = {
    "id",
    "app_id",
    "created_at",
    "finished_at",
    "status",
    "git_ref",
    "type",
    "source_url",
    "postdeploy_hook",
    "pusher",
    "duration",
    "links",
}


async def fake_dns(host: str) -> Sequence[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


def receive(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        AttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])
    return messages


def sqs_forward(moto_endpoint: str, queue: str, **extra: Any) -> dict[str, Any]:
    forward = {"type": "sqs", "queue": queue, "endpoint_url": moto_endpoint, "retries": 0}
    return {"deployments": {"forward": {**forward, **extra}}}


@pytest.fixture
async def gw(start_gateway: StartGateway, moto_endpoint: str, queue_url: str) -> Gateway:
    """A gateway forwarding to a fresh standard queue (given by name), with the fake DNS."""
    name = queue_url.rsplit("/", 1)[-1]
    overrides = sqs_forward(moto_endpoint, name)
    overrides["deployments"]["allowed_hosts"] = ["partner.internal"]
    return await start_gateway(overrides, resolver=fake_dns)


async def deploy(
    http: aiohttp.ClientSession,
    gateway: Gateway,
    body: Any,
    *,
    app: str = "my-app",
    token: str | None = TOKEN,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body).encode()
    url = f"{gateway.url}/v1/apps/{app}/deployments"
    async with http.post(url, data=data, headers=headers) as resp:
        text = await resp.text()
        assert resp.headers["Content-Type"].startswith("application/json"), text
        return resp.status, json.loads(text), resp


async def uploaded_source(
    http: aiohttp.ClientSession, gateway: Gateway, data: bytes = ARCHIVE
) -> dict[str, Any]:
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=data) as resp:
        assert resp.status == 200, await resp.text()
    return source


# --- the happy paths ------------------------------------------------------------------------------


async def test_own_source_is_deployed_through_the_queue(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    source = await uploaded_source(http, gw)
    body = {"deployment": {"git_ref": "v0.0.2", "download_url": source["download_url"]}}
    status, answer, _ = await deploy(http, gw, body)
    assert status == 201, answer
    deployment = answer["deployment"]
    assert set(deployment) == DEPLOYMENT_KEYS
    assert deployment["app_id"] == "my-app"
    assert deployment["status"] == "queued"
    assert deployment["type"] == "archive"
    assert deployment["finished_at"] is None
    assert deployment["git_ref"] == "v0.0.2"
    assert deployment["source_url"] == source["download_url"]
    uuid.UUID(deployment["id"])

    (message,) = receive(sqs, queue_url)
    job = json.loads(message["Body"])
    assert job == {
        "id": deployment["id"],
        "app": "my-app",
        "git_ref": "v0.0.2",
        "download_url": source["download_url"],
        "created_at": deployment["created_at"],
        "requested_by": "ci",
        "source_id": source["id"],
        "size": len(ARCHIVE),
        "sha256": hashlib.sha256(ARCHIVE).hexdigest(),
        "fetch_url": job["fetch_url"],
        "events_url": job["events_url"],
    }
    assert job["events_url"].startswith(
        f"{gw.url}/v1/apps/my-app/deployments/{deployment['id']}/events?token="
    )
    # The presigned URL fetches the archive straight from S3, for an hour by default.
    assert parse_qs(urlsplit(job["fetch_url"]).query)["X-Amz-Expires"] == ["3600"]
    async with http.get(job["fetch_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == ARCHIVE


async def test_foreign_url_job_has_no_source_fields(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    status, answer, _ = await deploy(http, gw, {"deployment": {"download_url": PUBLIC_URL}})
    assert status == 201, answer
    assert answer["deployment"]["git_ref"] is None  # git_ref is optional
    (message,) = receive(sqs, queue_url)
    job = json.loads(message["Body"])
    assert set(job) == {
        "id",
        "app",
        "git_ref",
        "download_url",
        "created_at",
        "requested_by",
        "events_url",
    }
    assert job["download_url"] == PUBLIC_URL
    assert job["git_ref"] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"source_url": PUBLIC_URL},
        {"source_url": PUBLIC_URL, "download_url": PUBLIC_URL},
        {"download_url": PUBLIC_URL, "git_ref": "", "extra": "ignored"},
    ],
    ids=["source_url", "both-equal", "empty-git-ref"],
)
async def test_accepted_shapes(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str, fields: dict[str, Any]
) -> None:
    status, answer, _ = await deploy(http, gw, {"deployment": fields})
    assert status == 201, answer
    assert answer["deployment"]["source_url"] == PUBLIC_URL
    (message,) = receive(sqs, queue_url)
    assert json.loads(message["Body"])["download_url"] == PUBLIC_URL


async def test_allowed_host_may_be_private(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    url = "https://partner.internal/a.tgz"
    status, answer, _ = await deploy(http, gw, {"deployment": {"download_url": url}})
    assert status == 201, answer
    assert len(receive(sqs, queue_url)) == 1


async def test_fifo_queue_gets_group_and_deduplication_id(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, sqs: Any
) -> None:
    url = make_queue(sqs, fifo=True)
    try:
        # Given by URL this time, rather than by name.
        gateway = await start_gateway(sqs_forward(moto_endpoint, url), resolver=fake_dns)
        body = {"deployment": {"download_url": PUBLIC_URL, "git_ref": "main"}}
        status, answer, _ = await deploy(http, gateway, body, app="fifo-app")
        assert status == 201, answer
        (message,) = receive(sqs, url)
        assert message["Attributes"]["MessageGroupId"] == "fifo-app"
        assert message["Attributes"]["MessageDeduplicationId"] == answer["deployment"]["id"]
        assert json.loads(message["Body"])["id"] == answer["deployment"]["id"]
    finally:
        sqs.delete_queue(QueueUrl=url)


async def test_fetch_url_lifetime_is_configured(
    start_gateway: StartGateway,
    moto_endpoint: str,
    http: aiohttp.ClientSession,
    sqs: Any,
    queue_url: str,
) -> None:
    overrides = sqs_forward(moto_endpoint, queue_url)
    overrides["deployments"]["fetch_url_ttl_seconds"] = 120
    gateway = await start_gateway(overrides)
    source = await uploaded_source(http, gateway)
    status, _, _ = await deploy(
        http, gateway, {"deployment": {"source_url": source["download_url"]}}
    )
    assert status == 201
    job = json.loads(receive(sqs, queue_url)[0]["Body"])
    assert parse_qs(urlsplit(job["fetch_url"]).query)["X-Amz-Expires"] == ["120"]


# --- authentication and authorisation -------------------------------------------------------------


async def test_no_token_is_401(gw: Gateway, http: aiohttp.ClientSession) -> None:
    body = {"deployment": {"download_url": PUBLIC_URL}}
    status, answer, resp = await deploy(http, gw, body, token=None)
    assert status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in answer
    status, _, _ = await deploy(http, gw, body, token="wrong-token-123")
    assert status == 401


async def test_token_may_deploy_only_its_apps(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    body = {"deployment": {"download_url": PUBLIC_URL}}
    status, answer, _ = await deploy(http, gw, body, app="other-app", token=LIMITED_TOKEN)
    assert status == 403
    assert answer["code"] == "forbidden"
    assert receive(sqs, queue_url) == []
    status, answer, _ = await deploy(http, gw, body, app="my-app", token=LIMITED_TOKEN)
    assert status == 201, answer
    assert json.loads(receive(sqs, queue_url)[0]["Body"])["requested_by"] == "limited"


# --- request validation ---------------------------------------------------------------------------

LONG_URL = "https://archives.example.com/" + "a" * 2020
VALIDATION_CASES: list[tuple[str, Any, dict[str, list[str]]]] = [
    ("my-app", {}, {"deployment": ["is required"]}),
    ("my-app", {"deployment": None}, {"deployment": ["is required"]}),
    ("my-app", {"deployment": "v1"}, {"deployment": ["must be an object"]}),
    ("my-app", {"deployment": []}, {"deployment": ["must be an object"]}),
    ("my-app", {"deployment": {"git_ref": "v1"}}, {"download_url": ["is required"]}),
    ("my-app", {"deployment": {"download_url": 5}}, {"download_url": ["must be a string"]}),
    (
        "my-app",
        {"deployment": {"download_url": PUBLIC_URL, "source_url": PUBLIC_URL + "?x"}},
        {"source_url": ["must be the same as download_url when both are given"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "app.tar.gz"}},
        {"download_url": ["must be an absolute https URL"]},
    ),
    (
        "my-app",
        {"deployment": {"source_url": "ftp://archives.example.com/a.tgz"}},
        {"source_url": ["must be an absolute https URL"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "http://archives.example.com/a.tgz"}},
        {"download_url": ["must use https"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "https://me:pw@archives.example.com/a.tgz"}},
        {"download_url": ["must not contain a user name or password"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": LONG_URL}},
        {"download_url": ["must be at most 2048 characters"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "https://169.254.169.254/latest/meta-data/"}},
        {"download_url": ["host is a link-local address"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "https://intranet.example.com/a.tgz"}},
        {"download_url": ["host resolves to a private address"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "https://nowhere.example.com/a.tgz"}},
        {"download_url": ["host could not be resolved"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": "https://0x7f.1/a.tgz"}},
        {"download_url": ["host is a non-standard spelling of an IP address"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": PUBLIC_URL, "git_ref": "-rf"}},
        {"git_ref": ["must not start with '-'"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": PUBLIC_URL, "git_ref": "a" * 256}},
        {"git_ref": ["must be at most 255 characters"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": PUBLIC_URL, "git_ref": "v1\nv2"}},
        {"git_ref": ["must contain printable characters only"]},
    ),
    (
        "my-app",
        {"deployment": {"download_url": PUBLIC_URL, "git_ref": 2}},
        {"git_ref": ["must be a string"]},
    ),
    ("ab", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48 lowercase"]}),
    ("My-App", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    ("my_app", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    ("a" * 49, {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    # Would reach a deployer's command line looking like an option.
    ("-my-app", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    ("my-app-", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    ("1-app", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    ("---", {"deployment": {"download_url": PUBLIC_URL}}, {"app": ["must be 3 to 48"]}),
    (
        "Bad.App",
        {"deployment": {"git_ref": "-x", "download_url": "http://u:p@archives.example.com/"}},
        {
            "app": ["must be 3 to 48"],
            "git_ref": ["must not start with '-'"],
            "download_url": ["must not contain a user name or password"],
        },
    ),
]


@pytest.mark.parametrize(("app", "body", "expected"), VALIDATION_CASES)
async def test_validation_names_every_bad_field(
    gw: Gateway,
    http: aiohttp.ClientSession,
    sqs: Any,
    queue_url: str,
    app: str,
    body: Any,
    expected: dict[str, list[str]],
) -> None:
    status, answer, _ = await deploy(http, gw, body, app=app)
    assert status == 422, answer
    assert set(answer) == {"errors"}
    assert set(answer["errors"]) == set(expected)
    for field, messages in expected.items():
        assert len(answer["errors"][field]) == len(messages), answer
        for got, prefix in zip(answer["errors"][field], messages, strict=True):
            assert got.startswith(prefix), answer
    assert receive(sqs, queue_url) == []


async def test_valid_shortest_and_longest_app_names(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    for app in ("a-1", "a" * 48, "a--b", "app" + "0" * 45):
        status, answer, _ = await deploy(
            http, gw, {"deployment": {"download_url": PUBLIC_URL}}, app=app
        )
        assert status == 201, answer


async def test_malformed_json_is_400_and_other_types_415(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await deploy(http, gw, None, raw=b'{"deployment": ')
    assert (status, answer["code"]) == (400, "invalid_json")
    status, answer, _ = await deploy(http, gw, None, raw=b"[1]")
    assert status == 400
    body = json.dumps({"deployment": {"download_url": PUBLIC_URL}}).encode()
    status, answer, _ = await deploy(http, gw, None, raw=body, content_type="text/plain")
    assert status == 415
    status, answer, _ = await deploy(http, gw, None, raw=b"")
    assert (status, answer) == (422, {"errors": {"deployment": ["is required"]}})


# --- the gateway's own source URLs ----------------------------------------------------------------


async def own_url_errors(gw: Gateway, http: aiohttp.ClientSession, url: str) -> list[str]:
    status, answer, _ = await deploy(http, gw, {"deployment": {"download_url": url}})
    assert status == 422, answer
    errors: list[str] = answer["errors"]["download_url"]
    return errors


async def test_own_url_with_expired_token(gw: Gateway, http: aiohttp.ClientSession) -> None:
    source = await uploaded_source(http, gw)
    gw.clock.advance(gw.config.sources.ttl_seconds + 1)
    (error,) = await own_url_errors(gw, http, source["download_url"])
    assert "expired" in error


async def test_own_url_with_bad_tokens(gw: Gateway, http: aiohttp.ClientSession) -> None:
    source = await uploaded_source(http, gw)
    other = await gw.create_source(http)
    download = source["download_url"]
    base, token = download.split("?token=")
    cases = [
        source["upload_url"],  # an upload token does not download
        f"{base}?token={tampered(token)}",  # tampered
        f"{base}?token={other['download_url'].split('?token=')[1]}",  # another source's token
    ]
    for url in cases:
        assert await own_url_errors(gw, http, url) == ["invalid download token"], url
    assert await own_url_errors(gw, http, base) == ["download URL has no token"]


async def test_own_url_not_uploaded_or_not_gzip(gw: Gateway, http: aiohttp.ClientSession) -> None:
    fresh = await gw.create_source(http)
    assert await own_url_errors(gw, http, fresh["download_url"]) == ["source has not been uploaded"]
    for data in (b"PK\x03\x04 a zip file", b"\x1f", b""):
        source = await uploaded_source(http, gw, data)
        assert await own_url_errors(gw, http, source["download_url"]) == ["archive is not gzip"]


async def test_other_paths_of_the_gateway_are_refused(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    for path in ("/healthz", "/v1/sources", "/v1/sources/not-a-uuid?token=x"):
        assert await own_url_errors(gw, http, gw.url + path) == [
            "points at this gateway but is not a source's download URL"
        ]


async def test_loopback_that_is_not_the_gateway_is_refused(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    # The same host on another port is not the gateway: the SSRF rules apply (http, loopback).
    source = await uploaded_source(http, gw)
    elsewhere = source["download_url"].replace(gw.url, f"http://127.0.0.1:{free_port()}")
    assert await own_url_errors(gw, http, elsewhere) == [
        "must use https",
        "host is a loopback address",
    ]


# --- forwarding failures and bookkeeping ----------------------------------------------------------


async def test_missing_queue_is_502(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, sqs: Any
) -> None:
    # Gone after the gateway's background check saw it (once seen missing, it is a 503 before
    # anything is sent: test_health.py).
    queue_url = make_queue(sqs)
    overrides = sqs_forward(moto_endpoint, queue_url.rsplit("/", 1)[1])
    gateway = await start_gateway(overrides, resolver=fake_dns)
    sqs.delete_queue(QueueUrl=queue_url)
    status, answer, _ = await deploy(http, gateway, {"deployment": {"download_url": PUBLIC_URL}})
    assert (status, answer) == (502, {"error": "the deployment queue does not exist"})


async def test_unreachable_queue_is_503(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    overrides = sqs_forward(down, f"{down}/123456789012/deployments", timeout=1)
    gateway = await start_gateway(overrides, resolver=fake_dns)
    status, answer, resp = await deploy(http, gateway, {"deployment": {"download_url": PUBLIC_URL}})
    assert status == 503, answer
    # Known from the background check: answered at once, without the forwarder's retries.
    assert answer == {
        "error": "deployments cannot be forwarded now: the deployer is unavailable "
        "(the deployment queue is unreachable); retry later"
    }
    assert resp.headers["Retry-After"]


def deployments_metric(gateway: Gateway, outcome: str) -> float:
    from gateway.server import keys

    value = gateway.app[keys.METRICS].registry.get_sample_value(
        "gateway_deployments_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_outcomes_are_counted(
    start_gateway: StartGateway, moto_endpoint: str, gw: Gateway, http: aiohttp.ClientSession
) -> None:
    good = {"deployment": {"download_url": PUBLIC_URL}}
    await deploy(http, gw, good)
    await deploy(http, gw, {"deployment": {"download_url": "https://127.0.0.1/"}})
    await deploy(http, gw, {})
    assert deployments_metric(gw, "forwarded") == 1
    assert deployments_metric(gw, "rejected") == 2
    broken = await start_gateway(sqs_forward(moto_endpoint, "no-such-queue"), resolver=fake_dns)
    await deploy(http, broken, good)
    assert deployments_metric(broken, "failed") == 1


async def test_tokens_never_reach_the_logs(
    gw: Gateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    source = await uploaded_source(http, gw)
    token = source["download_url"].split("token=")[1]
    status, _, _ = await deploy(http, gw, {"deployment": {"download_url": source["download_url"]}})
    assert status == 201
    await deploy(http, gw, {"deployment": {"download_url": tampered(source["download_url"])}})
    records = [r for r in caplog.records if r.name.startswith("gateway")]
    assert any("forwarded" in r.getMessage() for r in records)
    assert any("rejected" in r.getMessage() for r in records)
    for record in records:
        text = record.getMessage() + repr(record.__dict__)
        assert token not in text
        assert token[:-3] not in text
        assert "token=" not in text


# --- the local default: config.example.yaml on the embedded moto --------------------------------


def tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


async def test_example_config_deploys_an_upload_to_success(
    aiohttp_server: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """What the README's walk-through does against `make run`: upload, deploy, and watch the
    local stand-in deployer take the job from the embedded queue and report success."""
    example = Path(__file__).parent.parent / "config.example.yaml"
    config = load_config(example, env={})
    assert config.deployments.demo_deployer
    port = free_port()
    server = dataclasses.replace(config.server, port=port, public_url=f"http://127.0.0.1:{port}")
    archive = tar_gz({"app-1.0/main.py": b"print('hi')\n", "app-1.0/README": b"hello\n"})
    with embedded_services(dataclasses.replace(config, server=server)) as embedded:
        await aiohttp_server(create_app(embedded), port=port)
        api = f"http://127.0.0.1:{port}"
        # curl -u ":dev-token", as in the README.
        auth = {"Authorization": "Basic " + base64.b64encode(b":dev-token").decode()}
        async with http.post(f"{api}/v1/sources", data=b"", headers=auth) as resp:
            assert resp.status == 201
            source = await resp.json()
        async with http.put(source["upload_url"], data=archive) as resp:
            assert resp.status == 200
        body = {"deployment": {"git_ref": "v0.0.2", "download_url": source["download_url"]}}
        url = f"{api}/v1/apps/my-app/deployments"
        async with http.post(url, json=body, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            deployment = (await resp.json())["deployment"]
        assert deployment["status"] == "queued"

        # curl -N .../events: the stream ends after the final status.
        events_url = f"{url}/{deployment['id']}/events"
        async with http.get(events_url, headers=auth) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            stream = (await asyncio.wait_for(resp.read(), 30)).decode()
        statuses = re.findall(r'"status":"([a-z-]+)"', stream)
        assert statuses == ["building", "success"], stream
        async with http.get(f"{url}/{deployment['id']}/output", headers=auth) as resp:
            output = await resp.text()
        assert "sha256" in output and "verified" in output
        assert "2 entries, 2 files" in output
        assert "root directory: app-1.0/" in output
    # It said at start that it is a local stand-in, not a deployer.
    assert any(
        "local stand-in" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )


SOURCE_ID = "3b694aea-c606-42bd-85b4-34f8dbc82a62"


@pytest.mark.parametrize(
    ("url", "public_url", "expected"),
    [
        (f"http://127.0.0.1:8080/v1/sources/{SOURCE_ID}?token=t", "http://127.0.0.1:8080", "t"),
        (
            f"https://GW.example.com:443/v1/sources/{SOURCE_ID}?token=t",
            "https://gw.example.com/",
            "t",
        ),
        (
            f"https://gw.example.com/api/v1/sources/{SOURCE_ID}?a=1&token=t",
            "https://gw.example.com/api",
            "t",
        ),
        (f"https://gw.example.com/v1/sources/{SOURCE_ID}", "https://gw.example.com", None),
        (
            f"https://gw.example.com/v1/sources/{SOURCE_ID}/x?token=t",
            "https://gw.example.com",
            "path",
        ),
        ("https://gw.example.com/healthz", "https://gw.example.com", "path"),
        (
            f"https://gw.example.com/v1/sources/{SOURCE_ID}?token=t",
            "https://gw.example.com/api",
            "path",
        ),
        (
            f"http://gw.example.com/v1/sources/{SOURCE_ID}?token=t",
            "https://gw.example.com",
            "foreign",
        ),
        (
            f"https://gw.example.com:8443/v1/sources/{SOURCE_ID}",
            "https://gw.example.com",
            "foreign",
        ),
        (f"https://other.example.com/v1/sources/{SOURCE_ID}", "https://gw.example.com", "foreign"),
    ],
)
def test_match_own_url(url: str, public_url: str, expected: str | None) -> None:
    own = match_own_url(url, public_url)
    if expected == "foreign":
        assert own is None
    elif expected == "path":
        assert own == OwnUrl(None, None)
    else:
        assert own == OwnUrl(SOURCE_ID, expected)


async def test_other_methods_are_405(gw: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.delete(f"{gw.url}/v1/apps/my-app/deployments", headers=gw.auth) as resp:
        assert resp.status == 405
        assert await resp.json() == {"error": "method not allowed"}
