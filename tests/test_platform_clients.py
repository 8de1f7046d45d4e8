"""The deployments endpoints driven the way the platform's own clients call them: a base URL ending
in ``/v1/`` joined with relative paths, ``Authorization: Bearer``, the platform's request body
(``source_url``, ``git_ref``, ``postdeploy_hook``), wrapped answers, the pagination meta, and the
output read as text."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import aiohttp
import boto3
import pytest

from .helpers import MOTO_CREDENTIALS, TOKEN, Gateway, StartGateway

# What the platform's Go client sends on every call.
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": "go-platform-client/7.0",
}
# The fields the platform's deployment struct reads, and their JSON types.
DEPLOYMENT_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "app_id": (str,),
    "created_at": (str,),
    "finished_at": (str, type(None)),
    "status": (str,),
    "git_ref": (str, type(None)),
    "type": (str,),
    "source_url": (str,),
    "postdeploy_hook": (str, type(None)),
    "pusher": (dict,),
    "links": (dict,),
}


@pytest.fixture
def queue(moto_endpoint: str) -> Iterator[tuple[Any, str]]:
    sqs = boto3.client(
        "sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )
    url: str = sqs.create_queue(QueueName=f"deploy-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    try:
        yield sqs, url
    finally:
        sqs.delete_queue(QueueUrl=url)


def check_deployment(deployment: dict[str, Any]) -> None:
    for name, types in DEPLOYMENT_FIELDS.items():
        assert isinstance(deployment[name], types), (name, deployment[name])


async def test_the_platforms_client_calls(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue: tuple[Any, str],
    http: aiohttp.ClientSession,
) -> None:
    sqs, queue_url = queue
    forward = {"type": "sqs", "queue": queue_url, "endpoint_url": moto_endpoint, "retries": 0}
    gateway: Gateway = await start_gateway({"deployments": {"forward": forward}})
    base = f"{gateway.url}/v1/"

    async with http.post(urljoin(base, "sources"), headers=HEADERS) as resp:
        assert resp.status == 201
        source = (await resp.json())["source"]
    async with http.put(source["upload_url"], data=gzip.compress(b"x" * 100)) as resp:
        assert resp.status == 200

    body = {
        "deployment": {
            "source_url": source["download_url"],
            "git_ref": "0a1b2c3",
            "postdeploy_hook": "bundle exec rake db:migrate",
        }
    }
    async with http.post(
        urljoin(base, "apps/my-app/deployments"), data=json.dumps(body), headers=HEADERS
    ) as resp:
        assert resp.status == 201
        created = (await resp.json())["deployment"]
    check_deployment(created)
    assert created["status"] == "queued"
    assert created["postdeploy_hook"] == "bundle exec rake db:migrate"
    assert created["source_url"] == source["download_url"]
    (message,) = sqs.receive_message(QueueUrl=queue_url)["Messages"]
    job = json.loads(message["Body"])
    assert job["postdeploy_hook"] == "bundle exec rake db:migrate"
    async with http.post(
        job["events_url"], json={"id": 1, "type": "log", "content": "-----> Building"}
    ) as resp:
        assert resp.status == 200

    path = f"apps/my-app/deployments/{created['id']}"
    async with http.get(urljoin(base, path), headers=HEADERS) as resp:
        assert resp.status == 200
        shown = (await resp.json())["deployment"]
    check_deployment(shown)
    assert shown["id"] == created["id"]

    async with http.get(
        urljoin(base, "apps/my-app/deployments"),
        params={"page": "1", "per_page": "20"},
        headers=HEADERS,
    ) as resp:
        assert resp.status == 200
        listed = await resp.json()
    assert [d["id"] for d in listed["deployments"]] == [created["id"]]
    pagination = listed["meta"]["pagination"]
    assert pagination == {
        "current_page": 1,
        "prev_page": None,
        "next_page": None,
        "total_pages": 1,
        "total_count": 1,
    }

    # The output link, as the clients follow it.
    async with http.get(shown["links"]["output"], headers=HEADERS) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "-----> Building\n"

    async with http.get(
        urljoin(base, f"apps/my-app/deployments/{uuid.uuid4()}"), headers=HEADERS
    ) as resp:
        assert resp.status == 404
        assert await resp.json() == {"resource": "deployment", "error": "not found"}


async def test_the_deployment_object_as_the_go_client_decodes_it(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue: tuple[Any, str],
    http: aiohttp.ClientSession,
) -> None:
    """What the CLI dereferences unchecked is there: ``pusher`` with its username, an absolute
    ``links.output`` that answers text to ``Accept: application/json``, ``duration`` once
    finished; ``git_ref`` null is accepted and kept null; the CLI's x-gzip upload keeps its type."""
    sqs, queue_url = queue
    forward = {"type": "sqs", "queue": queue_url, "endpoint_url": moto_endpoint, "retries": 0}
    tokens = [{"name": "ci", "token": TOKEN, "email": "ci@example.com"}]
    gateway = await start_gateway({"deployments": {"forward": forward}, "auth": {"tokens": tokens}})
    base = f"{gateway.url}/v1/"
    async with http.post(urljoin(base, "sources"), headers=HEADERS, data="{}") as resp:
        source = (await resp.json())["source"]
    archive = gzip.compress(b"y" * 64)
    put_headers = {"Content-Type": "application/x-gzip", "Content-Length": str(len(archive))}
    async with http.put(source["upload_url"], data=archive, headers=put_headers) as resp:
        assert resp.status == 200
    async with http.get(source["download_url"]) as resp:
        assert resp.headers["Content-Type"] == "application/x-gzip"

    body = {"deployment": {"git_ref": None, "source_url": source["download_url"]}}
    async with http.post(
        urljoin(base, "apps/my-app/deployments"), data=json.dumps(body), headers=HEADERS
    ) as resp:
        assert resp.status == 201
        created = (await resp.json())["deployment"]
    assert created["git_ref"] is None
    assert created["pusher"] == {
        "id": "ci",
        "username": "ci",
        "email": "ci@example.com",
        "name": "ci",
    }
    assert created["duration"] is None
    output = created["links"]["output"]
    assert output.startswith(gateway.url + "/")
    async with http.get(output, headers=HEADERS) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == ""

    (message,) = sqs.receive_message(QueueUrl=queue_url)["Messages"]
    events_url = json.loads(message["Body"])["events_url"]
    gateway.clock.advance(42)  # the deployment takes 42 s on the gateway's clock
    for event in (
        {"id": 1, "type": "log", "content": "done"},
        {"id": 2, "type": "status", "status": "success"},
    ):
        async with http.post(events_url, json=event) as resp:
            assert resp.status == 200
    async with http.get(urljoin(base, "apps/my-app/deployments"), headers=HEADERS) as resp:
        (listed,) = (await resp.json())["deployments"]
    assert listed["status"] == "success"
    # The gateway's clock is real time plus the 42 s: on a loaded machine the requests in
    # between take a second or two of their own.
    assert 42 <= listed["duration"] <= 45
    assert listed["pusher"]["username"] == "ci"
    assert listed["created_at"] < listed["finished_at"]

    missing = output.replace(created["id"], str(uuid.uuid4()))
    async with http.get(missing, headers=HEADERS) as resp:
        assert resp.status == 404
        assert await resp.json() == {"resource": "deployment", "error": "not found"}
