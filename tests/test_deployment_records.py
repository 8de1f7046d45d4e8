"""Deployments you can follow, through real gateways on the moto server: the record, the events
a deployer posts, the output, the list, and the live stream across two instances."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.server.http.deployments import records as deployment_records

from .helpers import LIMITED_TOKEN, TOKEN, Gateway, ServeGateway, StartGateway, make_queue, tampered

ARCHIVE = gzip.compress(b"app source " * 100)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def overrides(moto_endpoint: str, queue: str, **deployments: Any) -> dict[str, Any]:
    forward = {"type": "sqs", "queue": queue, "endpoint_url": moto_endpoint, "retries": 0}
    return {"deployments": {"forward": forward, "poll_interval": 0.1, **deployments}}


@pytest.fixture
async def gw(start_gateway: StartGateway, moto_endpoint: str, queue_url: str) -> Gateway:
    return await start_gateway(overrides(moto_endpoint, queue_url))


async def deploy(
    http: aiohttp.ClientSession, gateway: Gateway, sqs: Any, queue_url: str, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upload an archive and deploy it to my-app: the answer's deployment and the job."""
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=ARCHIVE) as resp:
        assert resp.status == 200
    body = {"deployment": {"source_url": source["download_url"], **extra}}
    async with http.post(
        f"{gateway.url}/v1/apps/my-app/deployments", json=body, headers=AUTH
    ) as resp:
        assert resp.status == 201, await resp.text()
        deployment: dict[str, Any] = (await resp.json())["deployment"]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    jobs = [json.loads(m["Body"]) for m in messages]
    (job,) = [j for j in jobs if j["id"] == deployment["id"]]
    return deployment, job


async def post_event(
    http: aiohttp.ClientSession, url: str, event: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=event) as resp:
        return resp.status, await resp.json()


def url_of(gateway: Gateway, deployment: dict[str, Any], tail: str = "") -> str:
    return f"{gateway.url}/v1/apps/my-app/deployments/{deployment['id']}{tail}"


async def get_json(http: aiohttp.ClientSession, url: str, token: str = TOKEN) -> tuple[int, Any]:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def test_the_record_is_the_answer_and_follows_the_deployer(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    deployment, job = await deploy(http, gw, sqs, queue_url, postdeploy_hook="rake db:migrate")
    assert deployment["status"] == "queued"
    assert deployment["postdeploy_hook"] == job["postdeploy_hook"] == "rake db:migrate"
    assert deployment["pusher"] == {"id": "ci", "username": "ci", "email": "", "name": "ci"}
    assert deployment["links"] == {"output": url_of(gw, deployment, "/output")}
    assert await get_json(http, url_of(gw, deployment)) == (200, {"deployment": deployment})

    events = job["events_url"]
    assert await post_event(http, events, {"id": 1, "type": "status", "status": "building"}) == (
        200,
        {"id": 1},
    )
    await post_event(http, events, {"id": 2, "type": "log", "content": "Step 1/2"})
    await post_event(http, events, {"id": 3, "type": "log", "content": "Step 2/2\n"})
    _, shown = await get_json(http, url_of(gw, deployment))
    assert shown["deployment"]["status"] == "building"
    assert shown["deployment"]["finished_at"] is None
    await post_event(http, events, {"id": 4, "type": "status", "status": "success"})
    _, shown = await get_json(http, url_of(gw, deployment))
    assert shown["deployment"]["status"] == "success"
    assert shown["deployment"]["finished_at"] is not None

    async with http.get(deployment["links"]["output"], headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await resp.text() == "Step 1/2\nStep 2/2\n"


async def test_event_rules(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    deployment, job = await deploy(http, gw, sqs, queue_url)
    events = job["events_url"]
    first = {"id": 1, "type": "log", "content": "hello"}
    assert (await post_event(http, events, first))[0] == 200
    assert await post_event(http, events, first) == (200, {"id": 1})  # a retry: stored once
    status, body = await post_event(http, events, {**first, "content": "other"})
    assert status == 409 and "error" in body
    status, body = await post_event(http, events, {"id": 2, "type": "status", "status": "done"})
    assert (status, set(body["errors"])) == (422, {"status"})
    status, body = await post_event(http, events, {"id": 2, "type": "progress"})
    assert (status, set(body["errors"])) == (422, {"type"})
    status, body = await post_event(http, events, {"id": 2, "type": "log", "content": "x" * 70000})
    assert (status, set(body["errors"])) == (422, {"content"})
    bad = {"Content-Type": "application/json"}
    async with http.post(events, data=b"{not json", headers=bad) as resp:
        assert resp.status == 400
    assert (await post_event(http, events, {"id": 2, "type": "status", "status": "build-error"}))[
        0
    ] == 200
    status, _ = await post_event(http, events, {"id": 3, "type": "status", "status": "building"})
    assert status == 409  # nothing after a final status
    assert (await post_event(http, events, {"id": 2, "type": "status", "status": "build-error"}))[
        0
    ] == 200  # but its retry is fine
    async with http.get(url_of(gw, deployment, "/output"), headers=AUTH) as resp:
        assert await resp.text() == "hello\n"


async def test_a_final_status_ends_the_deployment_whatever_its_number(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue_url: str,
    http: aiohttp.ClientSession,
    sqs: Any,
) -> None:
    one = await start_gateway(overrides(moto_endpoint, queue_url))
    two = await start_gateway(overrides(moto_endpoint, queue_url))
    deployment, job = await deploy(http, one, sqs, queue_url)
    on_two = job["events_url"].replace(one.url, two.url)
    building = {"id": 10, "type": "status", "status": "building"}
    assert (await post_event(http, job["events_url"], building))[0] == 200
    assert await post_event(http, on_two, {"id": 5, "type": "status", "status": "success"}) == (
        200,
        {"id": 5},
    )
    _, shown = await get_json(http, url_of(one, deployment))
    assert shown["deployment"]["status"] == "success"
    assert shown["deployment"]["finished_at"] is not None
    for late in ({"id": 12, "type": "status", "status": "pushing"}, {"id": 3, "type": "log"}):
        status, body = await post_event(http, job["events_url"], {"content": "x", **late})
        assert status == 409 and "finished" in body["error"]
    assert (await post_event(http, on_two, building))[0] == 200  # a retry of what was stored
    # The stream shows them as they were taken, and ends with the final status.
    async with http.get(url_of(two, deployment, "/events"), headers=AUTH) as resp:
        text = (await asyncio.wait_for(resp.read(), 5)).decode()
    assert text.startswith('id: 1\nevent: status\ndata: {"id":10,')
    assert 'id: 2\nevent: status\ndata: {"id":5,' in text and "id: 3" not in text


async def test_events_token_is_checked(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    one, job_one = await deploy(http, gw, sqs, queue_url)
    two, _ = await deploy(http, gw, sqs, queue_url)
    event = {"id": 1, "type": "status", "status": "building"}
    token = job_one["events_url"].split("token=", 1)[1]
    for url in (
        url_of(gw, one, "/events"),
        url_of(gw, one, "/events?token=garbage"),
        url_of(gw, two, f"/events?token={token}"),  # another deployment's token
        url_of(gw, one, f"/events?token={tampered(token)}"),
    ):
        status, body = await post_event(http, url, event)
        assert (status, body["code"]) == (403, "token_invalid")
    gw.clock.advance(86400 + 1)
    status, body = await post_event(http, job_one["events_url"], event)
    assert (status, body["code"]) == (403, "token_expired")


async def test_who_may_see_what(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    deployment, _ = await deploy(http, gw, sqs, queue_url)
    for tail in ("", "/output", "/events"):
        async with http.get(url_of(gw, deployment, tail)) as resp:
            assert resp.status == 401
        # The limited token may deploy my-app only: the same path under other-app is 403.
        other = url_of(gw, deployment, tail).replace("/my-app/", "/other-app/")
        status, body = await get_json(http, other, LIMITED_TOKEN)
        assert (status, body["code"]) == (403, "forbidden")
        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            url = f"{gw.url}/v1/apps/my-app/deployments/{missing}{tail}"
            assert await get_json(http, url) == (
                404,
                {"resource": "deployment", "error": "not found"},
            )
    status, body = await get_json(http, f"{gw.url}/v1/apps/other-app/deployments", LIMITED_TOKEN)
    assert status == 403


async def test_list_is_newest_first_with_the_platforms_pagination(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    ids = []
    for n in range(3):
        deployment, _ = await deploy(http, gw, sqs, queue_url)
        ids.append(deployment["id"])
        gw.clock.advance(1 + n)
    url = f"{gw.url}/v1/apps/my-app/deployments"
    status, body = await get_json(http, f"{url}?per_page=2")
    assert status == 200
    assert [d["id"] for d in body["deployments"]] == [ids[2], ids[1]]
    assert body["meta"] == {
        "pagination": {
            "current_page": 1,
            "prev_page": None,
            "next_page": 2,
            "total_pages": 2,
            "total_count": 3,
        }
    }
    status, body = await get_json(http, f"{url}?page=2&per_page=2")
    assert [d["id"] for d in body["deployments"]] == [ids[0]]
    assert body["meta"]["pagination"]["prev_page"] == 1
    assert body["meta"]["pagination"]["next_page"] is None
    status, body = await get_json(http, f"{url}?page=zero")
    assert status == 400
    status, body = await get_json(http, f"{gw.url}/v1/apps/quiet-app/deployments")
    assert body == {
        "deployments": [],
        "meta": {
            "pagination": {
                "current_page": 1,
                "prev_page": None,
                "next_page": None,
                "total_pages": 0,
                "total_count": 0,
            }
        },
    }


async def read_stream(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    async for raw in resp.content:
        yield raw.decode()


async def test_a_follower_on_one_instance_sees_events_posted_to_another(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue_url: str,
    http: aiohttp.ClientSession,
    sqs: Any,
) -> None:
    one = await start_gateway(overrides(moto_endpoint, queue_url))
    two = await start_gateway(overrides(moto_endpoint, queue_url))
    deployment, job = await deploy(http, one, sqs, queue_url)
    events_on_two = job["events_url"].replace(one.url, two.url)
    await post_event(http, events_on_two, {"id": 1, "type": "status", "status": "building"})

    lines: list[str] = []
    async with http.get(url_of(one, deployment, "/events"), headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        stream = read_stream(resp)
        while len(lines) < 4:
            lines.append(await asyncio.wait_for(anext(stream), 5))
        await post_event(http, events_on_two, {"id": 2, "type": "log", "content": "compiling"})
        await post_event(http, events_on_two, {"id": 3, "type": "status", "status": "success"})
        lines += [line async for line in stream]  # the stream ends after the final status
    text = "".join(lines)
    assert text.startswith(
        'id: 1\nevent: status\ndata: {"id":1,"type":"status","status":"building"'
    )
    assert 'id: 2\nevent: log\ndata: {"id":2,"type":"log","content":"compiling\\n"' in text
    assert text.count("event: status") == 2 and text.endswith("\n\n")

    # Last-Event-ID resumes after the events already seen, on any instance.
    headers = {**AUTH, "Last-Event-ID": "2"}
    async with http.get(url_of(two, deployment, "/events"), headers=headers) as resp:
        resumed = (await asyncio.wait_for(resp.read(), 5)).decode()
    assert resumed.startswith("id: 3\nevent: status\n")
    assert "id: 2" not in resumed


async def test_keep_alive_comments_while_nothing_happens(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr(deployment_records, "KEEPALIVE_SECONDS", 0.2)
    deployment, _ = await deploy(http, gw, sqs, queue_url)
    async with http.get(url_of(gw, deployment, "/events"), headers=AUTH) as resp:
        first = await asyncio.wait_for(resp.content.readline(), 5)
    assert first.startswith(b":")


async def test_streams_end_cleanly_when_the_instance_shuts_down(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    deployment, _ = await deploy(http, gw, sqs, queue_url)
    async with http.get(url_of(gw, deployment, "/events"), headers=AUTH) as resp:
        closing = asyncio.create_task(gw.server.close())
        text = (await asyncio.wait_for(resp.read(), 10)).decode()
        await asyncio.wait_for(closing, 10)
    assert "shutting down" in text and "Last-Event-ID" in text


async def test_forwarding_failure_aborts_the_record(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, sqs: Any
) -> None:
    # The queue is there when the gateway checks it, and gone when the deployment comes (a
    # missing queue the background check has seen is a 503 before anything is recorded).
    queue_url = make_queue(sqs)
    gateway = await start_gateway(overrides(moto_endpoint, queue_url.rsplit("/", 1)[1]))
    sqs.delete_queue(QueueUrl=queue_url)
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=ARCHIVE) as resp:
        assert resp.status == 200
    body = {"deployment": {"download_url": source["download_url"]}}
    async with http.post(
        f"{gateway.url}/v1/apps/my-app/deployments", json=body, headers=AUTH
    ) as resp:
        assert resp.status == 502
    _, listed = await get_json(http, f"{gateway.url}/v1/apps/my-app/deployments")
    (deployment,) = listed["deployments"]
    assert deployment["status"] == "aborted"
    assert deployment["finished_at"] is not None
    async with http.get(deployment["links"]["output"], headers=AUTH) as resp:
        assert "could not be handed to the deployer" in await resp.text()


@pytest.mark.parametrize("hook", ["x" * 1025, "line\nbreak", 42])
async def test_bad_postdeploy_hook_is_422(
    gw: Gateway, http: aiohttp.ClientSession, hook: Any
) -> None:
    body = {"deployment": {"source_url": "https://example.com/a.tgz", "postdeploy_hook": hook}}
    async with http.post(f"{gw.url}/v1/apps/my-app/deployments", json=body, headers=AUTH) as r:
        assert r.status == 422
        assert "postdeploy_hook" in (await r.json())["errors"]


async def test_the_events_token_never_reaches_a_log_line(
    gw: Gateway,
    http: aiohttp.ClientSession,
    sqs: Any,
    queue_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    deployment, job = await deploy(http, gw, sqs, queue_url)
    token = job["events_url"].split("token=", 1)[1]
    await post_event(http, job["events_url"], {"id": 1, "type": "status", "status": "success"})
    await post_event(http, job["events_url"] + "x", {"id": 2, "type": "log", "content": "x"})
    async with http.get(url_of(gw, deployment, "/events"), headers=AUTH) as resp:
        await resp.read()
    records = [r for r in caplog.records if r.name.startswith("gateway")]
    assert any("finished: success" in r.getMessage() for r in records)
    access = gw.access_lines()
    assert {line["route"] for line in access} >= {"/v1/apps/{app}/deployments/{id}/events"}
    for text in [r.getMessage() + repr(r.__dict__) for r in records] + [repr(access)]:
        assert token not in text
        assert token[:20] not in text


async def test_metrics_count_events_followers_and_final_statuses(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    _, job = await deploy(http, gw, sqs, queue_url)
    await post_event(http, job["events_url"], {"id": 1, "type": "log", "content": "a"})
    await post_event(http, job["events_url"], {"id": 1, "type": "log", "content": "a"})
    await post_event(http, job["events_url"], {"id": 2, "type": "status", "status": "hook-error"})
    async with http.get(f"{gw.url}/metrics") as resp:
        text = await resp.text()
    assert 'gateway_deployments_finished_total{status="hook-error"} 1.0' in text
    assert 'gateway_deployment_events_total{type="log"} 1.0' in text
    assert 'gateway_deployment_followers{transport="sse"} 0.0' in text


async def test_sigterm_ends_streams_cleanly_and_the_process_exits(
    serve_gateway: ServeGateway,
    moto_endpoint: str,
    queue_url: str,
    http: aiohttp.ClientSession,
) -> None:
    """A follower does not hold the shutdown for server.shutdown_timeout: its stream ends."""
    config = overrides(moto_endpoint, queue_url)
    served = serve_gateway({**config, "server": {"shutdown_timeout": 120}})
    async with http.post(f"{served.url}/v1/sources", headers=AUTH) as resp:
        source = await resp.json()
    async with http.put(source["upload_url"], data=ARCHIVE) as resp:
        assert resp.status == 200
    body = {"deployment": {"source_url": source["download_url"]}}
    async with http.post(f"{served.url}/v1/apps/my-app/deployments", json=body, headers=AUTH) as r:
        deployment = (await r.json())["deployment"]
    events = f"{served.url}/v1/apps/my-app/deployments/{deployment['id']}/events"
    async with http.get(events, headers=AUTH) as resp:
        assert resp.status == 200
        served.terminate()
        text = (await asyncio.wait_for(resp.read(), 30)).decode()
    assert text.endswith(": server shutting down; reconnect with Last-Event-ID\n\n")
    assert await asyncio.to_thread(served.wait, 30) == 0


async def test_odd_query_and_last_event_id_values_are_client_errors(
    gw: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    """Digits that str.isdigit() accepts but int() cannot read, and more digits than int()
    reads at all, are a 400 or read as past the end; never a 500."""
    deployment, job = await deploy(http, gw, sqs, queue_url)
    url = f"{gw.url}/v1/apps/my-app/deployments"
    for query in ("page=%C2%B2", "per_page=%C2%B2", "page=%EF%BC%91", "per_page=0", "page=-1"):
        status, body = await get_json(http, f"{url}?{query}")
        assert (status, body["code"]) == (400, "bad_request"), query
    many = "9" * 4400  # int() reads at most 4300 digits
    status, body = await get_json(http, f"{url}?page={many}")
    assert status == 200
    assert body["deployments"] == [] and body["meta"]["pagination"]["current_page"] == 10**9
    status, body = await get_json(http, f"{url}?per_page={many}")
    assert (status, len(body["deployments"])) == (200, 1)
    await post_event(http, job["events_url"], {"id": 1, "type": "status", "status": "success"})
    # A Last-Event-ID that is not a number starts over: the whole stream, then its end.
    headers = {**AUTH, "Last-Event-ID": "\u00b2"}
    async with http.get(url_of(gw, deployment, "/events"), headers=headers) as resp:
        assert resp.status == 200
        assert "event: status" in (await resp.read()).decode()
